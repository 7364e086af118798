"""Labels from vector files (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet, ...).

Section ``[labels]`` (:mod:`pipeline.labels_config`) names the files.

Classes match on the files' attributes with the OSM tag-filter syntax (``building=*``,
``class=road|track``; a null or empty attribute counts as absent); a class without ``tags``
takes every feature. Polygons go to area classes (invalid ones repaired with
``shapely.make_valid`` and counted), lines to line classes (buffered by ``buffer_m`` ground
metres downstream, exactly like OSM lines; polygons in a line class give their outline), and
points in a line class become discs of ``buffer_m`` ground metres. Geometries of a kind the
class cannot take are skipped and counted. Coordinates that are no longitude/latitude once read
(projected ones in a file without a CRS, say) are an error naming the file and ``[labels] crs``.

The output is the frame that :mod:`pipeline.osm` makes (:data:`pipeline.io.FEATURE_COLUMNS` +
geometry, EPSG:4326): ``osm_type`` names the source (file name, ``:layer`` when given),
``osm_id`` is the feature's id (negative row numbers, -1 for the first row, where a feature has
no integer id), ``tags`` a JSON object of the attributes the classes read.

This module imports pyogrio/geopandas lazily, so parsing the config stays light.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.config import ClassSpec, TagFilter
from pipeline.errors import ConfigError, InputDataError, MissingInputError
from pipeline.geo import polygonal_part
from pipeline.labels_config import ID_FIELDS, LabelsConfig

__all__ = ["LabelStats", "LabelsConfig", "load_vector_labels"]  # LabelsConfig: the spec (labels_config)

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

log = logging.getLogger(__name__)
CRS = "EPSG:4326"
_POLY, _LINE, _POINT = (3, 6), (1, 2, 5), (0, 4)  # shapely type ids


@dataclass
class LabelStats:
    """What a vector-label load read, kept, repaired and skipped (counts of features/rows)."""

    files: dict[str, int] = field(default_factory=dict)  # features read per source
    rows_per_class: dict[str, int] = field(default_factory=dict)  # output rows per class name
    unmatched: int = 0  # features that no class takes
    wrong_geometry: int = 0  # (feature, class) pairs skipped: e.g. a line for an area class
    missing_geometry: int = 0  # features without geometry
    repaired: int = 0  # invalid polygons made valid
    dropped_invalid: int = 0  # polygons with nothing polygonal left after repair
    unmapped_values: dict[str, int] = field(default_factory=dict)  # attribute values mapped to no class

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Loading


def load_vector_labels(lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> tuple[gpd.GeoDataFrame, LabelStats]:
    """Read the label files of ``lcfg`` and match them to ``classes``.

    Returns the features frame (EPSG:4326, one row per (feature, class it matches), sorted by
    (class_id, osm_type, osm_id)) and stats. A class that matches no feature is a warning
    (logged, and 0 in ``rows_per_class``), not an error. Raises MissingInputError for a missing
    file, InputDataError naming the file, layer or attribute for an unreadable file, an unknown
    layer, a file without CRS (when ``crs`` is not set) or an attribute the file lacks.
    """
    import geopandas as gpd
    import pandas as pd

    stats = LabelStats()
    value_class = _value_classes(lcfg, classes)
    parts = []
    for p in lcfg.paths:
        frame, source = _read_one(p, lcfg, classes)
        stats.files[source] = len(frame)
        parts.append(_match(frame, source, lcfg, classes, value_class, stats))
    out = pd.concat(parts, ignore_index=True) if parts else _empty()
    out = out.sort_values(["class_id", "osm_type", "osm_id"], kind="stable").reset_index(drop=True)
    stats.rows_per_class = {c.name: int((out["class"] == c.name).sum()) for c in classes}
    for name, n in stats.rows_per_class.items():
        if n == 0:
            log.warning("labels: class %r matches none of the %d features of %s (per file: %s); check its tags "
                        "or labels.values", name, sum(stats.files.values()),
                        ", ".join(str(p) for p in lcfg.paths), stats.files)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=CRS), stats


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({"osm_type": pd.Series([], dtype=object), "osm_id": pd.Series([], dtype=np.int64),
                         "class": pd.Series([], dtype=object), "class_id": pd.Series([], dtype=np.uint8),
                         "buffer_m": pd.Series([], dtype=np.float64), "tags": pd.Series([], dtype=object),
                         "geometry": pd.Series([], dtype=object)})


def _value_classes(lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> dict[str, str]:
    """Attribute value -> class name: ``values`` when given, else class ids and names."""
    if lcfg.attribute is None:
        return {}
    by_name = {c.name: c.name for c in classes} | {str(c.id): c.name for c in classes}
    if not lcfg.values:
        return by_name
    out = {}
    for value, target in lcfg.values:
        if target not in by_name:
            raise ConfigError(f"labels.values.{value} = {target!r} is no class name or id of the config "
                              f"(classes: {', '.join(c.name for c in classes)})")
        out[value] = by_name[target]
    return out


def _needed_fields(lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> list[str]:
    keys: list[str] = []
    for c in classes:
        keys += [k for k in c.tag_keys if k not in keys]
    if lcfg.attribute is not None and lcfg.attribute not in keys:
        keys.append(lcfg.attribute)
    return keys


def _read_one(path: Path, lcfg: LabelsConfig, classes: Sequence[ClassSpec]) -> tuple[pd.DataFrame, str]:
    """One label file -> DataFrame (needed attributes, ``_id``, geometry in EPSG:4326, 2-D)."""
    import pyogrio
    import pyproj

    if not Path(path).exists():
        raise MissingInputError(f"{path}: label file not found; fix labels.paths in the region config")
    where = f"{path}" + (f" layer {lcfg.layer!r}" if lcfg.layer else "")
    try:
        layers = [str(n) for n in pyogrio.list_layers(path)[:, 0]]
    except (pyogrio.errors.DataSourceError, OSError) as exc:
        raise InputDataError(f"{path}: not a vector file GDAL can read ({exc}); use GeoJSON, GeoPackage, "
                             "Shapefile, FlatGeobuf or GeoParquet") from exc
    if lcfg.layer is not None and lcfg.layer not in layers:
        raise InputDataError(f"{path}: no layer {lcfg.layer!r}; its layers are {', '.join(layers)} "
                             "(fix labels.layer)")
    try:
        info = pyogrio.read_info(path, layer=lcfg.layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        raise InputDataError(f"{where}: unreadable ({exc})") from exc
    fields = [str(f) for f in info["fields"]]
    wanted = _needed_fields(lcfg, classes)
    missing = [k for k in wanted if k not in fields]
    if missing:
        raise InputDataError(f"{where}: no attribute {', '.join(repr(k) for k in missing)} (read by the classes' "
                             f"tags or labels.attribute); its attributes are {', '.join(fields) or 'none'}")
    id_field = _id_field(lcfg, fields, where)
    crs = info["crs"] or lcfg.crs
    if crs is None:
        raise InputDataError(f"{where}: the file declares no CRS; set labels.crs (e.g. \"EPSG:4326\") in the "
                             "region config, or add one to the file (a .prj beside a Shapefile)")
    columns = wanted + ([id_field] if id_field and id_field not in wanted else [])
    try:
        df = pyogrio.read_dataframe(path, layer=lcfg.layer, columns=columns, force_2d=True, use_arrow=True,
                                    on_invalid="ignore")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        raise InputDataError(f"{where}: unreadable ({exc})") from exc
    raw = geoms = np.asarray(df.geometry.array, dtype=object)
    wgs84 = pyproj.CRS.from_epsg(4326)
    # GDAL reads a GeoJSON without a crs member as EPSG:4326 (RFC 7946): then labels.crs may say otherwise
    implied = info["driver"] in _GEOJSON and pyproj.CRS.from_user_input(crs).equals(wgs84, ignore_axis_order=True)
    if implied and lcfg.crs and _outside_degrees(raw) is not None:
        crs = lcfg.crs
    if not pyproj.CRS.from_user_input(crs).equals(wgs84, ignore_axis_order=True):
        geoms = _to_4326(raw, crs)
    _check_degrees(raw, geoms, where, crs, declared=bool(info["crs"]) and not implied)
    frame = df.drop(columns=df.geometry.name)
    frame = frame.assign(_id=_ids(frame[id_field] if id_field else None, len(frame)), geometry=geoms)
    source = Path(path).name + (f":{lcfg.layer}" if lcfg.layer else "")
    return frame, source


#: GDAL drivers that report EPSG:4326 for a file without a CRS of its own
_GEOJSON = ("GeoJSON", "GeoJSONSeq")


def _outside_degrees(geoms: np.ndarray) -> int | None:
    """The index (in ``shapely.get_coordinates`` order) of the first coordinate beyond longitude
    ±180 / latitude ±90 or not finite, else None."""
    coords = shapely.get_coordinates(geoms)
    bad = ~(np.isfinite(coords).all(axis=1) & (np.abs(coords[:, 0]) <= 180) & (np.abs(coords[:, 1]) <= 90))
    return int(np.flatnonzero(bad)[0]) if bad.any() else None


def _check_degrees(raw: np.ndarray, geoms: np.ndarray, where: str, crs: Any, declared: bool) -> None:
    """Raise InputDataError when the geometries ``raw`` (in ``crs``), once in EPSG:4326
    (``geoms``), are no longitude/latitude: projected coordinates read as degrees, or outside
    the valid range of their CRS. ``declared``: the file itself declares ``crs``."""
    at = _outside_degrees(geoms)
    if at is None:
        return
    x, y = shapely.get_coordinates(raw)[at]
    fix = ("the file declares that CRS: fix the file's CRS" if declared else
           'set [labels] crs = "EPSG:xxxx" (the CRS its coordinates are in, e.g. "EPSG:32636" for UTM zone 36N) '
           "in the region config")
    raise InputDataError(f"{where}: coordinates ({x:.10g}, {y:.10g}) read in {crs} are outside the valid "
                         f"longitude/latitude range (projected coordinates without a declared CRS?); {fix}")


def _id_field(lcfg: LabelsConfig, fields: list[str], where: str) -> str | None:
    if lcfg.id_field is not None:
        if lcfg.id_field not in fields:
            raise InputDataError(f"{where}: no attribute {lcfg.id_field!r} (labels.id_field); its attributes are "
                                 f"{', '.join(fields) or 'none'}")
        return lcfg.id_field
    return next((f for f in ID_FIELDS if f in fields), None)


def _ids(col: pd.Series | None, n: int) -> np.ndarray:
    """int64 feature ids: the column's integer values, else ``-(row + 1)``."""
    import pandas as pd

    rows = -np.arange(1, n + 1, dtype=np.int64)
    if col is None:
        return rows
    num = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    ok = np.isfinite(num) & (num == np.round(num)) & (np.abs(num) < 2**62)
    return np.where(ok, np.nan_to_num(num).astype(np.int64), rows)


