"""GEOS operations that survive the rare TopologyException of a large region: element by element,
again on valid, snap-rounded input where the exact operation fails (found by the 25 km² runs:
nearly coincident edges in the comparison, a neck split and a polygon that rounding to 7 decimals
folds). Pure functions; shapely 2 and numpy; the coordinates' own units (EPSG:3857 metres or
degrees)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import shapely


def areal(g: shapely.Geometry) -> shapely.Geometry:
    """The valid polygonal part of ``g`` (``make_valid`` may add lines and points where a ring
    touches itself; an area overlay must not mix dimensions)."""
    parts = shapely.get_parts(shapely.make_valid(g))
    polys = parts[np.isin(shapely.get_type_id(parts), (3, 6))]
    return shapely.union_all(polys) if len(polys) else shapely.Polygon()


def overlay(op: Callable[..., Any], a: Any, b: Any, grid: float) -> Any:
    """``op(a, b)`` (a shapely overlay: intersection, difference, ...), element by element over
    arrays; where GEOS raises a TopologyException (nearly coincident edges in a large region),
    that element again on valid inputs snap-rounded to ``grid`` (the units of the coordinates)."""
    try:
        return op(a, b)
    except shapely.errors.GEOSException:
        if isinstance(a, shapely.Geometry) and isinstance(b, shapely.Geometry):
            return op(areal(a), areal(b), grid_size=grid)
    xs, ys = np.broadcast_arrays(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    out = np.empty(xs.shape, dtype=object)
    for k in np.ndindex(xs.shape):
        out[k] = overlay(op, xs[k], ys[k], grid)
    return out


def snap(geoms: np.ndarray, grid: float) -> np.ndarray:
    """``shapely.set_precision(geoms, grid)`` (valid output on a ``grid`` lattice), element by
    element where GEOS cannot snap a self-intersecting polygon as it is: that one made valid first
    (a ring that rounding folded into a bow tie becomes its two polygons)."""
    try:
        return np.asarray(shapely.set_precision(geoms, grid), dtype=object)
    except shapely.errors.GEOSException:
        pass
    out = np.empty(len(geoms), dtype=object)
    for k, g in enumerate(geoms):
        try:
            out[k] = shapely.set_precision(g, grid)
        except shapely.errors.GEOSException:
            out[k] = shapely.set_precision(areal(g), grid)
    return out
