"""Street network of the synthetic town: a warped, rotated grid with roundabouts.

Streets are straight lines of a grid in a parameter plane (u, v); a smooth warp bends them
(some districts curved, some straight) and a rotation turns the town. Two streets that meet share
the exact same vertex (the warp of the same (u, v)), so the OSM ways share their junction nodes.
All coordinates are local metres (see :mod:`pipeline.synthetic.model`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, Polygon

from pipeline.synthetic.model import ROAD_HALF_WIDTH_M, SIDEWALK_M, Road

_SAMPLE_M = 10.0  # spacing of street vertices in the parameter plane
_ROUNDABOUT_R = 13.0  # centreline radius of a roundabout, metres
_NAMES = (
    "Alder", "Birch", "Cedar", "Dock", "Elm", "Fern", "Garden", "Harbour", "Iris", "Juniper", "Kiln",
    "Linden", "Maple", "Nettle", "Oak", "Poplar", "Quarry", "Rowan", "Spruce", "Tanner", "Union",
    "Vine", "Willow", "Yew", "Mill", "Chapel", "Bridge", "Meadow", "Orchard", "Station",
)


class Warp:
    """Smooth map from the parameter plane to local metres: sinusoidal bends whose amplitude
    fades in and out across the town, a rotation, and a shift to the image centre."""

    def __init__(self, rng: np.random.Generator, size_m: float) -> None:
        self.theta = float(rng.uniform(-0.6, 0.6))
        self.centre = size_m / 2
        self.amp = rng.uniform(6.0, 16.0, 2)
        self.wave = rng.uniform(500.0, 900.0, 2)
        self.phase = rng.uniform(0.0, 2 * math.pi, 2)
        ang = rng.uniform(0.0, 2 * math.pi)
        self.fade_dir = (math.cos(ang), math.sin(ang))
        self.fade_at = float(rng.uniform(-0.2, 0.2) * size_m)

    def __call__(self, u: NDArray[np.float64], v: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n,) u, v -> (n, 2) local metres."""
        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        fade = 0.5 * (1.0 + np.tanh((u * self.fade_dir[0] + v * self.fade_dir[1] - self.fade_at) / 150.0))
        uu = u + self.amp[0] * fade * np.sin(2 * math.pi * v / self.wave[0] + self.phase[0])
        vv = v + self.amp[1] * fade * np.sin(2 * math.pi * u / self.wave[1] + self.phase[1])
        c, s = math.cos(self.theta), math.sin(self.theta)
        return np.column_stack([self.centre + c * uu - s * vv, self.centre + s * uu + c * vv])

    def angle_u(self, u: float, v: float) -> float:
        """Direction (radians, from east) in which the u axis runs at (u, v)."""
        p = self(np.array([u, u + 1.0]), np.array([v, v]))
        return math.atan2(p[1, 1] - p[0, 1], p[1, 0] - p[0, 0])

    def angle_v(self, u: float, v: float) -> float:
        """Direction (radians, from east) in which the v axis runs at (u, v)."""
        p = self(np.array([u, u]), np.array([v, v + 1.0]))
        return math.atan2(p[1, 1] - p[0, 1], p[1, 0] - p[0, 0])

    def polygon(self, u0: float, u1: float, v0: float, v1: float, step: float = 5.0) -> Polygon:
        """The warped image of the parameter rectangle [u0, u1] x [v0, v1]."""
        nu, nv = max(2, math.ceil((u1 - u0) / step) + 1), max(2, math.ceil((v1 - v0) / step) + 1)
        us, vs = np.linspace(u0, u1, nu), np.linspace(v0, v1, nv)
        bu = np.concatenate([us, np.full(nv - 1, u1)[:], us[::-1][1:], np.full(nv - 1, u0)[:]])
        bv = np.concatenate([np.full(nu, v0), vs[1:], np.full(nu - 1, v1), vs[::-1][1:]])
        return Polygon(self(bu, bv))


@dataclass
class GridLine:
    """A straight street in the parameter plane: ``axis`` 0 holds u fixed (runs along v),
    axis 1 holds v fixed (runs along u), from ``a`` to ``b``."""

    axis: int
    fixed: float
    a: float
    b: float
    highway: str
    name: str


@dataclass
class Block:
    """A parameter-plane rectangle bounded by streets, its distance from the town centre (0..1),
    and the kerb distance (street half-width + sidewalk, metres) on its u0, u1, v0, v1 sides."""

    u0: float
    u1: float
    v0: float
    v1: float
    centrality: float
    kerb: tuple[float, float, float, float]


def kerb_m(highway: str) -> float:
    """Distance from a street's centreline to the edge of its sidewalk, metres."""
    return ROAD_HALF_WIDTH_M[highway] + SIDEWALK_M[highway]


@dataclass
class StreetPlan:
    """Streets (before clipping to the image), roundabout islands, and the blocks between streets."""

    warp: Warp
    roads: list[Road]
    islands: list[Polygon]
    blocks: list[Block]


