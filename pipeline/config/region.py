"""Typed, frozen region config, loaded and validated once from ``configs/<region>.toml``.

Every error names the file and the dotted key at fault. Unknown keys are errors (a typo must
never be silently ignored). Relative paths in the config are resolved against the current
working directory (the project root when run through the Makefile).

Schema (see ``configs/helsinki.toml`` for a commented example)::

    [region]   name, zoom, tile_size, shard_zoom, bbox (W,S,E,N in EPSG:4326), data_dir, max_tiles
    [osm]      path, url, sha256 (optional when [labels] source = "vector")
    [labels]   source (osm|vector|none), paths, layer, crs, ... (optional; pipeline.config.labels)
    [masks]    ignore_ring_px
    [[classes]] name, id, kind (area|line), priority, tags, exclude, buffer_m, buffer_m_by_value, color
    [imagery]  source (raster|xyz|wms|tiles), paths, url, path, ... (optional)
    [synthetic] seed, size_m, ... (optional: a generated sample region)
    [split] [train] (pipeline.config.train), [predict] (pipeline.config.predict),
    [vectorize] (pipeline.config.vectorize), [compare] (pipeline.config.compare): optional stage sections

Every section is a typed attribute of :class:`RegionConfig` (``cfg.train: TrainSpec``), parsed
eagerly at load (the defaults when the TOML has no table), so a bad key fails the load and mypy
checks every use. The parsers live in small modules that import neither torch nor a geometry
library, and none of them imports this module: loading a config stays cheap.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.classes import ClassSpec, check_edge_values, parse_classes
from pipeline.config.compare import CompareSpec, parse_compare
from pipeline.config.imagery import ImageryConfig, parse_imagery
from pipeline.config.labels import LabelsConfig, parse_labels_config
from pipeline.config.predict import PredictSpec, parse_predict
from pipeline.config.section import Section
from pipeline.config.train import SplitSpec, TrainSpec, parse_split, parse_train
from pipeline.config.vectorize import VectorizeSpec, parse_vectorize
from pipeline.core.errors import ConfigError, MissingInputError
from pipeline.labels.tags import TagFilter

MAX_ZOOM = 24
#: default ``[region] max_tiles``: CoverTiles refuses to plan more tiles unless it is raised
MAX_TILES = 200_000
IGNORE_VALUE = 255
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

#: the optional stage sections: each is the :class:`RegionConfig` attribute of that name (its
#: defaults when the TOML has no table); adding one is a field below and a line in ``_sections``
SECTIONS: tuple[str, ...] = ("labels", "split", "train", "predict", "vectorize", "compare")


@dataclass(frozen=True)
class OsmSource:
    """Where the OSM extract comes from: a local ``.osm.pbf``, an optional download URL and the
    optional sha256 (hex) a download must have."""

    path: Path
    url: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a generated sample region (see ``pipeline.synthetic``). Sizes in metres.

    The town is a square of ``size_m`` centred on ``centre``; its orthophoto is in the UTM zone
    of ``centre`` at ``resolution_m``. Shares: of the buildings in the image, ``share_missing``
    are left out of OSM; ``share_demolished`` of all buildings are in OSM only; ``share_offset``
    of the mapped ones are shifted 1-2 m in OSM. Of the side streets (residential and service
    streets between two main streets), ``share_roads`` are left out of OSM and as many again are
    in OSM only (no longer in the image); at least one of each when the share is not 0."""

    seed: int = 42
    size_m: float = 700.0
    centre: tuple[float, float] = (13.40, 52.52)  # lon, lat (EPSG:4326)
    resolution_m: float = 0.3
    share_missing: float = 0.10
    share_demolished: float = 0.03
    share_offset: float = 0.03
    share_roads: float = 0.10
    tree_density: float = 1.0  # multiplies the number of trees (0: none)
    jpeg_quality: int = 90  # JPEG quality of the orthophoto COG (1..100)


@dataclass(frozen=True)
class MasksConfig:
    """Section ``[masks]``: ``ignore_ring_px`` pixels on both sides of area edges get the ignore
    value (255); 0 draws no ring. ``instances``: area classes also get an edge band of
    ``edge_px`` pixels inside each feature's outline (value ``255 - id``), which the model learns
    so that touching buildings are vectorised apart (:mod:`pipeline.vectors.instances`)."""

    ignore_ring_px: int = 0
    instances: bool = True
    edge_px: int = 2


