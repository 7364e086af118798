"""Typed, frozen region config, loaded and validated once from ``configs/<region>.toml``.

Every error names the file and the dotted key at fault. Unknown keys are errors (a typo must
never be silently ignored). Relative paths in the config are resolved against the current
working directory (the project root when run through the Makefile).

Schema (see ``configs/helsinki.toml`` for a commented example)::

    [region]   name, zoom, tile_size, shard_zoom, bbox (W,S,E,N in EPSG:4326), data_dir
    [osm]      path, url
    [masks]    ignore_ring_px
    [[classes]] name, id, kind (area|line), priority, tags, exclude, buffer_m, buffer_m_by_value, color
    [imagery]  source (raster|xyz|wms), paths, url, ... (optional)
    [synthetic] seed, size_m, ... (optional: a generated sample region)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError, MissingInputError

MAX_ZOOM = 24
IGNORE_VALUE = 255
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_TAG_RE = re.compile(r"^([^=|*\s]+)(?:=(\*|[^=|]+(?:\|[^=|]+)*))?$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")
_RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")

#: Optional sections owned by a stage module, parsed by that module (imported lazily, so loading
#: a config never imports torch): section name -> "module:function". The function takes
#: ``(path: Path, table: dict)`` and returns a frozen dataclass; it is also called with an empty
#: table to get the section's defaults. Use :class:`Section` to read keys with clear errors.
SECTION_PARSERS: dict[str, str] = {
    "predict": "pipeline.predict_spec:parse_predict",
    "split": "pipeline.specs:parse_split",
    "train": "pipeline.specs:parse_train",
}


@dataclass(frozen=True)
class TagFilter:
    """One OSM tag condition: ``key`` alone or ``key=*`` (any value), or ``key=v1|v2``."""

    key: str
    values: tuple[str, ...] | None  # None: any value

    @classmethod
    def parse(cls, text: str, where: str) -> TagFilter:
        m = _TAG_RE.match(text.strip())
        if not m:
            raise ConfigError(f"{where}: bad tag filter {text!r}; write 'key', 'key=*' or 'key=v1|v2'")
        key, vals = m.group(1), m.group(2)
        if vals is None or vals == "*":
            return cls(key, None)
        return cls(key, tuple(v.strip() for v in vals.split("|")))

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when ``tags`` has this key (with one of the values, if any are given)."""
        value = tags.get(self.key)
        if value is None:
            return False
        return self.values is None or value in self.values

    def __str__(self) -> str:
        return self.key + ("=*" if self.values is None else "=" + "|".join(self.values))


@dataclass(frozen=True)
class ClassSpec:
    """A label class: burnt with value ``id`` into masks; higher ``priority`` wins overlaps.

    ``buffer_m`` (ground metres, half-width) applies to line classes; ``buffer_m_by_value``
    overrides it by the value of the first matching include tag (e.g. wider motorways).
    """

    name: str
    id: int
    kind: str  # "area" | "line"
    priority: int
    tags: tuple[TagFilter, ...]
    exclude: tuple[TagFilter, ...] = ()
    buffer_m: float = 0.0
    buffer_m_by_value: tuple[tuple[str, float], ...] = ()
    color: str = "#ffffff"

    def matches(self, tags: Mapping[str, str]) -> TagFilter | None:
        """The first include filter that ``tags`` match, unless an exclude filter matches."""
        if any(f.matches(tags) for f in self.exclude):
            return None
        for f in self.tags:
            if f.matches(tags):
                return f
        return None

    def buffer_for(self, tags: Mapping[str, str]) -> float:
        """Half-width in ground metres for a feature with ``tags`` (0 for areas)."""
        if self.kind != "line":
            return 0.0
        first = self.matches(tags)
        if first is not None:
            value = tags.get(first.key)
            for v, b in self.buffer_m_by_value:
                if v == value:
                    return b
        return self.buffer_m

    @property
    def tag_keys(self) -> tuple[str, ...]:
        """Keys whose values are kept in the extracted features."""
        keys: list[str] = []
        for f in self.tags + self.exclude:
            if f.key not in keys:
                keys.append(f.key)
        return tuple(keys)


@dataclass(frozen=True)
class OsmSource:
    """Where the OSM extract comes from: a local ``.osm.pbf`` and an optional download URL."""

    path: Path
    url: str | None = None


