"""Dense quarters: terraced rows of houses and perimeter blocks (a ring of buildings around an
open courtyard) whose buildings share walls, each building its own footprint (its own OSM way).

A quarter is laid out in its block's frame (x along the street, y across, metres; see
:class:`~pipeline.synthetic.frame.Frame`) and each terrace run or ring moves to local metres
rigidly about one anchor, so walls shared in the frame stay shared exactly. :func:`densify`
picks the blocks: about :data:`DENSE_SHARE` of the town's building footprint area, from its own
seeded streams, so the other blocks stay as they were.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon

from pipeline.synthetic import shapes
from pipeline.synthetic.frame import (
    APARTMENT_ROOFS,
    HOUSE_ROOFS,
    RGB,
    SMALL_ROOFS,
    Candidate,
    Contents,
    Frame,
    pick,
    roof_color,
    trees_at,
)
from pipeline.synthetic.streets import Block, Warp

#: the share of the town's building footprint area in dense quarters, drawn per seed in this range
DENSE_SHARE = (0.2, 0.26)
_OVERSHOOT = 0.03  # a block that would push the share this far above the target is skipped
_MIN_BLOCK_M2 = 3000.0
_EDGE_M = 1.3  # clearance (metres) kept from the block's kerb-side edge

Placed = tuple[Polygon, tuple[float, float]]  # a frame-space shape and the anchor it moves with


@dataclass(frozen=True)
class _Quarter:
    """A quarter being laid out over frame ``f``: its random stream, the tree density, and what
    it holds so far (frame space): building candidates, trees and paved areas."""

    rng: np.random.Generator
    f: Frame
    density: float
    cands: list[Candidate] = field(default_factory=list)
    trees: list[tuple[float, ...]] = field(default_factory=list)
    paved: list[Placed] = field(default_factory=list)


def densify(seed: int, warp: Warp, regions: Sequence[tuple[Block, Polygon | MultiPolygon]], uses: Sequence[str],
            parts: list[Contents], density: float) -> list[int]:
    """Replace what some house and apartment blocks hold (``parts[k]``, local metres) by dense
    quarters, central blocks first, until about :data:`DENSE_SHARE` of the building footprint
    area is in them; perimeter blocks go where a block is whole, terraces anywhere (the first
    whole block chosen gets a perimeter block, the next one terraces). Returns the indices
    of the blocks replaced, sorted."""
    rng = np.random.default_rng([seed, 3])
    area = np.array([sum(c.geom.area for c in p.buildings) for p in parts], dtype=float)
    total = float(area.sum())
    target = float(rng.uniform(*DENSE_SHARE))
    ok = np.array([k for k, u in enumerate(uses) if u in ("houses", "apartments")
                   and regions[k][1].area >= _MIN_BLOCK_M2], dtype=np.int64)
    if not len(ok):
        return []
    centrality = np.array([regions[k][0].centrality for k in ok])
    order = ok[np.argsort(centrality + 0.35 * rng.random(len(ok)), kind="stable")]
    chosen: list[int] = []
    kinds: set[str] = set()
    dense = 0.0
    for k in order.tolist():
        if chosen and dense >= target * total:
            break
        f = Frame(warp, *regions[k])
        x0, y0, x1, y1 = f.bounds
        whole = regions[k][1].area >= 0.8 * (x1 - x0) * (y1 - y0)  # not cut by the image edge
        c = regions[k][0].centrality
        ring = whole and ("perimeter" not in kinds or ("terraces" in kinds and rng.random() < 0.8 - 0.5 * c))
        kind = "perimeter" if ring else "terraces"
        new = fill_quarter(np.random.default_rng([seed, 3, k]), f, kind, density)
        a = sum(b.geom.area for b in new.buildings)
        if a <= 0.0 or (chosen and (dense + a) / (total - area[k] + a) > target + _OVERSHOOT):
            continue
        parts[k] = new
        total += a - area[k]
        dense += a
        chosen.append(k)
        kinds.add(kind)
    return sorted(chosen)


def fill_quarter(rng: np.random.Generator, f: Frame, kind: str, density: float) -> Contents:
    """A dense quarter over frame ``f``: ``kind`` "perimeter" (rings around courtyards; terraces
    where the block is too shallow for a yard) or "terraces"; local metres."""
    q = _Quarter(rng, f, density)
    if kind == "perimeter":
        _perimeter(q)
    if not q.cands:
        _terraces(q)
    out = Contents()
    _keep(q, out)
    return out


def _tone(rng: np.random.Generator, base: RGB, spread: float = 0.06) -> RGB:
    """``base`` a little lighter or darker (8-bit RGB): neighbours' roofs of one build."""
    col = np.array(base, dtype=float) * rng.uniform(1.0 - spread, 1.0 + spread) + rng.normal(0.0, 2.5, 3)
    return (int(np.clip(col[0], 0, 255)), int(np.clip(col[1], 0, 255)), int(np.clip(col[2], 0, 255)))


