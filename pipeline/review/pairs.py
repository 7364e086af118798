"""One-to-one pairs of predicted and OSM polygons (EPSG:3857) and their offsets.

:func:`match` pairs by IoU (greedy, decreasing IoU, ties by index: deterministic);
:func:`paired` adds a second pass by centroid distance for small shifted buildings
(``[compare] max_offset_m``); :func:`centroid_shifts` and :func:`shifted_iou` say how far a pair
lies apart and how well a pure displacement explains it (:func:`is_offset`: ``offset_m`` and
``offset_gain``). Pure functions; shapely 2 and numpy.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from pipeline.config.compare import CompareSpec
from pipeline.model.metrics import iou
from pipeline.tiles.geo import mercator_scale


def match(pred: np.ndarray, osm: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching of EPSG:3857 polygons by IoU >= ``min_iou``: (pred index, osm index, IoU)."""
    if len(pred) == 0 or len(osm) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    tree = shapely.STRtree(osm)
    i, j = tree.query(pred, predicate="intersects")
    v = iou(pred[i], osm[j])
    ok = v >= min_iou
    i, j, v = i[ok], j[ok], v[ok]
    order = np.lexsort((j, i, -v))
    used_p: set[int] = set()
    used_o: set[int] = set()
    keep = []
    for k in order:
        a, b = int(i[k]), int(j[k])
        if a not in used_p and b not in used_o:
            used_p.add(a)
            used_o.add(b)
            keep.append(k)
    sel = np.asarray(keep, dtype=np.int64)
    return i[sel], j[sel], v[sel]


def _match_shifted(pm: np.ndarray, om: np.ndarray, i: np.ndarray, j: np.ndarray, v: np.ndarray,
                   max_offset_m: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Add one-to-one pairs of still unmatched polygons (EPSG:3857) whose centroids are within
    ``max_offset_m`` ground metres and whose areas differ by less than 2x, closest first."""
    rest_p = np.setdiff1d(np.arange(len(pm)), i)
    rest_o = np.setdiff1d(np.arange(len(om)), j)
    if len(rest_p) == 0 or len(rest_o) == 0:
        return i, j, v
    cp, co = shapely.centroid(pm[rest_p]), shapely.centroid(om[rest_o])
    reach = max_offset_m * float(mercator_scale(float(np.median(shapely.get_y(cp)))))
    a, b = shapely.STRtree(co).query(cp, predicate="dwithin", distance=reach)
    ap, ao = shapely.area(pm[rest_p[a]]), shapely.area(om[rest_o[b]])
    ok = np.minimum(ap, ao) >= 0.5 * np.maximum(ap, ao)
    a, b = a[ok], b[ok]
    dist = shapely.distance(cp[a], co[b])
    used_p: set[int] = set()
    used_o: set[int] = set()
    extra_p, extra_o = [], []
    for k in np.lexsort((b, a, dist)):
        if int(a[k]) not in used_p and int(b[k]) not in used_o:
            used_p.add(int(a[k]))
            used_o.add(int(b[k]))
            extra_p.append(rest_p[a[k]])
            extra_o.append(rest_o[b[k]])
    if not extra_p:
        return i, j, v
    ep, eo = np.asarray(extra_p, dtype=np.int64), np.asarray(extra_o, dtype=np.int64)
    return np.r_[i, ep], np.r_[j, eo], np.r_[v, iou(pm[ep], om[eo])]


def paired(pm: np.ndarray, om: np.ndarray, spec: CompareSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one pairs (pred index, osm index, IoU) by IoU, then (``max_offset_m``) by distance."""
    i, j, v = match(pm, om, spec.match_iou)
    if spec.max_offset_m > 0:
        i, j, v = _match_shifted(pm, om, i, j, v, spec.max_offset_m)
    return i, j, v


def is_offset(pairs: pd.DataFrame, spec: CompareSpec) -> np.ndarray:
    """Which one-to-one pairs are ``offset``: centroids more than ``offset_m`` apart and the OSM
    outline, moved by that offset, at least ``offset_gain`` better in IoU with the prediction."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=bool)
    far = pairs["offset_m"].to_numpy(dtype=float) > spec.offset_m
    gain = pairs["iou_shifted"].to_numpy(dtype=float) - pairs["iou"].to_numpy(dtype=float)
    return far & (gain >= spec.offset_gain - 1e-9)


def shifted_iou(pm: np.ndarray, om: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """IoU of each predicted polygon ``pm[k]`` with ``om[k]`` moved by ``shifts[k]`` (EPSG:3857
    metres, predicted minus OSM centroid): how well a pure displacement explains the pair."""
    if len(pm) == 0:
        return np.empty(0)
    coords, index = shapely.get_coordinates(om, return_index=True)
    moved = shapely.set_coordinates(np.array(om, dtype=object, copy=True), coords + shifts[index])
    return iou(pm, moved)


def centroid_shifts(pm: np.ndarray, om: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """The centroid offsets (n, 2; mercator metres, predicted minus OSM) of pairs ``(i, j)``."""
    pc, oc = shapely.centroid(pm[i]), shapely.centroid(om[j])
    return np.column_stack([shapely.get_x(pc) - shapely.get_x(oc), shapely.get_y(pc) - shapely.get_y(oc)])
