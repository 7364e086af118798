"""Building regularisation (right angles along a dominant orientation) that keeps the shape.

Uses ``buildingregulariser`` (edges snapped parallel/perpendicular to the polygon's main
direction, never diagonal) on EPSG:3857 polygons; on by default for building classes
(:func:`pipeline.vectors.vectorize.regularized_classes`); a regularised polygon replaces the raw one only when their
IoU is at least ``min_iou``, so a regularised layer never drifts far from what was traced.
"""

from __future__ import annotations

import warnings

import numpy as np
import shapely

from pipeline.model.metrics import iou

#: kept above the IoU floor so that rounding lon/lat to 7 decimals (about 1 cm) cannot push a
#: small building's regularised outline below it
ROUNDING_SLACK = 0.01
#: buildingregulariser's ``diagonal_threshold_reduction`` at its maximum (22.5°): no 45° edges, so
#: every corner is square. (``allow_45_degree=False`` is worse: in buildingregulariser 0.2.5 it
#: turns the short diagonals that simplification leaves at corners into 0.6 m notches.)
DIAGONAL_REDUCTION_DEG = 22.5


def regularize(polys: np.ndarray, min_iou: float, scale: float = 1.0, pixel: float = 0.0) -> np.ndarray:
    """Regularised copies of EPSG:3857 polygons; ``scale`` is mercator metres per ground metre,
    ``pixel`` the side of the traced pixels in mercator metres (tolerances: 1 ground metre for
    parallel edges; the first simplification 0.5 m or 1.5 pixels, whichever is larger, so pixel
    stairs never survive as edges). Polygons whose regularised form has IoU < ``min_iou`` with
    the raw one are kept raw."""
    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    raw = np.asarray(polys, dtype=object)
    if len(raw) == 0:
        return raw.copy()
    gdf = gpd.GeoDataFrame({"i": np.arange(len(raw))}, geometry=list(raw), crs="EPSG:3857")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = regularize_geodataframe(gdf, parallel_threshold=1.0 * scale,
                                      simplify_tolerance=max(0.5 * scale, 1.5 * pixel),
                                      allow_45_degree=True, diagonal_threshold_reduction=DIAGONAL_REDUCTION_DEG,
                                      allow_circles=False, num_cores=1)
    out = raw.copy()
    idx = reg["i"].to_numpy()
    cand = reg.geometry.to_numpy()
    ok = (shapely.get_type_id(cand) == 3) & shapely.is_valid(cand)
    idx, cand = idx[ok], cand[ok]
    _, first = np.unique(idx, return_index=True)  # one part per input (multi results: first part)
    idx, cand = idx[first], cand[first]
    good = iou(cand, raw[idx]) >= min_iou + ROUNDING_SLACK
    out[idx[good]] = cand[good]
    return out