def _split(rng: np.random.Generator, a: float, b: float, lo: float, hi: float) -> list[float]:
    """Cut [a, b] into pieces about ``lo``..``hi`` long; returns the cut positions, ends included."""
    cuts = [a]
    while b - cuts[-1] >= lo + hi:
        cuts.append(cuts[-1] + float(rng.uniform(lo, hi)))
    if b - cuts[-1] > hi and b - cuts[-1] >= 2 * lo:
        cuts.append((cuts[-1] + b) / 2)
    cuts.append(b)
    return cuts


def _terraces(q: _Quarter) -> None:
    """Rows of terraced houses (5-7.5 m fronts, runs of 4-9) along the block's streets, back
    gardens behind them; ridges run along the row (the renderer's gable ends are party walls)."""
    rng = q.rng
    x0, y0, x1, y1 = q.f.bounds
    fronts = (-1, 1) if y1 - y0 >= 34.0 else (int(rng.choice([-1, 1])),)
    mid = (y0 + y1) / 2 if len(fronts) == 2 else (y1 if fronts[0] < 0 else y0)
    for front in fronts:
        setback = float(rng.uniform(1.5, 4.5)) if rng.random() < 0.7 else _EDGE_M
        d0 = min(float(rng.uniform(8.0, 10.5)), abs(mid - (y0 if front < 0 else y1)) - setback - 4.0)
        if d0 < 6.5:
            continue
        x = x0 + float(rng.uniform(_EDGE_M, 5.0))
        while x + 20.0 < x1 - _EDGE_M:
            widths = rng.uniform(5.0, 7.5, int(rng.integers(4, 10)))
            cuts = np.concatenate([[x], x + np.cumsum(widths)])
            cuts = cuts[cuts <= x1 - _EDGE_M]
            if len(cuts) < 3:
                break
            _run(q, cuts, front, setback, d0, mid)
            x = float(cuts[-1]) + float(rng.uniform(3.0, 9.0))