def _to_4326(geoms: np.ndarray, crs: Any) -> np.ndarray:
    """Reproject shapely geometries from ``crs`` to EPSG:4326 (lon/lat order)."""
    import pyproj

    tr = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def fwd(xy: np.ndarray) -> np.ndarray:
        x, y = tr.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, fwd)


# ---------------------------------------------------------------------------------------------
# Matching


def _text(col: pd.Series) -> np.ndarray:
    """Attribute values as strings (None where null or empty); integral floats without '.0'."""
    import pandas as pd

    values = col.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
            out[i] = None
        elif isinstance(v, (float, np.floating)) and float(v).is_integer():
            out[i] = str(int(v))
        else:
            s = str(v)
            out[i] = s if s != "" else None
    return out


def _filter_mask(f: TagFilter, text: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    col = text[f.key]
    present = np.array([v is not None for v in col], dtype=bool)
    if f.values is None:
        return present
    return present & np.isin(col.astype(str), list(f.values))


def _class_masks(text: Mapping[str, np.ndarray], n: int, lcfg: LabelsConfig, classes: Sequence[ClassSpec],
                 value_class: Mapping[str, str], stats: LabelStats) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per class: (rows it takes, the value of its first matching include filter or None)."""
    by_value = None
    if lcfg.attribute is not None:
        attr = text[lcfg.attribute]
        by_value = np.array([value_class.get(v) if v is not None else None for v in attr], dtype=object)
        for v in attr[by_value == None]:  # noqa: E711 (element-wise)
            stats.unmapped_values[str(v)] = stats.unmapped_values.get(str(v), 0) + 1
    out = []
    for c in classes:
        take = np.ones(n, dtype=bool) if not c.tags else np.zeros(n, dtype=bool)
        first = np.full(n, None, dtype=object)
        for f in c.tags:
            m = _filter_mask(f, text, n)
            new = m & ~take
            first[new] = text[f.key][new]
            take |= m
        for f in c.exclude:
            take &= ~_filter_mask(f, text, n)
        if by_value is not None:
            take &= by_value == c.name
        out.append((take, first))
    return out


def _match(frame: pd.DataFrame, source: str, lcfg: LabelsConfig, classes: Sequence[ClassSpec],
           value_class: Mapping[str, str], stats: LabelStats) -> pd.DataFrame:
    """Rows of one file -> feature rows (one per (feature, class)), geometries fitted to the class kind."""
    import pandas as pd

    geoms = frame["geometry"].to_numpy(dtype=object)
    has_geom = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    stats.missing_geometry += int((~has_geom).sum())
    kinds = shapely.get_type_id(geoms)
    keys = _needed_fields(lcfg, classes)
    text = {k: _text(frame[k]) for k in keys}
    masks = _class_masks(text, len(frame), lcfg, classes, value_class, stats)
    taken = np.zeros(len(frame), dtype=bool)
    out = []
    for c, (matched, first) in zip(classes, masks):
        take = matched & has_geom
        taken |= take
        idx = np.flatnonzero(take)
        g, buf, ok = _fit(geoms[idx], kinds[idx], c, first[idx], stats)
        idx, g, buf = idx[ok], g[ok], buf[ok]
        tags = _tags_json([tuple(text[k][i] for k in c.tag_keys) for i in idx], c.tag_keys)
        out.append(pd.DataFrame({
            "osm_type": np.full(len(idx), source, dtype=object), "osm_id": frame["_id"].to_numpy()[idx],
            "class": np.full(len(idx), c.name, dtype=object), "class_id": np.full(len(idx), c.id, dtype=np.uint8),
            "buffer_m": buf, "tags": np.array(tags, dtype=object), "geometry": g,
        }))
    stats.unmatched += int((has_geom & ~taken).sum())
    return pd.concat(out, ignore_index=True) if out else _empty()


def _tags_json(rows: list[tuple[str | None, ...]], keys: tuple[str, ...]) -> list[str]:
    """Per row, a sort_keys JSON object of its non-null values of ``keys`` (cached per combination)."""
    cache: dict[tuple[str | None, ...], str] = {}
    out = []
    for values in rows:
        text = cache.get(values)
        if text is None:
            text = cache[values] = json.dumps({k: v for k, v in zip(keys, values) if v is not None}, sort_keys=True)
        out.append(text)
    return out


def _fit(geoms: np.ndarray, kinds: np.ndarray, c: ClassSpec, first: np.ndarray,
         stats: LabelStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometries as class ``c`` burns them, their buffers (ground metres) and a keep mask.

    Area class: polygons (invalid ones repaired); other kinds are skipped. Line class: lines,
    polygon outlines, and points as discs of the class buffer."""
    geoms = geoms.copy()
    buf = np.zeros(len(geoms), dtype=np.float64)
    if c.kind == "area":
        keep = np.isin(kinds, _POLY)
        stats.wrong_geometry += int((~keep).sum())
        keep &= _repair(geoms, stats)
        return geoms, buf, keep
    poly, point = np.isin(kinds, _POLY), np.isin(kinds, _POINT)
    if poly.any():
        geoms[poly] = shapely.boundary(geoms[poly])
    keep = np.isin(kinds, _LINE) | poly | point
    stats.wrong_geometry += int((~keep).sum())
    buf[:] = [c.buffer_for({}) if v is None else _buffer_by_value(c, v) for v in first]
    if point.any():
        geoms[point] = _discs(geoms[point], buf[point])
        buf[point] = 0.0
    return geoms, buf, keep


def _buffer_by_value(c: ClassSpec, value: str) -> float:
    for v, b in c.buffer_m_by_value:
        if v == value:
            return b
    return c.buffer_m


def _discs(points: np.ndarray, radius_m: np.ndarray) -> np.ndarray:
    """Points (EPSG:4326) -> discs of ``radius_m`` ground metres (drawn in EPSG:3857)."""
    from pipeline.geo import mercator_scale, to_lonlat, to_mercator

    merc = to_mercator(points)
    scale = mercator_scale(shapely.get_y(shapely.centroid(merc)))
    return to_lonlat(shapely.buffer(merc, radius_m * scale, quad_segs=8))


def _repair(geoms: np.ndarray, stats: LabelStats) -> np.ndarray:
    """Make invalid polygons valid in place (polygonal parts only); returns a keep mask."""
    keep = np.ones(len(geoms), dtype=bool)
    if not len(geoms):
        return keep
    bad = np.flatnonzero(~shapely.is_valid(geoms))
    if len(bad):
        fixed = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
        polys = [polygonal_part(g) for g in fixed]
        for j, g in zip(bad, polys):
            geoms[j] = g
        empty = shapely.is_empty(np.array([*polys, None], dtype=object)[:-1])
        keep[bad[empty]] = False
        stats.repaired += int((~empty).sum())
        stats.dropped_invalid += int(empty.sum())
    return keep
