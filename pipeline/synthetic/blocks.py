"""Fill the town's blocks: houses, apartment blocks, industry, shops with car parks, parks with
trees, footpaths and lakes. Each block is filled in its own frame (rotated so that its long
side runs along x), in local metres."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.ops import polylabel

from pipeline.synthetic import shapes
from pipeline.synthetic.frame import (
    APARTMENT_ROOFS,
    CAR_COLORS,
    HOUSE_ROOFS,
    INDUSTRY_ROOFS,
    SMALL_ROOFS,
    Candidate,
    Contents,
    Frame,
    pick,
    roof_color,
    trees_at,
)
from pipeline.synthetic.model import Area, Road
from pipeline.synthetic.streets import Block, Warp


class _Row(NamedTuple):
    """A row of lots across the block depth, from ``ya`` to ``yb``; ``front`` -1 (street
    below), +1 (street above) or 0 (no street)."""

    ya: float
    yb: float
    front: int


def _rows(rng: np.random.Generator, y0: float, y1: float, lo: float, hi: float) -> list[_Row]:
    """Rows of lots across the block depth: (ya, yb, front) with front -1 (street below),
    +1 (street above) or 0 (no street)."""
    n = max(1, round((y1 - y0) / rng.uniform(lo, hi)))
    h = (y1 - y0) / n
    rows = []
    for r in range(n):
        front = -1 if r == 0 else (1 if r == n - 1 else 0)
        if n == 1:
            front = -1 if rng.random() < 0.5 else 1
        rows.append(_Row(y0 + r * h, y0 + (r + 1) * h, front))
    return rows


def _lots(rng: np.random.Generator, x0: float, x1: float, lo: float, hi: float) -> list[tuple[float, float]]:
    out, x = [], x0 + rng.uniform(0.0, 4.0)
    while x < x1 - lo * 0.6:
        w = rng.uniform(lo, hi)
        out.append((x, min(x + w, x1)))
        x += w
    return out


def _driveway(cands: list[Candidate], x0: float, x1: float, lo: float, hi: float, row: _Row,
              house: bool = False) -> None:
    """A paved strip from the street side of the lot (in ``row``) to the building just added
    (spanning ``lo``..``hi`` across the row)."""
    ya, yb, front = row
    if front == 0:
        return
    parent = len(cands) - 1
    y0, y1 = (ya - 0.5, lo + (1.0 if house else 0.0)) if front < 0 else (hi - (1.0 if house else 0.0), yb + 0.5)
    if y1 - y0 > 1.0:
        cands.append(Candidate(shapes.rect(x0, y0, x1, y1), "rect", "driveway", "flat", 0.0, (0, 0, 0),
                               parent=parent))


def _span(rng: np.random.Generator, lo: float, hi: float) -> float:
    """Uniform in [lo, hi], or ``lo`` when the range is empty."""
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def _anchor(cands: list[Candidate]) -> None:
    """Give the candidates of the lot just finished (those without an anchor) a shared anchor."""
    todo = [c for c in cands if c.anchor is None]
    if todo:
        x0, y0, x1, y1 = shapely.total_bounds([c.geom for c in todo])
        for c in todo:
            c.anchor = ((x0 + x1) / 2, (y0 + y1) / 2)


def _front_y(ya: float, yb: float, d: float, front: int, setback: float) -> float:
    if front < 0:
        return ya + setback
    if front > 0:
        return yb - setback - d
    return ya + (yb - ya - d) / 2


def _houses(rng: np.random.Generator, f: Frame, density: float) -> tuple[list[Candidate], list[tuple[float, ...]]]:
    x0, y0, x1, y1 = f.bounds
    cands: list[Candidate] = []
    trees: list[tuple[float, ...]] = []
    for row in _rows(rng, y0, y1, 24.0, 32.0):
        ya, yb, front = row
        for xa, xb in _lots(rng, x0, x1, 13.0, 20.0):
            _anchor(cands)
            lw, ld = xb - xa, yb - ya
            w, d = min(lw - 4.0, rng.uniform(8.0, 13.5)), min(ld - 6.0, rng.uniform(7.5, 11.5))
            if w < 6.0 or d < 6.0:
                continue
            hy = _front_y(ya, yb, d, front, rng.uniform(3.0, 7.0))
            hx = xa + _span(rng, 2.0, lw - w - 2.0)
            if rng.random() < 0.35 and w > 8.0 and d > 7.0:
                corner = int(rng.choice([0, 1] if front <= 0 else [2, 3]))
                geom = shapes.l_shape(hx, hy, hx + w, hy + d, w * rng.uniform(0.35, 0.55),
                                      d * rng.uniform(0.35, 0.55), corner)
                shape, roof = "L", ("hip" if rng.random() < 0.8 else "flat")
            else:
                geom, shape = shapes.rect(hx, hy, hx + w, hy + d), "rect"
                roof = str(rng.choice(["gable", "hip", "flat"], p=[0.55, 0.35, 0.10]))
            cands.append(Candidate(geom, shape, "house", roof, rng.uniform(5.0, 9.0),
                                   roof_color(rng, HOUSE_ROOFS, "house")))
            gx = hx + w + 1.2
            if rng.random() < 0.35 and xb - gx >= 4.5:
                gy = hy + (rng.uniform(1.0, 4.0) if front <= 0 else d - 6.0 - rng.uniform(1.0, 4.0))
                cands.append(Candidate(shapes.rect(gx, gy, gx + 3.2, gy + 6.0), "rect", "garage", "flat",
                                       2.8, roof_color(rng, SMALL_ROOFS, "garage")))
                _driveway(cands, gx, gx + 3.2, gy, gy + 6.0, row)
            else:
                dx = hx + w * rng.uniform(0.1, 0.6)
                _driveway(cands, dx, dx + 3.0, hy, hy + d, row, house=True)
            back = (hy + d + 2.0, yb - 1.0) if front <= 0 else (ya + 1.0, hy - 2.0)
            if rng.random() < 0.15 and back[1] - back[0] > 4.5:
                sx = xa + _span(rng, 1.0, lw - 4.0)
                sy = back[0] + rng.uniform(0.0, back[1] - back[0] - 3.5)
                cands.append(Candidate(shapes.rect(sx, sy, sx + rng.uniform(2.2, 3.2), sy + rng.uniform(2.5, 3.5)),
                                       "rect", "shed", "flat", 2.4, roof_color(rng, SMALL_ROOFS, "shed")))
            n = rng.poisson(1.4 * density)
            if n and back[1] > back[0]:
                xy = np.column_stack([rng.uniform(xa + 1, xb - 1, n), rng.uniform(back[0], back[1], n)])
                trees += trees_at(rng, xy, 1.8, 4.2, 4.0, 11.0)
    _anchor(cands)
    return cands, trees


def _apartment(rng: np.random.Generator, xa: float, xb: float, ya: float, yb: float, front: int) -> Candidate | None:
    lw, ld = xb - xa, yb - ya
    kind = rng.random()
    if kind < 0.22 and lw >= 34.0 and ld >= 30.0:
        wing = rng.uniform(10.0, 13.0)
        w, d = lw - rng.uniform(3.0, 6.0), ld - rng.uniform(4.0, 8.0)
        if w - 2 * wing < 8.0 or d - 2 * wing < 8.0:
            return None
        x, y = xa + (lw - w) / 2, ya + (ld - d) / 2
        geom, shape = shapes.courtyard(x, y, x + w, y + d, wing), "courtyard"
    elif kind < 0.54 and lw >= 26.0 and ld >= 24.0:
        w, d = lw * rng.uniform(0.7, 0.92), min(ld - 6.0, rng.uniform(20.0, 30.0))
        x, y = xa + _span(rng, 1.0, lw - w - 1.0), _front_y(ya, yb, d, front, rng.uniform(2.0, 5.0))
        arm = min(rng.uniform(10.0, 14.0), (w - 8.0) / 2)
        if kind < 0.32 and arm >= 8.0:
            geom, shape = shapes.u_shape(x, y, x + w, y + d, arm, d - rng.uniform(10.0, 13.0), front <= 0), "U"
        else:
            corner = int(rng.choice([0, 1] if front <= 0 else [2, 3]))
            geom = shapes.l_shape(x, y, x + w, y + d, w - rng.uniform(11.0, 15.0), d - rng.uniform(11.0, 15.0),
                                  corner)
            shape = "L"
    else:
        w, d = lw * rng.uniform(0.65, 0.92), min(ld - 8.0, rng.uniform(11.0, 16.0))
        if d < 8.0:
            return None
        x, y = xa + _span(rng, 1.0, lw - w - 1.0), _front_y(ya, yb, d, front, rng.uniform(2.0, 6.0))
        geom, shape = shapes.rect(x, y, x + w, y + d), "rect"
    roof = "flat" if rng.random() < 0.75 else "hip"
    return Candidate(geom, shape, "apartments", roof, rng.uniform(9.0, 18.0),
                     roof_color(rng, APARTMENT_ROOFS, "apartments"))


def _apartments(rng: np.random.Generator, f: Frame, density: float
                ) -> tuple[list[Candidate], list[tuple[float, ...]]]:
    x0, y0, x1, y1 = f.bounds
    cands: list[Candidate] = []
    trees: list[tuple[float, ...]] = []
    for ya, yb, front in _rows(rng, y0, y1, 34.0, 44.0):
        for xa, xb in _lots(rng, x0, x1, 28.0, 55.0):
            c = _apartment(rng, xa, xb, ya, yb, front)
            if c is not None:
                cands.append(c)
            n = rng.poisson(1.5 * density)
            xy = np.column_stack([rng.uniform(xa, xb, n), rng.uniform(ya, yb, n)])
            trees += trees_at(rng, xy, 2.5, 5.0, 6.0, 14.0)
    return cands, trees


def _industry(rng: np.random.Generator, f: Frame, density: float
              ) -> tuple[list[Candidate], list[tuple[float, ...]]]:
    x0, y0, x1, y1 = f.bounds
    cands: list[Candidate] = []
    trees: list[tuple[float, ...]] = []
    for ya, yb, front in _rows(rng, y0, y1, 45.0, 60.0):
        for xa, xb in _lots(rng, x0, x1, 40.0, 85.0):
            _anchor(cands)
            lw, ld = xb - xa, yb - ya
            w, d = lw * rng.uniform(0.55, 0.9), ld * rng.uniform(0.45, 0.8)
            x, y = xa + _span(rng, 1.0, lw - w - 1.0), _front_y(ya, yb, d, front, rng.uniform(3.0, 8.0))
            if rng.random() < 0.25 and w > 25.0 and d > 25.0:
                geom = shapes.l_shape(x, y, x + w, y + d, w * rng.uniform(0.3, 0.5), d * rng.uniform(0.3, 0.5),
                                      int(rng.integers(4)))
                shape = "L"
            else:
                geom, shape = shapes.rect(x, y, x + w, y + d), "rect"
            color = roof_color(rng, INDUSTRY_ROOFS, "industrial")
            cands.append(Candidate(geom, shape, "industrial", "flat", rng.uniform(6.0, 12.0), color))
            if rng.random() < 0.3:
                sw, sd = rng.uniform(6.0, 12.0), rng.uniform(5.0, 9.0)
                sx, sy = xa + _span(rng, 1.0, lw - sw - 1.0), ya + _span(rng, 1.0, ld - sd - 1.0)
                cands.append(Candidate(shapes.rect(sx, sy, sx + sw, sy + sd), "rect", "yes", "flat",
                                       rng.uniform(3.0, 5.0), roof_color(rng, INDUSTRY_ROOFS, "yes")))
            n = rng.poisson(0.6 * density)
            xy = np.column_stack([rng.uniform(xa, xb, n), rng.uniform(ya, yb, n)])
            trees += trees_at(rng, xy, 2.0, 4.0, 5.0, 10.0)
    _anchor(cands)
    return cands, trees


def _parking(rng: np.random.Generator, f: Frame, region: Polygon, out: Contents,
             stall_zone: tuple[float, float, float, float] | None = None) -> None:
    """A surface car park over ``region`` (local metres), with stall lines and parked cars laid
    out in the frame over ``stall_zone`` (frame bounds; default the whole block)."""
    x0, y0, x1, y1 = stall_zone or f.bounds
    ok = region.buffer(-0.8)
    stalls: list[tuple[float, float]] = []
    y, pattern, k = y0 + 1.0, (5.0, 6.5, 5.0), 0
    while y + 5.0 <= y1 - 1.0:
        step = pattern[k % 3]
        if step == 5.0:
            stalls += [(float(x), y) for x in np.arange(x0 + 1.0, x1 - 3.6, 2.6)]
        y += step
        k += 1
    out.areas.append(Area(region, "parking"))
    if not stalls:
        return
    st = np.array(stalls)
    corners = [f.points(st + d) for d in ((0.0, 0.0), (2.6, 0.0), (2.6, 5.0), (0.0, 5.0))]
    boxes = shapely.polygons(np.stack(corners, axis=1))
    keep = shapely.contains(ok, boxes)
    for i in np.flatnonzero(keep):
        out.markings.append(LineString([corners[0][i], corners[3][i]]))
        out.markings.append(LineString([corners[1][i], corners[2][i]]))
    cars = []
    for x, y in st[keep]:
        if rng.random() < 0.6:
            cx, cy = x + 1.3 + rng.uniform(-0.2, 0.2), y + 2.5 + rng.uniform(-0.2, 0.2)
            cars.append(shapes.rect(cx - 0.9, cy - 2.2, cx + 0.9, cy + 2.2))
            out.car_colors.append(pick(rng, CAR_COLORS))
    out.cars += f.place(cars)


def _park(rng: np.random.Generator, f: Frame, density: float, lake: bool, out: Contents) -> None:
    parts = [p for p in shapely.get_parts(f.region) if isinstance(p, Polygon)]
    for p in parts:
        out.areas.append(Area(p, "park", "Town Park" if lake else ""))
    avoid: list[Polygon] = []
    if lake:
        water = _lake(rng, f)
        if water is not None:
            out.areas.append(Area(water, "water", "Mill Pond"))
            avoid.append(water.buffer(2.0))
            for hole in water.interiors:
                c = Polygon(hole).representative_point()
                out.trees += trees_at(rng, np.array([[c.x, c.y]]), 2.5, 4.0, 6.0, 10.0)
    x0, y0, x1, y1 = f.bounds
    if rng.random() < 0.8:
        a = np.array([x0 - 5.0, rng.uniform(y0, y1)])
        b = np.array([x1 + 5.0, rng.uniform(y0, y1)])
        mid = (a + b) / 2 + rng.uniform(-0.25, 0.25, 2) * (y1 - y0)
        t = np.linspace(0.0, 1.0, 25)[:, None]
        curve = f.points((1 - t) ** 2 * a + 2 * t * (1 - t) * mid + t**2 * b)
        path = shapely.intersection(LineString(curve), f.region.buffer(-0.5))
        for av in avoid:
            path = path.difference(av)
        for part in shapely.get_parts(path):
            if isinstance(part, LineString) and part.length > 15.0:
                out.footways.append(Road(np.asarray(part.coords), "footway", ""))
    bx0, by0, bx1, by1 = f.region.bounds
    n = int(f.region.area / 110.0 * density * rng.uniform(0.6, 1.2))
    xy = np.column_stack([rng.uniform(bx0, bx1, n), rng.uniform(by0, by1, n)])
    inside = shapely.contains_xy(f.region.buffer(-1.5), xy[:, 0], xy[:, 1])
    for av in avoid:
        inside &= ~shapely.contains_xy(av, xy[:, 0], xy[:, 1])
    out.trees += trees_at(rng, xy[inside], 2.0, 5.0, 6.0, 16.0)


def _lake(rng: np.random.Generator, f: Frame) -> Polygon | None:
    """A lake (with an island when it is big enough) in the block, at least 8 m from its edge."""
    room = f.region.buffer(-8.0)
    if not isinstance(room, Polygon) or room.area < 1500.0:
        return None
    c = polylabel(room, tolerance=1.0)
    r = float(room.exterior.distance(c))
    x0, y0, x1, y1 = f.bounds
    stretch = min(2.2, max(1.0, (x1 - x0) / max(y1 - y0, 1.0)))
    angle = f.angle((x0 + x1) / 2, (y0 + y1) / 2)
    for _ in range(8):
        outer = shapes.rotate_about(np.array([shapes.blob(c.x, c.y, r * stretch, r, rng)], dtype=object),
                                    angle, c.x, c.y)[0]
        if room.contains(outer):
            break
        r *= 0.85
    else:
        return None
    if r < 12.0:
        return None
    if r >= 20.0:
        ir = r * rng.uniform(0.18, 0.28)
        isl = shapes.blob(c.x + rng.uniform(-0.3, 0.3) * r, c.y + rng.uniform(-0.2, 0.2) * r, ir * 1.3, ir, rng, 24)
        if outer.buffer(-5.0).contains(isl):
            return shapely.orient_polygons(Polygon(outer.exterior.coords, [isl.exterior.coords]))
    return shapely.orient_polygons(outer)


def fill_block(rng: np.random.Generator, warp: Warp, block: Block, region: Polygon | MultiPolygon, use: str,
               density: float, out: Contents) -> None:
    """Fill one block (its kerb-bounded ``region`` in local metres) with ``use``: houses,
    apartments, industry, retail, parking, park, or lake (a park with a lake)."""
    f = Frame(warp, block, region)
    if use in ("park", "lake"):
        _park(rng, f, density, use == "lake", out)
        return
    if use == "parking":
        for p in shapely.get_parts(region):
            if isinstance(p, Polygon):
                _parking(rng, f, p, out)
        return
    trees: list[tuple[float, ...]] = []
    if use == "houses":
        cands, trees = _houses(rng, f, density)
    elif use == "apartments":
        cands, trees = _apartments(rng, f, density)
    elif use == "industry":
        cands, trees = _industry(rng, f, density)
        out.paved += [p for p in shapely.get_parts(region) if isinstance(p, Polygon)]
    else:
        cands = _retail(rng, f, out)
    _keep(f, cands, trees, out)


def _retail(rng: np.random.Generator, f: Frame, out: Contents) -> list[Candidate]:
    x0, y0, x1, y1 = f.bounds
    split = x0 + (x1 - x0) * rng.uniform(0.35, 0.55)
    d = (y1 - y0) * rng.uniform(0.55, 0.8)
    y = y0 + (y1 - y0 - d) / 2
    big = Candidate(shapes.rect(x0 + 3.0, y, split - 2.0, y + d), "rect", "retail", "flat",
                    rng.uniform(6.0, 10.0), roof_color(rng, INDUSTRY_ROOFS + APARTMENT_ROOFS, "retail"))
    lot = f.region.intersection(f.area(shapes.rect(split + 2.0, y0 - 12.0, x1 + 12.0, y1 + 12.0)))
    if isinstance(lot, Polygon) and lot.area > 300.0:
        _parking(rng, f, lot, out, (split + 2.0, y0, x1, y1))
    return [big]


def _keep(f: Frame, cands: list[Candidate], trees: list[tuple[float, ...]], out: Contents) -> None:
    """Move candidates to local metres; keep those inside the block and clear of each other."""
    if cands:
        geoms = np.array(f.place([c.geom for c in cands], [c.anchor for c in cands]), dtype=object)
        drive = np.array([c.use == "driveway" for c in cands])
        ok = shapely.contains(f.inner, geoms) & shapely.is_valid(geoms) & ~drive
        tree = shapely.STRtree(geoms)
        a, b = tree.query(shapely.buffer(geoms, 0.8, join_style="mitre"), predicate="intersects")
        order = np.lexsort((b, a))
        for i, j in zip(a[order], b[order]):
            if i < j and ok[i]:
                ok[j] = False
        for c, g, k in zip(cands, geoms, ok):
            if k:
                c.geom = shapely.orient_polygons(g)
                out.buildings.append(c)
                if c.use in ("apartments", "retail"):
                    out.paved.append(shapely.buffer(g, 2.5, join_style="mitre"))
            elif c.use == "driveway" and c.parent is not None and ok[c.parent]:
                out.paved.append(g)
    if trees:
        arr = np.array(trees)
        arr[:, :2] = f.points(arr[:, :2])
        inside = shapely.contains_xy(f.region, arr[:, 0], arr[:, 1])
        out.trees += [tuple(t) for t in arr[inside]]