def _run(q: _Quarter, cuts: np.ndarray, front: int, setback: float, d0: float, mid: float) -> None:
    """One terrace: houses between ``cuts`` (frame x), fronts ``setback`` from the street."""
    rng, density, cands, trees, paved = q.rng, q.density, q.cands, q.trees, q.paved
    _, y0, _, y1 = q.f.bounds
    face = y0 + setback if front < 0 else y1 - setback
    anchor = (float(cuts[0] + cuts[-1]) / 2, face - front * d0 / 2)
    roof = str(rng.choice(["gable", "hip", "flat"], p=[0.7, 0.18, 0.12]))
    base, height = roof_color(rng, HOUSE_ROOFS, "house"), float(rng.uniform(6.0, 9.0))
    for xa, xb in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
        d = d0 + (float(rng.uniform(-1.0, 3.0)) if rng.random() < 0.35 else 0.0)
        back = face - front * d
        ya, yb = min(face, back), max(face, back)
        color = pick(rng, HOUSE_ROOFS) if rng.random() < 0.12 else _tone(rng, base)
        cands.append(Candidate(shapes.rect(xa, ya, xb, yb), "rect", "house", roof,
                               height + float(rng.uniform(-0.4, 0.4)), color, anchor=anchor))
        garden = (back - front * 1.5, mid + front * 0.5)
        g0, g1 = min(garden), max(garden)
        if g1 - g0 > 6.0 and rng.random() < 0.15:
            sy = g0 + float(rng.uniform(1.5, g1 - g0 - 4.0))
            sx = xa + float(rng.uniform(0.5, max(0.6, xb - xa - 3.0)))
            cands.append(Candidate(shapes.rect(sx, sy, sx + 2.4, sy + 2.8), "rect", "shed", "flat", 2.4,
                                   roof_color(rng, SMALL_ROOFS, "shed"), anchor=anchor))
        n = int(rng.poisson(0.8 * density))
        if n and g1 > g0:
            xy = np.column_stack([rng.uniform(xa + 0.8, xb - 0.8, n), rng.uniform(g0, g1, n)])
            trees += trees_at(rng, xy, 1.6, 3.6, 4.0, 10.0)
    if rng.random() < 0.4:
        edge = y0 - 1.0 if front < 0 else y1 + 1.0
        paved.append((shapes.rect(float(cuts[0]), min(edge, face), float(cuts[-1]), max(edge, face)), anchor))


def _perimeter(q: _Quarter) -> None:
    """Perimeter blocks 45-85 m long along the block, lanes between them."""
    rng = q.rng
    x0, y0, x1, y1 = q.f.bounds
    setback = float(rng.uniform(_EDGE_M, 2.5))
    ya, yb = y0 + setback, y1 - setback
    wing = min(float(rng.uniform(10.0, 13.0)), (yb - ya - 10.0) / 2)
    if wing < 8.0:
        return
    x = x0 + float(rng.uniform(_EDGE_M, 4.0))
    while True:
        end = x + float(rng.uniform(45.0, 85.0))
        if x1 - _EDGE_M - end < 2 * wing + 16.0:
            end = min(x1 - _EDGE_M, x + 120.0)
        if end - x < 2 * wing + 10.0:
            return
        _ring(q, (x, ya, end, yb), wing)
        x = end + float(rng.uniform(4.0, 10.0))


