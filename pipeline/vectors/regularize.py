"""Building regularisation (right angles along a dominant orientation) that keeps the shape.

On by default for building classes (:func:`pipeline.vectors.vectorize.regularized_classes`), on
EPSG:3857 polygons; a regularised polygon replaces the raw one only when their IoU is at least
``min_iou``, so a regularised layer never drifts far from what was traced.

Two regularisers (``[vectorize] regularizer``):

* ``square`` (the default): :mod:`pipeline.vectors.square`, this project's own squaring, in numpy
  over all polygons at once. Own code, not a library, by measurement (``python -m
  bench.bench_regularize``, the demo's 517 traced buildings, one core): 0.09 ms of CPU per building
  against buildingregulariser's 2.3 ms (25x), 38 % of the buildings kept by the IoU gate against 16 %,
  median 4 vertices (p75 4) against 6 (p75 12); corners exactly 90 degrees.
* ``buildingregulariser``: the ``buildingregulariser`` library (edges snapped parallel/perpendicular
  to the polygon's main direction; pure Python per building, about 90 % of vectorising time at
  2,500 buildings per km²).
"""

from __future__ import annotations

import warnings

import numpy as np
import shapely

from pipeline.config.vectorize import REGULARIZERS
from pipeline.model.metrics import iou

#: kept above the IoU floor so that rounding lon/lat to 7 decimals (about 1 cm) cannot push a
#: small building's regularised outline below it
ROUNDING_SLACK = 0.01
#: buildingregulariser's ``diagonal_threshold_reduction`` at its maximum (22.5°): no 45° edges, so
#: every corner is square. (``allow_45_degree=False`` is worse: in buildingregulariser 0.2.5 it
#: turns the short diagonals that simplification leaves at corners into 0.6 m notches.)
DIAGONAL_REDUCTION_DEG = 22.5


def regularize(polys: np.ndarray, min_iou: float, scale: float = 1.0, pixel: float = 0.0,
               method: str = "square") -> np.ndarray:
    """Regularised copies of EPSG:3857 polygons; ``scale`` is mercator metres per ground metre,
    ``pixel`` the side of the traced pixels in mercator metres (tolerances: 1 ground metre for
    parallel edges; the first simplification 0.5 m or 1.5 pixels, whichever is larger, so pixel
    stairs never survive as edges). Polygons whose regularised form has IoU < ``min_iou`` with
    the raw one (or that do not square into one valid polygon) are kept raw."""
    raw = np.asarray(polys, dtype=object)
    if len(raw) == 0:
        return raw.copy()
    parallel, simplify = 1.0 * scale, max(0.5 * scale, 1.5 * pixel)
    if method in ("", "square"):
        from pipeline.vectors.square import square

        idx = np.arange(len(raw))
        cand = square(shapely.simplify(raw, simplify, preserve_topology=True), parallel)
        ok = cand != None  # noqa: E711 (an object array: None where the squaring failed)
        idx, cand = idx[ok], cand[ok]
    elif method == "buildingregulariser":
        idx, cand = _buildingregulariser(raw, parallel, simplify)
    else:
        raise ValueError(f"unknown regularizer {method!r}; one of {', '.join(REGULARIZERS)}")
    out = raw.copy()
    good = iou(cand, raw[idx]) >= min_iou + ROUNDING_SLACK
    out[idx[good]] = cand[good]
    return out


def _buildingregulariser(raw: np.ndarray, parallel: float, simplify: float) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the polygons buildingregulariser regularised into one valid polygon, and those."""
    import geopandas as gpd
    from buildingregulariser import regularize_geodataframe

    gdf = gpd.GeoDataFrame({"i": np.arange(len(raw))}, geometry=list(raw), crs="EPSG:3857")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reg = regularize_geodataframe(gdf, parallel_threshold=parallel, simplify_tolerance=simplify,
                                      allow_45_degree=True, diagonal_threshold_reduction=DIAGONAL_REDUCTION_DEG,
                                      allow_circles=False, num_cores=1)
    idx = reg["i"].to_numpy()
    cand = reg.geometry.to_numpy()
    ok = (shapely.get_type_id(cand) == 3) & shapely.is_valid(cand)
    idx, cand = idx[ok], cand[ok]
    _, first = np.unique(idx, return_index=True)  # one part per input (multi results: first part)
    return idx[first], cand[first]
