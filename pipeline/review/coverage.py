"""Comparison by coverage: statuses that survive predictions merging touching buildings.

One-to-one matching breaks where a model outlines a row of touching buildings as one block:
the block matches at most one of them, so the others look "not seen" and the block looks
"missing". Coverage asks two questions instead, both in EPSG:3857 metres scaled to the ground:

- :func:`coverage`: how much of each OSM feature do the predicted polygons of its class cover,
  counting its parts within ``explain_m`` of them (an outline traced from other imagery sits a
  metre or two off the roof)? A feature covered at least ``[compare] seen_cover`` is seen
  (matched, even when one predicted block covers several features); less is ``not_seen``.
- :func:`unexplained`: which predicted area does no OSM feature explain? Each predicted polygon
  minus the OSM features near it (grown by ``explain_m``; a one-to-one partner also moved by
  the pair's offset), opened by ``open_m`` (slivers along misaligned outlines vanish, corners
  stay square), cut into its parts; parts of at least ``min_area_m2`` are the
  ``missing_in_osm`` candidates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import shapely
import shapely.affinity

from pipeline.tiles.geo import mercator_scale
from pipeline.vectors.robust import areal, overlay

#: snap-rounding grid (ground metres) of the overlays GEOS cannot do exactly
SNAP_M = 0.001


#: the one scale of a region compared block by block (:func:`region_scale`); None: each call's own
_REGION_SCALE: ContextVar[float | None] = ContextVar("region_scale", default=None)


@contextmanager
def region_scale(scale: float) -> Iterator[None]:
    """Within it, :func:`ground_scale` is ``scale`` (mercator metres per ground metre) whatever it
    is asked about: the blocks of a region (:mod:`pipeline.review.blocks`) measure in the same
    ground metres, so a feature on a block border comes out the same from either side."""
    token = _REGION_SCALE.set(scale)
    try:
        yield
    finally:
        _REGION_SCALE.reset(token)


def ground_scale(geoms: np.ndarray) -> float:
    """Mercator metres per ground metre at the median latitude of ``geoms`` (EPSG:3857), or the
    region's within :func:`region_scale`."""
    fixed = _REGION_SCALE.get()
    if fixed is not None:
        return fixed
    if len(geoms) == 0:
        return 1.0
    return float(mercator_scale(float(np.median(shapely.get_y(shapely.centroid(geoms))))))


def coverage(osm: np.ndarray, pred: np.ndarray, tol_m: float = 0.0) -> np.ndarray:
    """Share (0..1) of each OSM polygon's area covered by the predicted polygons grown by
    ``tol_m`` ground metres (EPSG:3857; mitre joins). Predicted polygons of one class do not
    overlap, so without a tolerance their intersections add up; grown ones may, so a feature
    that two or more reach is intersected with their union."""
    out = np.zeros(len(osm))
    if len(osm) == 0 or len(pred) == 0:
        return out
    s = ground_scale(osm)
    if tol_m > 0:
        pred = shapely.buffer(pred, tol_m * s, join_style="mitre")
    i, j = shapely.STRtree(pred).query(osm, predicate="intersects")
    if len(i):
        grid = SNAP_M * s
        several = np.bincount(i, minlength=len(osm)) > 1 if tol_m > 0 else np.zeros(len(osm), dtype=bool)
        one = ~several[i]
        inter = np.bincount(i[one], weights=shapely.area(overlay(shapely.intersection, osm[i[one]], pred[j[one]],
                                                                  grid)), minlength=len(osm)).astype(float)
        multi = np.flatnonzero(several[i])  # pairs of the features two or more grown polygons reach
        order = multi[np.argsort(i[multi], kind="stable")]
        for group in np.split(order, np.flatnonzero(np.diff(i[order])) + 1) if len(order) else []:
            a = int(i[group[0]])
            inter[a] = shapely.area(overlay(shapely.intersection, osm[a], _union(list(pred[j[group]]), grid), grid))
        out = inter / np.maximum(shapely.area(osm), 1e-12)
    return np.clip(out, 0.0, 1.0)


def unexplained(pred: np.ndarray, osm: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], shifts: np.ndarray,
                explain_m: float, open_m: float, min_area_m2: float) -> tuple[np.ndarray, np.ndarray]:
    """Parts of predicted polygons (EPSG:3857) that no OSM polygon explains: (parts, index of the
    predicted polygon each part comes from). ``pairs`` are one-to-one (pred, osm) indices and
    ``shifts`` (n, 2) the pairs' centroid offsets in mercator metres (pred minus osm); a partner
    moved by its offset explains its prediction only when their areas agree within 20 % (a
    shifted outline, not a mapped house whose unmapped annex pulls the centroid)."""
    if len(pred) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    s = ground_scale(pred)
    near = shapely.buffer(osm, explain_m * s, join_style="mitre") if explain_m > 0 else osm
    i, j = (shapely.STRtree(near).query(pred, predicate="intersects") if len(osm)
            else (np.empty(0, np.int64), np.empty(0, np.int64)))
    moved = {int(a): shapely.buffer(shapely.affinity.translate(osm[b], *shifts[k]), explain_m * s,
                                    join_style="mitre")
             for k, (a, b) in enumerate(zip(*pairs)) if _similar(pred[a], osm[b])}
    by_pred: dict[int, list[shapely.Geometry]] = {}
    for a, b in zip(i.tolist(), j.tolist()):
        by_pred.setdefault(a, []).append(near[b])
    rest = pred.copy()
    for a in sorted(set(by_pred) | set(moved)):
        cover = by_pred.get(a, []) + ([moved[a]] if a in moved else [])
        rest[a] = overlay(shapely.difference, pred[a], _union(cover, SNAP_M * s), SNAP_M * s)
    if open_m > 0:
        r = open_m * s
        rest = shapely.buffer(shapely.buffer(rest, -r, join_style="mitre"), r, join_style="mitre")
        rest = overlay(shapely.intersection, rest, pred, SNAP_M * s)  # opening never grows past the prediction
    parts, src = shapely.get_parts(rest, return_index=True)
    keep = (shapely.get_type_id(parts) == 3) & (shapely.area(parts) >= min_area_m2 * s * s)
    return parts[keep], src[keep].astype(np.int64)


def _union(geoms: list[shapely.Geometry], grid: float) -> shapely.Geometry:
    """Their union; snap-rounded to ``grid`` on valid inputs where GEOS cannot do it exactly."""
    try:
        return shapely.union_all(geoms)
    except shapely.errors.GEOSException:
        return shapely.union_all([areal(g) for g in geoms], grid_size=grid)


def _similar(a: shapely.Geometry, b: shapely.Geometry) -> bool:
    """True when the areas of ``a`` and ``b`` differ by at most 20 % of the larger."""
    x, y = shapely.area(a), shapely.area(b)
    return bool(min(x, y) >= 0.8 * max(x, y))
