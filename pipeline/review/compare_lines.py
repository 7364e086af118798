"""Change layers for LINE classes (roads): predicted centrelines that OSM lacks, and OSM ways the
model does not see.

For one line class (``kind = "line"``), with predicted centrelines and OSM lines both in EPSG:4326:

- ``missing``: the parts of predicted centrelines farther than ``tol_m`` ground metres from every
  OSM line of the class (each predicted line minus the round buffer of its nearby OSM lines),
  merged into pieces (``shapely.line_merge``, direction kept); pieces shorter than
  ``min_length_m`` ground metres are dropped. Each piece carries the ``prob_mean`` and
  ``prob_max`` of the predicted line it comes from and its ``length_m``.
- ``not_seen``: OSM ways whose share of length within ``tol_m`` of a predicted line
  (``coverage``, 0..1) is below ``seen_cover``, as the way's own geometry; ways shorter than
  ``min_length_m`` are not reported.

Geometry work happens in EPSG:3857; distances and lengths are turned into ground metres with one
mercator scale at the median latitude of the inputs (:func:`pipeline.review.coverage.ground_scale`),
exact to 0.1 % over a few kilometres. Outputs are EPSG:4326 (RFC 7946, 7 decimals). Only nearby
lines are unioned (an STRtree query per line), so the work grows with the number of lines, not
with the size of a region-wide union.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import shapely

from pipeline.config.region import ClassSpec
from pipeline.review.coverage import ground_scale
from pipeline.tiles.geo import to_mercator
from pipeline.vectors.finish import output_lonlat

if TYPE_CHECKING:
    import geopandas as gpd

#: columns of the ``missing`` rows (``geometry``: EPSG:4326 LineString)
MISSING_COLUMNS = ("class", "prob_mean", "prob_max", "length_m", "geometry")
#: columns of the ``not_seen`` rows (``geometry``: the OSM way, EPSG:4326)
NOT_SEEN_COLUMNS = ("class", "osm_type", "osm_id", "coverage", "length_m", "geometry")
_QUAD_SEGS = 8  # round buffers: 8 segments per quarter circle, within 2 % of the true distance


def compare_lines(pred: gpd.GeoDataFrame, osm: gpd.GeoDataFrame, c: ClassSpec, tol_m: float,
                  min_length_m: float, seen_cover: float, context: gpd.GeoDataFrame | None = None
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(missing, not_seen) rows of line class ``c`` (see the module doc). ``context``: OSM lines
    reaching into the compared tiles from outside them: they explain predicted lines near them
    (no missing piece along a mapped road that leaves the imagery) but are never not seen.

    ``pred``: predicted centrelines (EPSG:4326; columns ``class``, ``prob_mean``, ``prob_max``,
    geometry); ``osm``: OSM lines (EPSG:4326; columns ``class``, ``osm_type``, ``osm_id``,
    geometry). Rows of another class are ignored. ``tol_m`` and ``min_length_m`` are ground
    metres, ``seen_cover`` a share in (0, 1]. Rows are in a fixed order (missing: west to east
    by first vertex, then south to north; not_seen: by OSM type and id); empty inputs give empty
    frames with the same columns.
    """
    if not tol_m > 0:
        raise ValueError(f"compare_lines: tol_m must be > 0 ground metres, got {tol_m}")
    if not min_length_m >= 0:
        raise ValueError(f"compare_lines: min_length_m must be >= 0 ground metres, got {min_length_m}")
    if not 0 < seen_cover <= 1:
        raise ValueError(f"compare_lines: seen_cover must be in (0, 1], got {seen_cover}")
    p, pm = _lines(pred, c.name)
    o, om = _lines(osm, c.name)
    cm = _lines(context, c.name)[1] if context is not None else np.empty(0, dtype=object)
    s = ground_scale(np.concatenate([pm, om]))
    return (_missing(c.name, p, pm, np.concatenate([om, cm]), tol_m * s, min_length_m * s, s),
            _not_seen(c.name, o, om, pm, tol_m * s, min_length_m * s, s, seen_cover))


