"""Labels from vector files (GeoJSON, GeoPackage, Shapefile, FlatGeobuf, GeoParquet, ...).

Section ``[labels]`` (:mod:`pipeline.config.labels`) names the files.

Classes match on the files' attributes with the OSM tag-filter syntax (``building=*``,
``class=road|track``; a null or empty attribute counts as absent); a class without ``tags``
takes every feature. Polygons go to area classes (invalid ones repaired with
``shapely.make_valid`` and counted), lines to line classes (buffered by ``buffer_m`` ground
metres downstream, exactly like OSM lines; polygons in a line class give their outline), and
points in a line class become discs of ``buffer_m`` ground metres. Geometries of a kind the
class cannot take are skipped and counted. Coordinates that are no longitude/latitude once read
(projected ones in a file without a CRS, say) are an error naming the file and ``[labels] crs``.

The output is the frame that :mod:`pipeline.labels.osm` makes (:data:`pipeline.labels.features.FEATURE_COLUMNS`
+ geometry, EPSG:4326): ``osm_type`` names the source (file name, ``:layer`` when given),
``osm_id`` is the feature's id (negative row numbers, -1 for the first row, where a feature has
no integer id), ``tags`` a JSON object of the attributes the classes read.

Here: loading and matching. Reading a file (layer, attributes, ids, CRS checks) is
:mod:`pipeline.labels.vector_file`; the repair, tags, sort and counts, shared with the OSM path, are
:func:`pipeline.labels.finish.finalise`. pyogrio/geopandas are imported lazily, so parsing the
config stays light.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.config.labels import LabelsConfig
from pipeline.config.region import ClassSpec, TagFilter
from pipeline.core.errors import ConfigError
from pipeline.labels.finish import LabelRows, finalise
from pipeline.labels.vector_file import needed_fields, read_label_file

__all__ = ["LabelStats", "LabelsConfig", "load_vector_labels"]  # LabelsConfig: the spec (labels_config)

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

log = logging.getLogger(__name__)
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
    stats = LabelStats()
    value_class = _value_classes(lcfg, classes)
    parts: list[LabelRows] = []
    for p in lcfg.paths:
        frame, source = read_label_file(p, lcfg, classes)
        stats.files[source] = len(frame)
        parts += _match(frame, source, lcfg, classes, value_class, stats)
    out = finalise(LabelRows.concat(parts), classes, stats)
    for name, n in stats.rows_per_class.items():
        if n == 0:
            log.warning("labels: class %r matches none of the %d features of %s (per file: %s); check its tags "
                        "or labels.values", name, sum(stats.files.values()),
                        ", ".join(str(p) for p in lcfg.paths), stats.files)
    return out, stats


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
           value_class: Mapping[str, str], stats: LabelStats) -> list[LabelRows]:
    """Rows of one file -> feature rows, per class (one per (feature, class)), geometries fitted
    to the class kind."""
    geoms = frame["geometry"].to_numpy(dtype=object)
    has_geom = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    stats.missing_geometry += int((~has_geom).sum())
    kinds = shapely.get_type_id(geoms)
    keys = needed_fields(lcfg, classes)
    text = {k: _text(frame[k]) for k in keys}
    masks = _class_masks(text, len(frame), lcfg, classes, value_class, stats)
    tags = _tag_dicts(text, keys, len(frame))
    ids = frame["_id"].to_numpy()
    taken = np.zeros(len(frame), dtype=bool)
    out = []
    for i, (c, (matched, first)) in enumerate(zip(classes, masks)):
        take = matched & has_geom
        taken |= take
        idx = np.flatnonzero(take)
        g, buf, ok = _fit(geoms[idx], kinds[idx], c, first[idx], stats)
        idx = idx[ok]
        out.append(LabelRows(np.full(len(idx), source, dtype=object), ids[idx], np.full(len(idx), i, dtype=np.intp),
                             buf[ok], tags[idx], g[ok]))
    stats.unmatched += int((has_geom & ~taken).sum())
    return out


def _tag_dicts(text: Mapping[str, np.ndarray], keys: list[str], n: int) -> np.ndarray:
    """Per row, a dict of its non-null values of ``keys``; rows with equal values share one dict."""
    cache: dict[tuple[str | None, ...], dict[str, str]] = {}
    out = np.empty(n, dtype=object)
    rows = zip(*(text[k] for k in keys)) if keys else [()] * n
    for r, values in enumerate(rows):
        d = cache.get(values)
        if d is None:
            d = cache[values] = {k: v for k, v in zip(keys, values) if v is not None}
        out[r] = d
    return out


def _fit(geoms: np.ndarray, kinds: np.ndarray, c: ClassSpec, first: np.ndarray,
         stats: LabelStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Geometries as class ``c`` burns them, their buffers (ground metres) and a keep mask.

    Area class: polygons (invalid ones are repaired by finalise); other kinds are skipped. Line
    class: lines, polygon outlines, and points as discs of the class buffer."""
    geoms = geoms.copy()
    buf = np.zeros(len(geoms), dtype=np.float64)
    if c.kind == "area":
        keep = np.isin(kinds, _POLY)
        stats.wrong_geometry += int((~keep).sum())
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
    from pipeline.tiles.geo import mercator_scale, to_lonlat, to_mercator

    merc = to_mercator(points)
    scale = mercator_scale(shapely.get_y(shapely.centroid(merc)))
    return to_lonlat(shapely.buffer(merc, radius_m * scale, quad_segs=8))


