"""Section ``[labels]`` of a region config: where the label features come from (parsing only;
reading them is :mod:`pipeline.labels.vector`). All keys optional::

    source    = "vector"            # "osm" (default: extract from [osm] path), "vector", or "none":
                                    # no labels at all (imagery only; [predict] model names the model,
                                    # [region] bbox or [imagery] cover_folder the tiles; nothing is
                                    # trained, evaluated or compared)
    paths     = ["labels/buildings.geojson"]   # one or more files readable by pyogrio/GDAL
    layer     = "buildings"         # layer of multi-layer files (GeoPackage); default: the first
    crs       = "EPSG:32616"        # CRS of files that declare none (a file's own CRS always wins; a
                                    # GeoJSON without a crs member counts as none when its coordinates
                                    # cannot be degrees)
    id_field  = "osm_id"            # feature ids; default: osm_id, else id, else the row number
    attribute = "label"             # optional: classes by this attribute's value ...
    values    = { "1" = "building", "road" = 2 }   # ... value -> class name or id
                                    # (default: a value equal to a class id or class name)
    negatives = ["review/rejected.geojson"]   # areas that are no class: burnt as background (0)
                                    # over everything (mapper feedback: rejected candidates); training
                                    # weighs their pixels [train] negatives_weight (hard negatives)
    ignore    = ["review/unsure.geojson"]     # areas burnt as the ignore value (255), last

``negatives`` and ``ignore`` (polygon files, any source) change the masks, not the extracted
features: they enter the masks stage's digest (their paths and file fingerprints), not extract's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError

#: id columns tried, in order, when ``id_field`` is not set
ID_FIELDS = ("osm_id", "id")


@dataclass(frozen=True)
class LabelsConfig:
    """Section ``[labels]``: where the label features come from (see the module docstring)."""

    source: str = "osm"
    paths: tuple[Path, ...] = ()
    layer: str | None = None
    crs: str | None = None
    id_field: str | None = None
    attribute: str | None = None
    values: tuple[tuple[str, str], ...] = ()  # attribute value -> class name
    # mapper feedback, burnt by the masks stage: its digest lists them (pipeline.core.stages), extract's does not
    negatives: tuple[Path, ...] = field(default=(), metadata={"digest": "masks"})
    ignore: tuple[Path, ...] = field(default=(), metadata={"digest": "masks"})


def parse_labels_config(path: Path, table: dict[str, Any]) -> LabelsConfig:
    """Parse ``[labels]`` (``{}``: the defaults, OSM labels); ConfigError names file and key."""
    sec = Section(path, "labels", table)
    source = sec.choice("source", ("osm", "vector", "none"), "osm")
    raw_paths = sec.take("paths", (list, str), [])
    raw_paths = [raw_paths] if isinstance(raw_paths, str) else raw_paths
    if not all(isinstance(p, str) and p for p in raw_paths):
        raise ConfigError(f"{sec.key('paths')} must be a list of file paths")
    if source == "vector" and not raw_paths:
        raise ConfigError(f"{sec.key('paths')} is required when source = 'vector' (GeoJSON, GeoPackage, ...)")
    if source != "vector" and raw_paths:
        raise ConfigError(f"{sec.key('paths')} is only for source = 'vector'; set source = 'vector' or remove it")
    crs = sec.take("crs", str, None)
    if crs is not None:
        _check_crs(sec, crs)
    values = sec.take("values", dict, {})
    attribute = sec.take("attribute", str, None)
    if values and attribute is None:
        raise ConfigError(f"{sec.key('values')} needs labels.attribute (the attribute whose values it maps)")
    for v, c in values.items():
        if not (isinstance(c, str) or (isinstance(c, int) and not isinstance(c, bool))):
            raise ConfigError(f"{sec.key('values')}.{v} must be a class name or a class id")
    cfg = LabelsConfig(
        source=source, paths=tuple(Path(p) for p in raw_paths), layer=sec.take("layer", str, None), crs=crs,
        id_field=sec.take("id_field", str, None), attribute=attribute,
        values=tuple(sorted((str(v), str(c)) for v, c in values.items())),
        negatives=_area_files(sec, "negatives"), ignore=_area_files(sec, "ignore"),
    )
    sec.done()
    both = sorted(set(cfg.negatives) & set(cfg.ignore))
    if both:
        raise ConfigError(f"{sec.key('ignore')}: {str(both[0])!r} is also in labels.negatives; an area is either "
                          "background (negatives) or unknown (ignore): list the file once")
    return cfg


def _area_files(sec: Section, key: str) -> tuple[Path, ...]:
    """``negatives`` / ``ignore``: a file path or a list of them (polygon files GDAL reads)."""
    raw = sec.take(key, (list, str), [])
    raw = [raw] if isinstance(raw, str) else raw
    if not all(isinstance(p, str) and p for p in raw):
        raise ConfigError(f"{sec.key(key)} must be a list of polygon file paths (GeoJSON, GeoPackage, ...), "
                          f'e.g. ["review/rejected.geojson"]')
    out = tuple(Path(p) for p in raw)
    if len(set(out)) != len(out):
        raise ConfigError(f"{sec.key(key)} lists a file twice; list it once")
    return out


def _check_crs(sec: Section, crs: str) -> None:
    import pyproj

    try:
        pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise ConfigError(f"{sec.key('crs')} = {crs!r} is not a CRS pyproj knows ({exc}); write e.g. 'EPSG:32616'") \
            from exc


def label_inputs(lcfg: LabelsConfig) -> list[Path]:
    """The label files (with a Shapefile's sidecars) whose fingerprints enter the extract digest."""
    return _with_sidecars(lcfg.paths)


def feedback_inputs(lcfg: LabelsConfig) -> list[Path]:
    """The ``negatives`` and ``ignore`` files (with a Shapefile's sidecars) whose fingerprints
    enter the masks digest."""
    return _with_sidecars(lcfg.negatives + lcfg.ignore)


def _with_sidecars(paths: tuple[Path, ...]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        out.append(p)
        if p.suffix.lower() == ".shp":
            out += [p.with_suffix(s) for s in (".dbf", ".prj", ".shx")]
    return out