def _positions(rng: np.random.Generator, half: float, lo: float, hi: float) -> NDArray[np.float64]:
    pos, p = [], -half - rng.uniform(0.0, 120.0)
    while p < half + 120.0:
        pos.append(p)
        p += rng.uniform(lo, hi)
    pos.append(p)
    return np.array(pos)


def _main_classes(rng: np.random.Generator, pos: NDArray[np.float64]) -> list[str]:
    out = [str(rng.choice(["secondary", "tertiary", "tertiary"])) for _ in pos]
    out[int(np.argmin(np.abs(pos)))] = "primary"
    return out


def plan_streets(rng: np.random.Generator, size_m: float) -> StreetPlan:
    """Lay out the street grid, its blocks and roundabouts for an image of ``size_m`` metres."""
    warp = Warp(rng, size_m)
    half = size_m / 2 * (abs(math.cos(warp.theta)) + abs(math.sin(warp.theta))) + 60.0
    us, vs = _positions(rng, half, 160.0, 240.0), _positions(rng, half, 160.0, 240.0)
    names = list(rng.permutation(len(_NAMES)))
    lines: list[GridLine] = []

    def name() -> str:
        k = len(lines)
        suffix = ("Street", "Road", "Lane", "Avenue", "Way")[(k // len(_NAMES)) % 5]
        return f"{_NAMES[names[k % len(_NAMES)]]} {suffix}"

    cu, cv = _main_classes(rng, us), _main_classes(rng, vs)
    for u, hw in zip(us, cu):
        lines.append(GridLine(0, float(u), float(vs[0]), float(vs[-1]), hw, name()))
    for v, hw in zip(vs, cv):
        lines.append(GridLine(1, float(v), float(us[0]), float(us[-1]), hw, name()))
    blocks: list[Block] = []
    for i in range(len(us) - 1):
        for j in range(len(vs) - 1):
            u0, u1, v0, v1 = float(us[i]), float(us[i + 1]), float(vs[j]), float(vs[j + 1])
            centrality = min(1.0, math.hypot((u0 + u1) / 2, (v0 + v1) / 2) / half)
            orient = rng.choice(3, p=[0.45, 0.45, 0.10])
            cuts = [v0, v1] if orient != 1 else [u0, u1]
            if orient < 2:
                span = (v1 - v0) if orient == 0 else (u1 - u0)
                n = max(0, round(span / rng.uniform(60.0, 85.0)) - 1)
                lo = cuts[0]
                inner = [lo + span * (k + 1) / (n + 1) + rng.uniform(-5.0, 5.0) for k in range(n)]
                cuts = [cuts[0], *inner, cuts[1]]
                hw = "residential" if rng.random() < 0.85 else "service"
                for c in inner:
                    if orient == 0:
                        lines.append(GridLine(1, c, u0, u1, hw, name()))
                    else:
                        lines.append(GridLine(0, c, v0, v1, hw, name()))
            else:
                hw = "residential"
            ku = [kerb_m(cu[i]), kerb_m(cu[i + 1])]
            kv = [kerb_m(cv[j]), kerb_m(cv[j + 1])]
            n_cut = len(cuts) - 1
            for k, (a, b) in enumerate(itertools.pairwise(cuts)):
                lo = (ku if orient == 1 else kv)[0] if k == 0 else kerb_m(hw)
                hi = (ku if orient == 1 else kv)[1] if k == n_cut - 1 else kerb_m(hw)
                if orient == 1:
                    blocks.append(Block(a, b, v0, v1, centrality, (lo, hi, kv[0], kv[1])))
                else:
                    blocks.append(Block(u0, u1, a, b, centrality, (ku[0], ku[1], lo, hi)))
    roads = [Road(_line_coords(warp, ln, lines), ln.highway, ln.name) for ln in lines]
    islands: list[Polygon] = []
    roads = _roundabouts(rng, warp, us, vs, roads, size_m, islands)
    return StreetPlan(warp, roads, islands, blocks)


def _line_coords(warp: Warp, ln: GridLine, lines: list[GridLine]) -> NDArray[np.float64]:
    """Vertices of ``ln``: regular samples plus every junction with a crossing line, exactly."""
    other = [m for m in lines if m.axis != ln.axis and m.a <= ln.fixed <= m.b and ln.a <= m.fixed <= ln.b]
    junctions = np.array(sorted({m.fixed for m in other} | {ln.a, ln.b}))
    n = max(2, math.ceil((ln.b - ln.a) / _SAMPLE_M) + 1)
    regular = np.linspace(ln.a, ln.b, n)
    gap = np.min(np.abs(regular[:, None] - junctions[None, :]), axis=1)
    t = np.union1d(junctions, regular[gap > 2.0])
    fixed = np.full(len(t), ln.fixed)
    return warp(fixed, t) if ln.axis == 0 else warp(t, fixed)


def _cut_at(coords: NDArray[np.float64], k: int, centre: NDArray[np.float64], r: float
            ) -> tuple[NDArray[np.float64], NDArray[np.float64], float, float]:
    """Split a polyline at vertex ``k`` (== centre) and trim it back to the circle of radius
    ``r``; returns the part before, the part after, and the angles of the two cut points."""
    d = np.hypot(*(coords - centre).T)
    i = k - 1
    while i > 0 and d[i] < r:
        i -= 1
    j = k + 1
    while j < len(coords) - 1 and d[j] < r:
        j += 1
    a_in = _circle_angle(coords[i], coords[i + 1], centre, r)
    a_out = _circle_angle(coords[j], coords[j - 1], centre, r)
    p_in = centre + r * np.array([math.cos(a_in), math.sin(a_in)])
    p_out = centre + r * np.array([math.cos(a_out), math.sin(a_out)])
    return np.vstack([coords[: i + 1], p_in]), np.vstack([p_out, coords[j:]]), a_in, a_out


def _circle_angle(p: NDArray[np.float64], q: NDArray[np.float64], c: NDArray[np.float64], r: float) -> float:
    """Angle (about ``c``) where segment p -> q (p outside, q inside the circle) crosses it."""
    d, f = q - p, p - c
    a, b, cc = float(d @ d), float(2 * f @ d), float(f @ f - r * r)
    t = (-b - math.sqrt(max(b * b - 4 * a * cc, 0.0))) / (2 * a)
    x = p + float(np.clip(t, 0.0, 1.0)) * d
    return math.atan2(x[1] - c[1], x[0] - c[0])


def _roundabouts(rng: np.random.Generator, warp: Warp, us: NDArray[np.float64], vs: NDArray[np.float64],
                 roads: list[Road], size_m: float, islands: list[Polygon]) -> list[Road]:
    """Replace a few main crossings inside the image by roundabouts (ring ways sharing the cut
    points of the streets that enter them)."""
    uu, vv = np.meshgrid(us[1:-1], vs[1:-1], indexing="ij")
    pts = warp(uu.ravel(), vv.ravel())
    inside = np.all((pts > 70.0) & (pts < size_m - 70.0), axis=1)
    cand = pts[inside]
    if len(cand) == 0:
        return roads
    area_km2 = size_m * size_m / 1e6
    n = min(len(cand), max(2, round(area_km2 * 1.5)))
    out = list(roads)
    for ci in sorted(rng.choice(len(cand), n, replace=False)):
        centre = cand[ci]
        angles: list[float] = []
        classes: list[str] = []
        nxt: list[Road] = []
        for road in out:
            hit = np.flatnonzero(np.all(road.coords == centre, axis=1))
            if road.junction is None and len(hit) == 1 and 0 < hit[0] < len(road.coords) - 1:
                before, after, a_in, a_out = _cut_at(road.coords, int(hit[0]), centre, _ROUNDABOUT_R)
                nxt += [Road(before, road.highway, road.name), Road(after, road.highway, road.name)]
                angles += [a_in, a_out]
                classes.append(road.highway)
            else:
                nxt.append(road)
        if len(angles) != 4:
            continue
        out = nxt
        regular = np.arange(0.0, 2 * math.pi, math.pi / 9)
        cut = np.mod(np.array(angles), 2 * math.pi)
        gap = np.min(np.abs(np.angle(np.exp(1j * (regular[:, None] - cut[None, :])))), axis=1)
        ring_a = np.sort(np.concatenate([regular[gap > 0.12], cut]))
        # reuse the exact cut points so that the streets and the ring share their nodes
        ring = centre + _ROUNDABOUT_R * np.column_stack([np.cos(ring_a), np.sin(ring_a)])
        for a in angles:
            ring[np.argmin(np.abs(ring_a - math.fmod(a + 2 * math.pi, 2 * math.pi)))] = (
                centre + _ROUNDABOUT_R * np.array([math.cos(a), math.sin(a)]))
        hw = "secondary" if "primary" in classes or "secondary" in classes else "tertiary"
        out.append(Road(np.vstack([ring, ring[:1]]), hw, "", junction="roundabout"))
        islands.append(shapely.Point(centre).buffer(_ROUNDABOUT_R - 6.5, quad_segs=8))
    return out


def clip_roads(roads: list[Road], size_m: float) -> list[Road]:
    """Clip streets to the image square; a street leaving and re-entering becomes several."""
    out: list[Road] = []
    for road in roads:
        line = LineString(road.coords)
        clipped = shapely.clip_by_rect(line, 0.0, 0.0, size_m, size_m)
        parts = shapely.get_parts(clipped)
        for part in parts:
            if isinstance(part, LineString) and part.length > 1.0:
                coords = np.asarray(part.coords)
                if road.junction and not clipped.equals(line):
                    out.append(Road(coords, road.highway, road.name))
                else:
                    out.append(Road(coords, road.highway, road.name, road.junction))
    return out