def _ring(q: _Quarter, box: tuple[float, float, float, float], wing: float) -> None:
    """One perimeter block over ``box`` (frame metres): four corner buildings and wings of
    9-20 m wide buildings, ``wing`` metres deep, around a yard; shrunk until it fits the block."""
    rng, f, density, cands, trees, paved = q.rng, q.f, q.density, q.cands, q.trees, q.paved
    xa, ya, xb, yb = box
    anchor = ((xa + xb) / 2, (ya + yb) / 2)
    for _ in range(4):
        if f.inner.contains(f.place([shapes.rect(xa, ya, xb, yb)], [anchor])[0]):
            break
        xa, ya, xb, yb = xa + 1.0, ya + 0.6, xb - 1.0, yb - 0.6
    if min(xb - xa, yb - ya) < 2 * wing + 8.0:
        return
    style = str(rng.choice(["flat", "gable", "hip"], p=[0.45, 0.4, 0.15]))
    base = roof_color(rng, APARTMENT_ROOFS if style == "flat" else HOUSE_ROOFS, "apartments")
    height = float(rng.uniform(10.0, 17.0))
    units: list[tuple[Polygon, bool]] = [
        (shapes.rect(xa, ya, xa + wing, ya + wing), True), (shapes.rect(xb - wing, ya, xb, ya + wing), True),
        (shapes.rect(xb - wing, yb - wing, xb, yb), True), (shapes.rect(xa, yb - wing, xa + wing, yb), True),
    ]
    for axis in (0, 1):  # wings along x (street fronts), then along y (block ends)
        lo, hi = (xa + wing, xb - wing) if axis == 0 else (ya + wing, yb - wing)
        cuts = _split(rng, lo, hi, 9.0, 20.0)
        for k, (a, b) in enumerate(itertools.pairwise(cuts)):
            inner = 0 < k < len(cuts) - 2
            for side in (0, 1):
                deep = wing + (float(rng.uniform(-1.5, 2.0)) if inner and rng.random() < 0.5 else 0.0)
                if axis == 0:
                    r = shapes.rect(a, ya, b, ya + deep) if side == 0 else shapes.rect(a, yb - deep, b, yb)
                else:
                    r = shapes.rect(xa, a, xa + deep, b) if side == 0 else shapes.rect(xb - deep, a, xb, b)
                units.append((r, False))
    gate = int(rng.integers(4, len(units))) if len(units) > 4 and rng.random() < 0.12 else -1
    for k, (geom, corner) in enumerate(units):
        if k == gate:
            continue
        roof = "flat" if style == "flat" else ("hip" if corner or style == "hip" else "gable")
        use = "retail" if corner and rng.random() < 0.3 else "apartments"
        color = roof_color(rng, APARTMENT_ROOFS + HOUSE_ROOFS, use) if rng.random() < 0.15 else _tone(rng, base)
        cands.append(Candidate(geom, "rect", use, roof, height + float(rng.uniform(-2.0, 2.0)) + 1.5 * corner,
                               color, anchor=anchor))
    yard = shapes.rect(xa + wing + 2.5, ya + wing + 2.5, xb - wing - 2.5, yb - wing - 2.5)
    yx0, yy0, yx1, yy1 = yard.bounds
    if rng.random() < 0.35 and yx1 - yx0 > 10.0 and yy1 - yy0 > 4.0:  # a row of garages in the yard
        gx = yx0 + float(rng.uniform(0.0, yx1 - yx0 - 9.6))
        for i in range(3):
            cands.append(Candidate(shapes.rect(gx + 3.2 * i, yy0, gx + 3.2 * (i + 1), yy0 + 4.0),
                                   "rect", "garage", "flat", 2.6, roof_color(rng, SMALL_ROOFS, "garage"),
                                   anchor=anchor))
    outer = shapely.buffer(shapes.rect(xa, ya, xb, yb), 2.0, join_style="mitre")
    paved.append((outer if rng.random() < 0.5 else outer.difference(yard), anchor))
    n = int(rng.poisson(max(0.0, yard.area) / 120.0 * density))
    if n:
        xy = np.column_stack([rng.uniform(yx0, yx1, n), rng.uniform(yy0, yy1, n)])
        trees += trees_at(rng, xy, 2.0, 4.5, 6.0, 13.0)


def _keep(q: _Quarter, out: Contents) -> None:
    """Move the quarter to local metres; keep the buildings inside the block that overlap no
    earlier one (touching is what a quarter is for), the paving inside the block, and the trees."""
    f, cands, trees, paved = q.f, q.cands, q.trees, q.paved
    if cands:
        geoms = np.array(f.place([c.geom for c in cands], [c.anchor for c in cands]), dtype=object)
        ok = shapely.contains(f.inner, geoms) & shapely.is_valid(geoms)
        a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
        sel = a < b
        a, b = a[sel], b[sel]
        over = shapely.area(shapely.intersection(geoms[a], geoms[b])) > 1e-4
        for i, j in sorted(zip(a[over].tolist(), b[over].tolist())):
            if ok[i]:
                ok[j] = False
        for c, g, k in zip(cands, geoms, ok):
            if k:
                c.geom = shapely.orient_polygons(g)
                out.buildings.append(c)
    if paved:
        moved = shapely.intersection(np.array(f.place([p for p, _ in paved], [a for _, a in paved]), dtype=object),
                                     f.region)
        out.paved += [shapely.orient_polygons(p) for p in shapely.get_parts(moved)
                      if isinstance(p, Polygon) and p.area > 1.0]
    if trees:
        arr = np.array(trees)
        arr[:, :2] = f.points(arr[:, :2])
        inside = shapely.contains_xy(f.region, arr[:, 0], arr[:, 1])
        out.trees += [tuple(t) for t in arr[inside]]
