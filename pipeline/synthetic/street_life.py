"""Street life along the town's roads: rows of trees and cars parked at the kerb (local metres)."""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, Polygon

from pipeline.synthetic.frame import CAR_COLORS, RGB, pick, trees_at
from pipeline.synthetic.model import Road


def _along(line: LineString, d: NDArray[np.float64]
           ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Points at distances ``d`` (m) along ``line``, the unit tangents there and the left normals."""
    p = shapely.get_coordinates(shapely.line_interpolate_point(line, d))
    q = shapely.get_coordinates(shapely.line_interpolate_point(line, d + 0.5))
    t = q - p
    t /= np.maximum(np.hypot(t[:, 0], t[:, 1]), 1e-9)[:, None]
    return p, t, np.column_stack([-t[:, 1], t[:, 0]])


def street_trees(rng: np.random.Generator, roads: list[Road], half: dict[str, float], side: dict[str, float],
                 density: float) -> list[tuple[float, ...]]:
    """Rows of trees along some streets, their crowns reaching over the carriageway."""
    out: list[tuple[float, ...]] = []
    for road in roads:
        if road.highway not in ("secondary", "tertiary", "residential") or rng.random() > 0.45 * min(density, 2.0):
            continue
        line = road.line
        spacing = rng.uniform(9.0, 14.0)
        d = np.arange(rng.uniform(3.0, 8.0), line.length - 3.0, spacing)
        if len(d) == 0:
            continue
        p, _, normal = _along(line, d)
        off = half[road.highway] + side[road.highway] * 0.5 + rng.uniform(-0.2, 0.6)
        for sgn in (-1.0, 1.0) if rng.random() < 0.6 else (float(rng.choice([-1.0, 1.0])),):
            xy = p + sgn * off * normal
            out += trees_at(rng, xy, 2.2, 3.8, 6.0, 12.0)
    return out


def street_cars(rng: np.random.Generator, roads: list[Road], half: dict[str, float]
                ) -> tuple[list[Polygon], list[RGB]]:
    """Cars parked along the kerb of some residential and tertiary streets."""
    cars: list[Polygon] = []
    colors: list[RGB] = []
    for road in roads:
        if road.highway not in ("residential", "tertiary") or road.junction or rng.random() > 0.5:
            continue
        line = road.line
        d = np.cumsum(rng.exponential(35.0, max(1, int(line.length / 20.0)))) + 10.0
        d = d[d < line.length - 10.0]
        if len(d) == 0:
            continue
        p, t, n = _along(line, d)
        sgn = rng.choice([-1.0, 1.0], len(d))[:, None]
        c = p + sgn * (half[road.highway] - 1.2) * n
        for ci, ti, ni in zip(c, t, n):
            corners = [ci + a * 2.2 * ti + b * 0.9 * ni for a, b in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
            cars.append(Polygon(corners))
            colors.append(pick(rng, CAR_COLORS))
    return cars, colors