def _lines(df: gpd.GeoDataFrame, name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of class ``name`` with a non-empty geometry (``geometry``: as given, EPSG:4326), and
    their lines in EPSG:3857 (polygons: their outlines)."""
    if len(df) == 0:
        return pd.DataFrame({"geometry": np.empty(0, dtype=object)}), np.empty(0, dtype=object)
    g = np.asarray(df.geometry.to_numpy(), dtype=object)
    keep = ~(shapely.is_missing(g) | shapely.is_empty(g))
    if "class" in df.columns:
        keep &= (df["class"] == name).to_numpy()
    rows = pd.DataFrame(df.drop(columns=df.geometry.name)).iloc[np.flatnonzero(keep)].reset_index(drop=True)
    rows["geometry"] = g[keep]
    geoms = to_mercator(g[keep])
    polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
    geoms[polygonal] = shapely.boundary(geoms[polygonal])
    return rows, geoms


def _near(lines: np.ndarray, others: np.ndarray, tol: float) -> np.ndarray:
    """For each of ``lines``: the union of the round ``tol`` buffers (mercator metres) of the
    ``others`` within ``tol`` of it (an empty polygon when none is)."""
    out = np.full(len(lines), shapely.Polygon(), dtype=object)
    if len(lines) == 0 or len(others) == 0:
        return out
    i, j = shapely.STRtree(others).query(lines, predicate="dwithin", distance=tol)
    if len(i) == 0:
        return out
    buffers = shapely.buffer(others, tol, quad_segs=_QUAD_SEGS)
    order = np.lexsort((j, i))
    i, j = i[order], j[order]
    starts = np.flatnonzero(np.r_[True, i[1:] != i[:-1]])
    for a, b in zip(starts, np.r_[starts[1:], len(i)]):
        out[i[a]] = shapely.union_all(buffers[j[a:b]])
    return out


def _missing(name: str, p: pd.DataFrame, pm: np.ndarray, om: np.ndarray, tol: float, min_len: float,
             s: float) -> pd.DataFrame:
    """Pieces of predicted lines farther than ``tol`` (mercator metres) from every OSM line."""
    rest = shapely.difference(pm, _near(pm, om, tol)) if len(pm) else np.empty(0, dtype=object)
    merged = shapely.line_merge(rest, directed=True) if len(rest) else rest
    parts, src = shapely.get_parts(merged, return_index=True)
    lines = np.isin(shapely.get_type_id(parts), (1,)) if len(parts) else np.zeros(0, dtype=bool)
    parts, src = parts[lines], src[lines]
    long = shapely.length(parts) >= max(min_len, 1e-9)
    parts, src = parts[long], src[long]
    first = shapely.get_point(parts, 0)
    order = np.lexsort((shapely.length(parts), np.round(shapely.get_y(first), 3), np.round(shapely.get_x(first), 3)))
    parts, src = parts[order], src[order]
    return pd.DataFrame({
        "class": pd.Series([name] * len(parts), dtype=object),
        "prob_mean": _floats(p, "prob_mean", src), "prob_max": _floats(p, "prob_max", src),
        "length_m": np.round(shapely.length(parts) / s, 2),
        "geometry": output_lonlat(parts) if len(parts) else np.empty(0, dtype=object)}, columns=list(MISSING_COLUMNS))


def _not_seen(name: str, o: pd.DataFrame, om: np.ndarray, pm: np.ndarray, tol: float, min_len: float, s: float,
              seen_cover: float) -> pd.DataFrame:
    """OSM ways whose length within ``tol`` (mercator metres) of a predicted line is below ``seen_cover``."""
    length = shapely.length(om) if len(om) else np.empty(0)
    near = shapely.length(shapely.intersection(om, _near(om, pm, tol))) if len(om) else np.empty(0)
    cover = np.clip(near / np.maximum(length, 1e-12), 0.0, 1.0)
    idx = np.flatnonzero((cover < seen_cover) & (length >= max(min_len, 1e-9)))
    types = o["osm_type"].to_numpy()[idx] if len(idx) else np.empty(0, dtype=object)
    ids = o["osm_id"].to_numpy()[idx] if len(idx) else np.empty(0, dtype=np.int64)
    order = np.lexsort((ids, types.astype(str))) if len(idx) else np.empty(0, dtype=np.int64)
    idx = idx[order]
    return pd.DataFrame({
        "class": pd.Series([name] * len(idx), dtype=object),
        "osm_type": o["osm_type"].to_numpy()[idx] if len(idx) else pd.Series([], dtype=object),
        "osm_id": o["osm_id"].to_numpy()[idx] if len(idx) else pd.Series([], dtype=np.int64),
        "coverage": np.round(cover[idx], 4), "length_m": np.round(length[idx] / s, 2),
        "geometry": o["geometry"].to_numpy()[idx] if len(idx) else np.empty(0, dtype=object)},
        columns=list(NOT_SEEN_COLUMNS))


def _floats(p: pd.DataFrame, col: str, src: np.ndarray) -> np.ndarray:
    """Column ``col`` of ``p`` at rows ``src`` as floats (NaN where the column is absent)."""
    if col not in p.columns:
        return np.full(len(src), np.nan)
    return p[col].to_numpy(dtype=float)[src] if len(src) else np.empty(0)