@dataclass(frozen=True)
class ImageryConfig:
    """Imagery source, section ``[imagery]``.

    ``source`` is ``raster`` (local GeoTIFF/COG ``paths`` in any CRS, mosaicked in the order
    given: the first path is on top), ``xyz`` (URL template with ``{z} {x} {y}``, ``{-y}``
    (TMS rows from the south), ``{quadkey}``, ``{r}`` (``@2x`` when ``retina``)) or ``wms``
    (GetMap URL template with ``{bbox}`` = minx,miny,maxx,maxy in EPSG:3857 metres and
    ``{width} {height}`` in pixels). ``${NAME}`` in ``url`` and ``headers`` is replaced by the
    environment variable NAME at download time, so API keys stay out of config files; keys
    never appear in logs, manifests or errors (see ``pipeline.imagery.common.redact``).

    Raster tiles are encoded as ``format``; downloaded tiles keep the server's bytes and format.
    """

    source: str
    paths: tuple[Path, ...] = ()
    url: str | None = None
    format: str = "png"  # png | jpg | tif (raster source)
    resampling: str = "bilinear"
    bands: tuple[int, ...] | None = None  # 1-based; None: the first 3 colour bands (or band 1)
    nodata: float | None = None  # overrides the rasters' own nodata value
    rescale: tuple[float, float] | None = None  # 16-bit -> 8-bit value range; None: percentiles
    percentiles: tuple[float, float] = (2.0, 98.0)  # computed per band over all rasters
    keep_16bit: bool = False  # write 16-bit TIFF tiles instead of rescaling
    min_valid_share: float = 0.5  # a raster tile with a smaller share of valid pixels is skipped
    jpeg_quality: int = 90
    png_level: int = 1  # zlib level 0-9: on aerial photos 1 is 5x faster than 6, files ~6 % larger
    retina: bool = False  # {r} -> "@2x" (set region.tile_size = 512 for such servers)
    headers: tuple[tuple[str, str], ...] = ()  # extra HTTP headers (e.g. Referer)
    max_connections: int = 8  # concurrent requests per shard
    rate_limit_per_s: float = 0.0  # requests per second per shard; 0: unlimited
    retries: int = 5
    timeout_s: float = 20.0  # per connect / read, seconds
    backoff_s: float = 0.5  # first retry delay; doubles per attempt, with jitter
    max_backoff_s: float = 60.0  # cap of one delay (Retry-After included)
    user_agent: str = "osmsat/0.1 (+https://github.com/osmsat/osmsat)"


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of a generated sample region (see ``pipeline.synthetic``). Sizes in metres.

    The town is a square of ``size_m`` centred on ``centre``; its orthophoto is in the UTM zone
    of ``centre`` at ``resolution_m``. Shares: of the buildings in the image, ``share_missing``
    are left out of OSM; ``share_demolished`` of all buildings are in OSM only; ``share_offset``
    of the mapped ones are shifted 1-2 m in OSM."""

    seed: int = 42
    size_m: float = 700.0
    centre: tuple[float, float] = (13.40, 52.52)  # lon, lat (EPSG:4326)
    resolution_m: float = 0.3
    share_missing: float = 0.10
    share_demolished: float = 0.03
    share_offset: float = 0.03
    tree_density: float = 1.0  # multiplies the number of trees (0: none)
    jpeg_quality: int = 90  # JPEG quality of the orthophoto COG (1..100)


@dataclass(frozen=True)
class RegionConfig:
    """A whole region config. ``bbox`` is (west, south, east, north) in EPSG:4326 degrees."""

    path: Path
    name: str
    zoom: int
    tile_size: int
    shard_zoom: int
    data_dir: Path
    osm: OsmSource
    classes: tuple[ClassSpec, ...]
    bbox: tuple[float, float, float, float] | None = None
    ignore_ring_px: int = 0
    imagery: ImageryConfig | None = None
    synthetic: SyntheticConfig | None = None
    sections: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def section(self, name: str) -> Any:
        """The parsed dataclass of an optional stage section (``SECTION_PARSERS``): the config's
        own table, or the section's defaults when the config has none."""
        if name in self.sections:
            return self.sections[name]
        if name not in SECTION_PARSERS:
            raise KeyError(f"no config section parser registered for [{name}]")
        return _section_parser(name)(self.path, {})

    def digest(self, *keys: str) -> str:
        """SHA-256 (hex, 16 chars) of the named config values, canonically JSON-encoded.

        A key is a top-level section (``"osm"``) or a dotted path (``"region.zoom"``); a
        missing key counts as null, so adding a default-valued key changes the digest.
        """
        picked: dict[str, Any] = {}
        for k in keys:
            node: Any = self.raw
            for part in k.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            picked[k] = node
        blob = json.dumps(picked, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def class_by_name(self, name: str) -> ClassSpec:
        for c in self.classes:
            if c.name == name:
                return c
        raise ConfigError(f"{self.path}: no class named {name!r}")

    def palette(self) -> list[int]:
        """768-entry RGB palette: class colours at their ids, grey for ignore (255)."""
        pal = [0] * 768
        for c in self.classes:
            pal[3 * c.id : 3 * c.id + 3] = [int(c.color[i : i + 2], 16) for i in (1, 3, 5)]
        pal[3 * IGNORE_VALUE : 3 * IGNORE_VALUE + 3] = [128, 128, 128]
        return pal


# ---------------------------------------------------------------------------------------------
# Loading and validation


class Section:
    """A TOML table being read: every key must be taken, leftovers are reported as unknown."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        self.path, self.where, self.table = path, where, dict(table)
        self.seen: list[str] = []

    def key(self, k: str) -> str:
        return f"{self.path}: {self.where}.{k}" if self.where else f"{self.path}: {k}"

    def take(self, k: str, typ: type | tuple[type, ...], default: Any = ..., ) -> Any:
        self.seen.append(k)
        if k not in self.table:
            if default is ...:
                near = difflib.get_close_matches(k, list(self.table), n=1)
                hint = f" (found unknown key {near[0]!r}: a typo?)" if near else ""
                raise ConfigError(f"{self.key(k)} is required{hint}")
            return default
        v = self.table.pop(k)
        ok = isinstance(v, typ) and not (isinstance(v, bool) and typ in (int, float, (int, float)))
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise ConfigError(f"{self.key(k)} must be {names}, got {v!r}")
        return v

    def number(self, k: str, default: Any = ..., lo: float | None = None, hi: float | None = None) -> float:
        v = self.take(k, (int, float), default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{self.key(k)} = {v} is out of range [{lo}, {hi}]")
        return float(v) if v is not None else v  # type: ignore[return-value]

    def integer(self, k: str, default: Any = ..., lo: int | None = None, hi: int | None = None) -> int:
        v = self.take(k, int, default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{self.key(k)} = {v} is out of range [{lo}, {hi}]")
        return v

    def choice(self, k: str, options: tuple[str, ...], default: Any = ...) -> str:
        v = self.take(k, str, default)
        if v not in options:
            raise ConfigError(f"{self.key(k)} = {v!r}; choose one of {', '.join(options)}")
        return v

    def done(self) -> None:
        if self.table:
            hints = []
            for k in sorted(self.table):
                near = difflib.get_close_matches(k, self.seen, n=1)
                hints.append(f"{k} (did you mean {near[0]!r}?)" if near else k)
            raise ConfigError(f"{self.path}: unknown key(s) in [{self.where or 'top level'}]: {', '.join(hints)}")


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
    data_dir = Path(region.take("data_dir", str, f"data/{name}"))
    region.done()

    osm_sec = Section(path, "osm", top.take("osm", dict))
    osm = OsmSource(Path(osm_sec.take("path", str)), osm_sec.take("url", str, None))
    osm_sec.done()

    masks_sec = Section(path, "masks", top.take("masks", dict, {}))
    ring = masks_sec.integer("ignore_ring_px", 0, lo=0, hi=64)
    masks_sec.done()

    classes = _classes(path, top.take("classes", list))
    imagery = _imagery(path, top.take("imagery", dict)) if "imagery" in top.table else None
    synthetic = _synthetic(path, top.take("synthetic", dict)) if "synthetic" in top.table else None
    sections = {name: _section_parser(name)(path, top.take(name, dict))
                for name in SECTION_PARSERS if name in top.table}
    top.done()
    return RegionConfig(
        path=path, name=name, zoom=zoom, tile_size=tile_size, shard_zoom=shard_zoom,
        data_dir=data_dir, osm=osm, classes=classes, bbox=bbox, ignore_ring_px=ring,
        imagery=imagery, synthetic=synthetic, sections=sections, raw=raw,
    )


def _section_parser(name: str) -> Any:
    import importlib

    module, func = SECTION_PARSERS[name].split(":")
    return getattr(importlib.import_module(module), func)


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


def _classes(path: Path, items: list[Any]) -> tuple[ClassSpec, ...]:
    if not items:
        raise ConfigError(f"{path}: [[classes]] needs at least one class")
    out: list[ClassSpec] = []
    for i, item in enumerate(items):
        sec = Section(path, f"classes[{i}]", item)
        name = sec.take("name", str)
        sec.where = f"classes[{i}] ({name})"
        cid = sec.integer("id", lo=1, hi=254)
        kind = sec.choice("kind", ("area", "line"))
        tags = tuple(TagFilter.parse(t, sec.key("tags")) for t in _str_list(sec, "tags"))
        if not tags:
            raise ConfigError(f"{sec.key('tags')} needs at least one tag filter")
        exclude = tuple(TagFilter.parse(t, sec.key("exclude")) for t in _str_list(sec, "exclude", []))
        buffer_m = sec.number("buffer_m", 0.0, lo=0, hi=1000)
        by_value = sec.take("buffer_m_by_value", dict, {})
        for v, b in by_value.items():
            if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 <= b <= 1000:
                raise ConfigError(f"{sec.key('buffer_m_by_value')}.{v} must be a number of metres in [0, 1000]")
        if kind == "line" and buffer_m <= 0 and not by_value:
            raise ConfigError(f"{sec.key('buffer_m')} must be > 0 for a line class (half-width in metres)")
        color = sec.take("color", str, _default_color(cid))
        if not _COLOR_RE.match(color):
            raise ConfigError(f"{sec.key('color')} = {color!r}; write '#rrggbb'")
        spec = ClassSpec(
            name=name, id=cid, kind=kind, priority=sec.integer("priority", cid),
            tags=tags, exclude=exclude, buffer_m=buffer_m,
            buffer_m_by_value=tuple((str(k), float(b)) for k, b in sorted(by_value.items())), color=color,
        )
        sec.done()
        for prev in out:
            if prev.name == spec.name or prev.id == spec.id:
                raise ConfigError(f"{path}: classes[{i}] repeats the name or id of class {prev.name!r}")
        out.append(spec)
    return tuple(out)


def _str_list(sec: Section, k: str, default: Any = ...) -> list[str]:
    v = sec.take(k, (list, str), default)
    v = [v] if isinstance(v, str) else v
    if not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{sec.key(k)} must be a list of strings")
    return list(v)


def _default_color(cid: int) -> str:
    tab = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf"]
    return tab[(cid - 1) % len(tab)]


def _imagery(path: Path, table: dict[str, Any]) -> ImageryConfig:
    sec = Section(path, "imagery", table)
    d = ImageryConfig(source="raster")
    source = sec.choice("source", ("raster", "xyz", "wms"))
    paths = tuple(Path(p) for p in _str_list(sec, "paths", []))
    url = sec.take("url", str, None)
    if source == "raster" and not paths:
        raise ConfigError(f"{sec.key('paths')} is required when source = 'raster'")
    if source in ("xyz", "wms") and not url:
        raise ConfigError(f"{sec.key('url')} is required when source = {source!r}")
    if source != "raster" and paths:
        raise ConfigError(f"{sec.key('paths')} is only for source = 'raster'; remove it or change source")
    if url is not None:
        _check_url_template(sec, url, source)
    bands = sec.take("bands", list, None)
    if bands is not None and not (bands and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                                                for b in bands)):
        raise ConfigError(f"{sec.key('bands')} must be a non-empty list of 1-based band numbers, e.g. [4, 1, 2]")
    rescale = sec.take("rescale", list, None)
    pct = sec.take("percentiles", list, list(d.percentiles))
    for k, pair in (("rescale", rescale), ("percentiles", pct)):
        if pair is not None and (len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair)
                                 or not pair[0] < pair[1]):
            raise ConfigError(f"{sec.key(k)} must be [low, high] with low < high")
    if not 0 <= pct[0] < pct[1] <= 100:
        raise ConfigError(f"{sec.key('percentiles')} = {pct}: both must lie in [0, 100]")
    headers = sec.take("headers", dict, {})
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{sec.key('headers')} must map header names to strings")
    cfg = ImageryConfig(
        source=source, paths=paths, url=url,
        format=sec.choice("format", ("png", "jpg", "tif"), d.format),
        resampling=sec.choice("resampling", _RESAMPLING, d.resampling),
        bands=tuple(bands) if bands else None,
        nodata=sec.number("nodata", None),
        rescale=(float(rescale[0]), float(rescale[1])) if rescale else None,
        percentiles=(float(pct[0]), float(pct[1])),
        keep_16bit=sec.take("keep_16bit", bool, d.keep_16bit),
        min_valid_share=sec.number("min_valid_share", d.min_valid_share, lo=0, hi=1),
        jpeg_quality=sec.integer("jpeg_quality", d.jpeg_quality, lo=1, hi=100),
        png_level=sec.integer("png_level", d.png_level, lo=0, hi=9),
        retina=sec.take("retina", bool, d.retina),
        headers=tuple(sorted((str(k), str(v)) for k, v in headers.items())),
        max_connections=sec.integer("max_connections", d.max_connections, lo=1, hi=256),
        rate_limit_per_s=sec.number("rate_limit_per_s", d.rate_limit_per_s, lo=0),
        retries=sec.integer("retries", d.retries, lo=0, hi=50),
        timeout_s=sec.number("timeout_s", d.timeout_s, lo=0.1, hi=600),
        backoff_s=sec.number("backoff_s", d.backoff_s, lo=0, hi=60),
        max_backoff_s=sec.number("max_backoff_s", d.max_backoff_s, lo=0, hi=3600),
        user_agent=sec.take("user_agent", str, d.user_agent),
    )
    sec.done()
    if cfg.keep_16bit and cfg.format != "tif":
        raise ConfigError(f"{sec.key('keep_16bit')} needs format = 'tif'")
    if cfg.bands is not None and len(cfg.bands) not in (1, 3) and cfg.format != "tif":
        raise ConfigError(f"{sec.key('bands')} = {list(cfg.bands)}: {cfg.format} tiles take 1 or 3 bands; "
                          "use format = 'tif' for other band counts")
    return cfg


_URL_FIELDS = {"xyz": ("z", "x", "y", "-y", "quadkey", "r"), "wms": ("bbox", "width", "height")}


def _check_url_template(sec: Section, url: str, source: str) -> None:
    """A tile URL template: known ``{fields}`` only, enough of them to address a tile."""
    if not re.match(r"^https?://", url):
        raise ConfigError(f"{sec.key('url')} must start with http:// or https://")
    fields = set(re.findall(r"(?<!\$)\{([^{}]*)\}", url))
    allowed = _URL_FIELDS.get(source, ())
    unknown = sorted(fields - set(allowed))
    if unknown:
        raise ConfigError(f"{sec.key('url')} has unknown field(s) {unknown}; a {source} URL takes "
                          + " ".join("{" + f + "}" for f in allowed))
    if source == "xyz" and not ({"z", "x"} <= fields and fields & {"y", "-y"}) and "quadkey" not in fields:
        raise ConfigError(f"{sec.key('url')} must contain {{z}}, {{x}} and {{y}} (or {{-y}}), or {{quadkey}}")
    if source == "wms" and "bbox" not in fields:
        raise ConfigError(f"{sec.key('url')} must contain {{bbox}} (minx,miny,maxx,maxy in EPSG:3857)")


def _synthetic(path: Path, table: dict[str, Any]) -> SyntheticConfig:
    sec = Section(path, "synthetic", table)
    d = SyntheticConfig()
    centre = sec.take("centre", list, list(d.centre))
    if len(centre) != 2 or not (-180 < centre[0] < 180 and -80 < centre[1] < 84):
        raise ConfigError(f"{sec.key('centre')} must be [lon, lat] in degrees, within UTM latitudes")
    cfg = SyntheticConfig(
        seed=sec.integer("seed", d.seed, lo=0),
        size_m=sec.number("size_m", d.size_m, lo=100, hi=20000),
        centre=(float(centre[0]), float(centre[1])),
        resolution_m=sec.number("resolution_m", d.resolution_m, lo=0.05, hi=5),
        share_missing=sec.number("share_missing", d.share_missing, lo=0, hi=0.9),
        share_demolished=sec.number("share_demolished", d.share_demolished, lo=0, hi=0.9),
        share_offset=sec.number("share_offset", d.share_offset, lo=0, hi=0.9),
        tree_density=sec.number("tree_density", d.tree_density, lo=0, hi=5),
        jpeg_quality=sec.integer("jpeg_quality", d.jpeg_quality, lo=1, hi=100),
    )
    sec.done()
    return cfg


__all__ = [
    "IGNORE_VALUE",
    "SECTION_PARSERS",
    "ClassSpec",
    "ConfigError",
    "ImageryConfig",
    "OsmSource",
    "RegionConfig",
    "Section",
    "SyntheticConfig",
    "TagFilter",
    "load_config",
]
