"""The comparison's region figures, as additive parts a region compared block by block sums
(:mod:`pipeline.review.blocks`) and finishes: object precision / recall / F1 at ``score_iou``,
mean IoU of the pairs, area IoU, coverage counts (:func:`finish_partials`), and for line classes
correctness / completeness within a tolerance (:func:`line_figures`). Geometries in EPSG:3857
(lines given in EPSG:4326), lengths and areas summed in mercator units or ground metres as named.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import shapely

from pipeline.tiles.geo import mercator_scale, to_mercator


def _pair_overlap(pred: np.ndarray, osm: np.ndarray) -> float:
    """Sum of intersection areas over every intersecting (pred, osm) pair."""
    if len(pred) == 0 or len(osm) == 0:
        return 0.0
    i, j = shapely.STRtree(osm).query(pred, predicate="intersects")
    return float(shapely.area(shapely.intersection(pred[i], osm[j])).sum()) if len(i) else 0.0


def area_partials(pm: np.ndarray, om: np.ndarray, around: np.ndarray, v: np.ndarray, shifted: np.ndarray,
              score_iou: float) -> dict[str, float]:
    """The additive parts of one class's figures: predicted ``pm`` and OSM ``om`` polygons (EPSG:3857,
    those reported), the IoU ``v`` of their pairs and which are ``shifted``; the overlap of ``om``
    with every predicted polygon ``around`` them (no region-wide union is built)."""
    return {"predicted": len(pm), "osm": len(om), "matched": int((~shifted).sum()), "offset": int(shifted.sum()),
            "tp": int((v >= score_iou).sum()), "iou_sum": float(v.sum()), "inter": _pair_overlap(around, om),
            "area_pred": float(shapely.area(pm).sum()), "area_osm": float(shapely.area(om).sum())}


def merged_partials(parts: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """The partials of a region from those of its blocks, class by class: summed, but for
    ``tol_m`` (the same everywhere) and ``largest_m2`` (the largest OSM feature a block owns:
    the region's is their maximum)."""
    out: dict[str, dict[str, float]] = {}
    for part in parts:
        for name, f in part.items():
            sums = out.setdefault(name, {})
            for k, v in f.items():
                sums[k] = v if k == "tol_m" else max(sums.get(k, 0.0), v) if k == "largest_m2" else sums.get(k, 0.0) + v
    return out


def finish_partials(f: dict[str, float], score_iou: float) -> dict[str, Any]:
    """Region figures of one class (see the module docstring) from its summed :func:`area_partials`."""
    tp, n_pred, n_osm = int(f["tp"]), int(f["predicted"]), int(f["osm"])
    precision = tp / n_pred if n_pred else math.nan
    recall = tp / n_osm if n_osm else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    pairs = int(f["matched"] + f["offset"])
    union = f["area_pred"] + f["area_osm"] - f["inter"]
    return {
        "predicted": n_pred, "osm": n_osm, "matched": int(f["matched"]), "offset": int(f["offset"]),
        "tp_at_score_iou": tp, "precision": _r(precision), "recall": _r(recall), "f1": _r(f1),
        "mean_iou": _r(f["iou_sum"] / pairs) if pairs else None,
        "area_iou": _r(f["inter"] / union) if union > 0 else None,
        "covered": int(f["covered"]), "not_seen": int(f["not_seen"]), "unknown": int(f["unknown"]),
        "missing_in_osm": int(f["missing_in_osm"]), "seen_share": _r(f["seen"] / n_osm) if n_osm else None}


def line_figures(pred_4326: np.ndarray, osm_4326: np.ndarray, tol_m: float) -> dict[str, Any]:
    """Centrelines: correctness (share of predicted length within ``tol_m`` ground metres of an
    OSM line), completeness (share of OSM length within ``tol_m`` of a predicted line), and
    their lengths in km (ground)."""
    return finish_line_partials(line_partials(pred_4326, osm_4326, tol_m))


def line_partials(pred_4326: np.ndarray, osm_4326: np.ndarray, tol_m: float, own_pred: np.ndarray | None = None,
                  own_osm: np.ndarray | None = None) -> dict[str, float]:
    """The additive parts of :func:`line_figures` (ground metres) over the lines owned (``own_*``;
    all without), measured against all of the other side's lines given."""
    pm, om = to_mercator(pred_4326), to_mercator(osm_4326)
    out = {"tol_m": max(tol_m, 1.0), "pred_m": 0.0, "osm_m": 0.0, "pred_near_m": 0.0, "osm_near_m": 0.0}
    if len(pm) + len(om) == 0:
        return out
    mp = np.ones(len(pm), dtype=bool) if own_pred is None else np.asarray(own_pred, dtype=bool)
    mo = np.ones(len(om), dtype=bool) if own_osm is None else np.asarray(own_osm, dtype=bool)
    y = np.median(shapely.get_y(shapely.centroid(np.concatenate([pm, om]))))
    s = float(mercator_scale(float(y)))
    tol = max(tol_m, 1.0) * s
    out |= {"pred_m": float(shapely.length(pm[mp]).sum()) / s, "osm_m": float(shapely.length(om[mo]).sum()) / s}
    if len(pm) and len(om):  # (a side without lines: nothing lies near it)
        near_osm, near_pred = shapely.buffer(om, tol, cap_style="flat"), shapely.buffer(pm, tol, cap_style="flat")
        out |= {"pred_near_m": _length_within(pm[mp], near_osm) / s,
                "osm_near_m": _length_within(om[mo], near_pred) / s}
    return out


def finish_line_partials(f: dict[str, float]) -> dict[str, Any]:
    """:func:`line_figures` from summed :func:`line_partials`."""
    if not f["pred_m"] or not f["osm_m"]:
        return {"predicted_km": 0.0, "osm_km": 0.0, "correctness": None, "completeness": None}
    return {"predicted_km": round(f["pred_m"] / 1000, 3), "osm_km": round(f["osm_m"] / 1000, 3),
            "tolerance_m": f["tol_m"], "correctness": _r(f["pred_near_m"] / f["pred_m"]),
            "completeness": _r(f["osm_near_m"] / f["osm_m"])}


def _length_within(lines: np.ndarray, zones: np.ndarray) -> float:
    """The summed length of ``lines`` inside the union of ``zones``: each line against the union
    of the zones it meets only (one union of the region's zones, cut by every line, costs GEOS
    minutes at 25 km²)."""
    a, b = shapely.STRtree(zones).query(lines, predicate="intersects")
    order = np.argsort(a, kind="stable")
    a, b = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, a[1:] != a[:-1]]) if len(a) else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], len(a)].astype(np.int64)
    near = np.array([shapely.union_all(zones[b[i:j]]) for i, j in zip(starts.tolist(), ends.tolist())] + [None],
                    dtype=object)[:-1]
    return float(shapely.length(shapely.intersection(lines[a[starts]], near)).sum()) if len(near) else 0.0


def _r(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 4)