@dataclass(frozen=True)
class RegionConfig:
    """A whole region config. ``bbox`` is (west, south, east, north) in EPSG:4326 degrees. The
    stage sections (:data:`SECTIONS`) hold their defaults when the TOML has no table."""

    path: Path
    name: str
    zoom: int
    tile_size: int
    shard_zoom: int
    data_dir: Path
    osm: OsmSource | None  # None only when labels come from vector files ([labels] source = "vector")
    classes: tuple[ClassSpec, ...]
    bbox: tuple[float, float, float, float] | None = None
    masks: MasksConfig = MasksConfig()
    imagery: ImageryConfig | None = None
    synthetic: SyntheticConfig | None = None
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    split: SplitSpec = field(default_factory=SplitSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    predict: PredictSpec = field(default_factory=PredictSpec)
    vectorize: VectorizeSpec = field(default_factory=VectorizeSpec)
    compare: CompareSpec = field(default_factory=CompareSpec)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    max_tiles: int = MAX_TILES  # a guard, not a setting of any output (in no stage digest)

    @property
    def labelled(self) -> bool:
        """False for a region without labels (``[labels] source = "none"``): imagery, a model from
        elsewhere, predictions and vectors; no masks, training, evaluation or comparison."""
        return self.labels.source != "none"

    @property
    def edge_ids(self) -> tuple[int, ...]:
        """Ids of the classes whose masks carry an edge band (:mod:`pipeline.vectors.instances`)."""
        from pipeline.vectors.instances import edge_classes

        return edge_classes(((c.id, c.kind) for c in self.classes), self.masks.instances)

    def class_by_name(self, name: str) -> ClassSpec:
        for c in self.classes:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no class named {name!r}")


# ---------------------------------------------------------------------------------------------
# Loading and validation


def load_config(path: str | Path) -> RegionConfig:
    """Read and validate a region config; raises ConfigError naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path}: config file not found (expected configs/<region>.toml)")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    top = Section(path, "", raw)
    region = Section(path, "region", top.take("region", dict))
    name = region.take("name", str)
    if not _NAME_RE.match(name):
        raise ConfigError(f"{region.key('name')} = {name!r}: use lower-case letters, digits, '-' or '_'")
    zoom = region.integer("zoom", lo=1, hi=MAX_ZOOM)
    tile_size = region.integer("tile_size", 256)
    if tile_size not in (256, 512):
        raise ConfigError(f"{region.key('tile_size')} = {tile_size}; use 256 or 512")
    shard_zoom = region.integer("shard_zoom", max(0, zoom - 6), lo=0, hi=zoom)
    bbox = _bbox(region, "bbox")
    data_dir_text = region.take("data_dir", str, f"data/{name}")
    if not data_dir_text.strip():
        raise ConfigError(f"{region.key('data_dir')} is empty; remove it (default data/{name}) or name a folder")
    data_dir = Path(data_dir_text)
    max_tiles = region.integer("max_tiles", MAX_TILES, lo=1)
    region.done()

    osm = None
    if "osm" in top.table:
        osm_sec = Section(path, "osm", top.take("osm", dict))
        osm = OsmSource(Path(osm_sec.take("path", str)), osm_sec.take("url", str, None),
                        osm_sec.take("sha256", str, None))
        if osm.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", osm.sha256):
            raise ConfigError(f"{osm_sec.key('sha256')} must be 64 hex digits (sha256sum of the extract)")
        if osm.url is not None and not re.match(r"^https?://", osm.url):
            raise ConfigError(f"{osm_sec.key('url')} must start with http:// or https://")
        osm_sec.done()

    masks_sec = Section(path, "masks", top.take("masks", dict, {}))
    masks = MasksConfig(ignore_ring_px=masks_sec.integer("ignore_ring_px", MasksConfig.ignore_ring_px, lo=0, hi=64),
                        instances=masks_sec.take("instances", bool, MasksConfig.instances),
                        edge_px=masks_sec.integer("edge_px", MasksConfig.edge_px, lo=1, hi=16))
    masks_sec.done()

    classes = parse_classes(path, top.take("classes", list))
    check_edge_values(path, classes, masks.instances)
    imagery = parse_imagery(path, top.take("imagery", dict)) if "imagery" in top.table else None
    synthetic = _synthetic(path, top.take("synthetic", dict)) if "synthetic" in top.table else None
    sections = _sections(path, top)
    top.done()
    _check_label_source(path, osm, classes, sections)
    if sections.labels.source == "none" and bbox is None and not (imagery is not None and imagery.cover_folder):
        raise ConfigError(f"{path}: a region without labels ([labels] source = \"none\") takes its tiles from "
                          "[region] bbox = [west, south, east, north] or [imagery] cover_folder = true; set one")
    return RegionConfig(
        path=path, name=name, zoom=zoom, tile_size=tile_size, shard_zoom=shard_zoom,
        data_dir=data_dir, osm=osm, classes=classes, bbox=bbox, masks=masks,
        imagery=imagery, synthetic=synthetic, raw=raw, max_tiles=max_tiles, labels=sections.labels,
        split=sections.split, train=sections.train, predict=sections.predict, vectorize=sections.vectorize,
        compare=sections.compare,
    )


@dataclass(frozen=True)
class _Sections:
    """The stage sections of one config, parsed (defaults for a table the TOML does not have)."""

    labels: LabelsConfig
    split: SplitSpec
    train: TrainSpec
    predict: PredictSpec
    vectorize: VectorizeSpec
    compare: CompareSpec


def _sections(path: Path, top: Section) -> _Sections:
    """Parse every stage section of :data:`SECTIONS` (``{}``, the defaults, when it is absent)."""
    def table(name: str) -> dict[str, Any]:
        value: dict[str, Any] = top.take(name, dict, {})
        return value

    return _Sections(labels=parse_labels_config(path, table("labels")), split=parse_split(path, table("split")),
                     train=parse_train(path, table("train")), predict=parse_predict(path, table("predict")),
                     vectorize=parse_vectorize(path, table("vectorize")), compare=parse_compare(path, table("compare")))


def _check_label_source(path: Path, osm: OsmSource | None, classes: tuple[ClassSpec, ...],
                        sections: _Sections) -> None:
    """OSM labels (the default) need an [osm] section and a tag filter on every class;
    vector labels (``[labels] source = "vector"``) need neither; a region without labels
    (``source = "none"``) needs a model from elsewhere and a way to its tiles."""
    source = sections.labels.source
    if source == "none":
        _check_unlabelled(path, sections)
        return
    if source == "vector":
        return
    if osm is None:
        raise ConfigError(f"{path}: [osm] path is required (or set [labels] source = \"vector\" with paths)")
    for i, c in enumerate(classes):
        if not c.tags:
            raise ConfigError(f"{path}: classes[{i}] ({c.name}).tags needs at least one tag filter "
                              "(a class without tags takes every feature only with [labels] source = \"vector\")")


def _check_unlabelled(path: Path, sections: _Sections) -> None:
    """``[labels] source = "none"``: imagery only. The model comes from ``[predict] model`` and
    the vectors from the predictions; nothing here trains on, or is compared with, labels."""
    how = 'with [labels] source = "none" (no labels)'
    predict, vectorize = sections.predict, sections.vectorize
    if predict.model is None:
        raise ConfigError(f"{path}: [predict] model is required {how}: name another region's config "
                          "(configs/<region>.toml) or a checkpoint file (best.pt)")
    if vectorize.source != "predictions":
        raise ConfigError(f"{path}: [vectorize] source = \"{vectorize.source}\" needs labels; "
                          f"use \"predictions\" {how}")


def _bbox(sec: Section, k: str) -> tuple[float, float, float, float] | None:
    v = sec.take(k, list, None)
    if v is None:
        return None
    if len(v) != 4 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
        raise ConfigError(f"{sec.key(k)} must be [west, south, east, north] in degrees")
    w, s, e, n = (float(x) for x in v)
    if not (-180 <= w < e <= 180 and -85.0511 <= s < n <= 85.0511):
        raise ConfigError(f"{sec.key(k)} = {v}: need west < east within ±180, south < north within ±85.05")
    return (w, s, e, n)


def _synthetic(path: Path, table: dict[str, Any]) -> SyntheticConfig:
    sec = Section(path, "synthetic", table)
    d = SyntheticConfig()
    centre = sec.take("centre", list, list(d.centre))
    if len(centre) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in centre):
        raise ConfigError(f"{sec.key('centre')} = {centre!r} must be [lon, lat], two numbers in degrees")
    if not (-180 < centre[0] < 180 and -80 < centre[1] < 84):
        raise ConfigError(f"{sec.key('centre')} must be [lon, lat] in degrees, within UTM latitudes")
    cfg = SyntheticConfig(
        seed=sec.integer("seed", d.seed, lo=0),
        size_m=sec.number("size_m", d.size_m, lo=100, hi=20000),
        centre=(float(centre[0]), float(centre[1])),
        resolution_m=sec.number("resolution_m", d.resolution_m, lo=0.05, hi=5),
        share_missing=sec.number("share_missing", d.share_missing, lo=0, hi=0.9),
        share_demolished=sec.number("share_demolished", d.share_demolished, lo=0, hi=0.9),
        share_offset=sec.number("share_offset", d.share_offset, lo=0, hi=0.9),
        share_roads=sec.number("share_roads", d.share_roads, lo=0, hi=0.45),
        tree_density=sec.number("tree_density", d.tree_density, lo=0, hi=5),
        jpeg_quality=sec.integer("jpeg_quality", d.jpeg_quality, lo=1, hi=100),
    )
    sec.done()
    return cfg


__all__ = [
    "IGNORE_VALUE",
    "SECTIONS",
    "ClassSpec",
    "CompareSpec",
    "ConfigError",
    "ImageryConfig",
    "LabelsConfig",
    "MasksConfig",
    "OsmSource",
    "PredictSpec",
    "RegionConfig",
    "Section",
    "SplitSpec",
    "SyntheticConfig",
    "TagFilter",
    "TrainSpec",
    "VectorizeSpec",
    "load_config",
]
