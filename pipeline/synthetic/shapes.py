"""Building footprints (rectangles, L and U shapes, courtyard blocks) and small helpers, in a
block's own axis-aligned frame (metres)."""

from __future__ import annotations

import math

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import Polygon

#: at most this many edges per footprint (the renderer's roof shading relies on it)
MAX_EDGES = 8


def rect(x0: float, y0: float, x1: float, y1: float) -> Polygon:
    return shapely.box(x0, y0, x1, y1)


def l_shape(x0: float, y0: float, x1: float, y1: float, cut_x: float, cut_y: float, corner: int) -> Polygon:
    """Rectangle minus a corner rectangle of ``cut_x`` x ``cut_y``; corner 0..3 = NE, NW, SW, SE."""
    pts = [(x0, y0), (x1, y0), (x1, y1 - cut_y), (x1 - cut_x, y1 - cut_y), (x1 - cut_x, y1), (x0, y1)]
    return _mirror(Polygon(pts), x0, y0, x1, y1, corner in (1, 2), corner in (2, 3))


def u_shape(x0: float, y0: float, x1: float, y1: float, arm: float, notch: float, back_up: bool) -> Polygon:
    """Rectangle with a notch ``notch`` deep between two arms ``arm`` wide, open to the back."""
    pts = [(x0, y0), (x1, y0), (x1, y1), (x1 - arm, y1), (x1 - arm, y1 - notch),
           (x0 + arm, y1 - notch), (x0 + arm, y1), (x0, y1)]
    return _mirror(Polygon(pts), x0, y0, x1, y1, False, not back_up)


def courtyard(x0: float, y0: float, x1: float, y1: float, wing: float) -> Polygon:
    """A perimeter block: the rectangle with a courtyard ``wing`` metres in from every side."""
    hole = shapely.box(x0 + wing, y0 + wing, x1 - wing, y1 - wing)
    return Polygon(shapely.box(x0, y0, x1, y1).exterior.coords, [hole.exterior.coords])


def _mirror(p: Polygon, x0: float, y0: float, x1: float, y1: float, fx: bool, fy: bool) -> Polygon:
    if not (fx or fy):
        return p
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return shapely.transform(
        p, lambda c: np.column_stack([2 * cx - c[:, 0] if fx else c[:, 0], 2 * cy - c[:, 1] if fy else c[:, 1]])
    )


def rotate_about(geoms: NDArray[np.object_], angle: float, cx: float, cy: float) -> NDArray[np.object_]:
    """Rotate geometries (an object array) by ``angle`` radians counter-clockwise about (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)

    def fn(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        x, y = xy[:, 0] - cx, xy[:, 1] - cy
        return np.column_stack([cx + c * x - s * y, cy + s * x + c * y])

    return shapely.transform(np.asarray(geoms, dtype=object), fn)


def blob(cx: float, cy: float, ax: float, ay: float, rng: np.random.Generator, n: int = 48) -> Polygon:
    """A smooth irregular closed shape around (cx, cy) with semi-axes about ``ax`` x ``ay``."""
    phi = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    r = np.ones(n)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0.0, 0.09) * np.cos(k * phi + rng.uniform(0.0, 2 * math.pi))
    return Polygon(np.column_stack([cx + ax * r * np.cos(phi), cy + ay * r * np.sin(phi)]))
