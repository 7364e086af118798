"""Paint the town as an aerial orthophoto (RGB uint8, the town's UTM grid), window by window.

Layers, bottom to top: ground cover (grass with dry patches, parks, bare soil, water, car parks,
sidewalks, asphalt, paths, road markings), cars, cast shadows (sun in the south-south-east),
roofs (hip and gable facets shaded by the sun, flat roofs with parapets, texture; a roof runs
on over a party wall, marked there by a faint darker line), tree crowns, then a slight blur and
sensor noise. Every pixel depends only on its global position, so the
image is the same whatever the window size, and windows join without seams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray
from PIL import Image, ImageFilter
from rasterio.features import rasterize
from shapely.geometry import Polygon

from pipeline.synthetic import noise
from pipeline.synthetic.model import ROAD_HALF_WIDTH_M, SIDEWALK_M, Town
from pipeline.synthetic.shapes import MAX_EDGES
from pipeline.synthetic.walls import across, edges_on, party_walls

SUN_AZIMUTH_DEG = 150.0  # clockwise from north
SUN_ELEVATION_DEG = 55.0
_SUN = np.array([math.sin(math.radians(SUN_AZIMUTH_DEG)), math.cos(math.radians(SUN_AZIMUTH_DEG))])
_SHADOW_PER_M = 1.0 / math.tan(math.radians(SUN_ELEVATION_DEG))  # shadow length per metre of height
MARGIN_PX = 8  # blur reach, rendered around each window and cropped
MAX_PARTY = 4  # party-wall segments kept per building
PARTY_LINE_M = 0.35  # a party wall darkens the roofs up to this far from it (metres)
PARTY_DARKEN = 0.22  # by this much right on the wall
BLUR_RADIUS_PX = 0.65

# ground cover codes, painted in this order (later ones on top)
GRASS, PARK, SOIL, WATER, PARKING, SIDEWALK, PATH, ASPHALT, MAIN_ROAD, ISLAND, MARKING, PAVED = range(12)
_BASE = np.array([
    (86, 108, 60), (76, 106, 52), (128, 108, 84), (38, 58, 66), (96, 96, 98), (160, 156, 148),
    (174, 162, 134), (84, 84, 88), (72, 72, 76), (80, 110, 56), (214, 214, 208), (132, 130, 124),
], dtype=np.float32)
_AMP_LO = np.array([0.12, 0.12, 0.10, 0.05, 0.05, 0.04, 0.06, 0.06, 0.05, 0.10, 0.03, 0.07], dtype=np.float32)
_AMP_HI = np.array([0.08, 0.08, 0.08, 0.02, 0.05, 0.05, 0.07, 0.06, 0.06, 0.08, 0.04, 0.06], dtype=np.float32)
_GRASSY = np.zeros(len(_BASE), dtype=bool)
_GRASSY[[GRASS, PARK, ISLAND]] = True
_DRY = np.array([138, 130, 88], dtype=np.float32)
_SHADOW_TINT = np.array([0.50, 0.53, 0.60], dtype=np.float32)
_ROOF_CODES = {"flat": 0, "hip": 1, "gable": 2}


class _Layer:
    """Geometries with values, burnt into a window in their list order (later on top)."""

    def __init__(self, geoms: list[object], values: NDArray[np.int64]) -> None:
        self.geoms = np.array(geoms, dtype=object)
        self.values = np.asarray(values)
        self.tree = shapely.STRtree(self.geoms)

    def burn(self, box: Polygon, transform: Affine, shape: tuple[int, int], dtype: str) -> NDArray[Any]:
        idx = np.sort(self.tree.query(box))
        if len(idx) == 0:
            return np.zeros(shape, dtype=dtype)
        pairs = zip(self.geoms[idx], self.values[idx].tolist())
        return rasterize(pairs, out_shape=shape, transform=transform, fill=0, dtype=dtype)


@dataclass
class _Roofs:
    """Per drawn building: colour, roof code, the edges that shape its roof (x0, y0, x1, y1;
    walls shared with a neighbour left out) with outward normals, and its party walls."""

    color: NDArray[np.float32]
    roof: NDArray[np.int8]
    edges: NDArray[np.float32]  # (n, MAX_EDGES, 4), NaN where unused
    normals: NDArray[np.float32]  # (n, MAX_EDGES, 2)
    party: NDArray[np.float32]  # (n, MAX_PARTY, 4) walls shared with touching buildings, NaN where unused
    n_party: NDArray[np.int64]  # (n,) how many


class Scene:
    """A town prepared for painting: spatially indexed layers in local metres."""

    def __init__(self, town: Town) -> None:
        self.town = town
        drawn = [b for b in town.buildings if b.in_image]
        self.cover = _cover_layer(town)
        self.markings = _Layer(list(town.markings), np.ones(len(town.markings), dtype=np.int64)) \
            if town.markings else None
        self.building_ids = np.array([b.id for b in drawn], dtype=np.int64)
        self.buildings = _Layer([b.geom for b in drawn], np.arange(1, len(drawn) + 1)) if drawn else None
        self.roofs = _roofs(drawn, party_walls([b.geom for b in drawn], limit=MAX_PARTY))
        self.cars = _Layer(list(town.cars), np.arange(1, len(town.cars) + 1)) if town.cars else None
        self.car_colors = np.array(town.car_colors, dtype=np.float32).reshape(-1, 3)
        shadows = _shadows(town, drawn)
        self.shadows = _Layer(shadows, np.ones(len(shadows), dtype=np.int64)) if shadows else None
        t = town.trees
        crowns = list(shapely.buffer(shapely.points(t[:, 0], t[:, 1]), t[:, 2], quad_segs=5)) if len(t) else []
        self.trees = _Layer(crowns, np.arange(1, len(crowns) + 1)) if crowns else None

    def footprint(self, row0: int, col0: int, height: int, width: int) -> NDArray[np.int32]:
        """Building ids (``Building.id``, 0 = none) of the pixels where roofs are drawn in the
        window (rows, cols of the full image); trees that hide a roof do not count."""
        box, tr = self._window(row0, col0, height, width)
        if self.buildings is None:
            return np.zeros((height, width), dtype=np.int32)
        k = self.buildings.burn(box, tr, (height, width), "int32").astype(np.int64)
        ids = np.concatenate([[0], self.building_ids])
        return ids[k].astype(np.int32)

    def _window(self, row0: int, col0: int, height: int, width: int) -> tuple[Polygon, Affine]:
        tr = self.town.local_transform @ Affine.translation(col0, row0)
        x0, y1 = tr @ (0, 0)
        x1, y0 = tr @ (width, height)
        return shapely.box(x0, y0, x1, y1), tr

    def render(self, row0: int, col0: int, height: int, width: int) -> NDArray[np.uint8]:
        """The orthophoto's pixels for a window: (height, width, 3) uint8."""
        m = MARGIN_PX
        r0, c0, h, w = row0 - m, col0 - m, height + 2 * m, width + 2 * m
        box, tr = self._window(r0, c0, h, w)
        rows, cols = np.arange(r0, r0 + h, dtype=np.int64), np.arange(c0, c0 + w, dtype=np.int64)
        seed = self.town.seed * 1000
        xs = (tr.c + (cols + 0.5 - c0) * tr.a).astype(np.float32)
        ys = (tr.f + (rows + 0.5 - r0) * tr.e).astype(np.float32)
        rgb = _ground(self.cover.burn(box, tr, (h, w), "uint8"), rows, cols, seed)
        if self.markings is not None:
            paint = self.markings.burn(box, tr, (h, w), "uint8") > 0
            rgb[paint] = rgb[paint] * 0.25 + _BASE[MARKING] * 0.75
        if self.cars is not None:
            car = self.cars.burn(box, tr, (h, w), "int32")
            sel = car > 0
            shade = 1.0 + 0.06 * noise.white(rows, cols, seed + 11)[sel]
            rgb[sel] = self.car_colors[car[sel] - 1] * shade[:, None]
        if self.shadows is not None:
            rgb[self.shadows.burn(box, tr, (h, w), "uint8") > 0] *= _SHADOW_TINT
        if self.buildings is not None:
            bid = self.buildings.burn(box, tr, (h, w), "int32")
            _paint_roofs(rgb, bid, xs, ys, rows, cols, self.roofs, seed)
        if self.trees is not None:
            tid = self.trees.burn(box, tr, (h, w), "int32")
            _paint_trees(rgb, tid, xs, ys, rows, cols, self.town.trees, seed)
        rgb *= (1.0 + 0.03 * noise.value(rows, cols, 500.0, seed + 21))[..., None]
        img = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
        out = np.asarray(img.filter(ImageFilter.GaussianBlur(BLUR_RADIUS_PX)), dtype=np.float32)
        lum = noise.white(rows, cols, seed + 31) * 2.5
        for c in range(3):
            out[..., c] += lum + noise.white(rows, cols, seed + 41 + c) * 3.5
        return np.clip(out[m:-m, m:-m] + 0.5, 0, 255).astype(np.uint8)


def _cover_layer(town: Town) -> _Layer:
    geoms: list[object] = []
    codes: list[int] = []

    def add(gs: list[object], code: int) -> None:
        geoms.extend(gs)
        codes.extend([code] * len(gs))

    add([a.geom for a in town.areas if a.kind == "park"], PARK)
    add(list(town.paved), PAVED)
    add(list(town.bare), SOIL)
    add([a.geom for a in town.areas if a.kind == "water"], WATER)
    add([a.geom for a in town.areas if a.kind == "parking"], PARKING)
    shown = [r for r in town.roads if r.in_image]  # a demolished street is grass now
    lines = [r.line for r in shown]
    half = np.array([ROAD_HALF_WIDTH_M[r.highway] for r in shown])
    side = np.array([SIDEWALK_M[r.highway] for r in shown])
    if lines:
        walk = side > 0
        add(list(shapely.buffer(np.array(lines, dtype=object)[walk], (half + side)[walk], cap_style="flat")),
            SIDEWALK)
        kinds = np.array([r.highway for r in shown])
        for code, sel in ((PATH, kinds == "footway"),
                          (ASPHALT, ~np.isin(kinds, ["footway", "primary", "secondary"])),
                          (MAIN_ROAD, np.isin(kinds, ["primary", "secondary"]))):
            add(list(shapely.buffer(np.array(lines, dtype=object)[sel], half[sel], cap_style="flat")), code)
    add(list(town.islands), ISLAND)
    if not geoms:
        geoms, codes = [shapely.box(0, 0, 0.1, 0.1)], [GRASS]
    return _Layer(geoms, np.array(codes))


def _ground(code: NDArray[np.uint8], rows: NDArray[np.int64], cols: NDArray[np.int64], seed: int
            ) -> NDArray[np.float32]:
    lo = 0.6 * noise.value(rows, cols, 60.0, seed + 1) + 0.4 * noise.value(rows, cols, 15.0, seed + 2)
    hi = 0.5 * noise.value(rows, cols, 2.5, seed + 3) + 0.5 * noise.white(rows, cols, seed + 4)
    rgb = _BASE[code] * (1.0 + _AMP_LO[code] * lo + _AMP_HI[code] * hi)[..., None]
    dry = noise.value(rows, cols, 90.0, seed + 5) + 0.4 * noise.value(rows, cols, 20.0, seed + 6)
    mix = np.clip((dry - 0.25) * 1.6, 0.0, 0.7) * _GRASSY[code]
    rgb += (_DRY * (1.0 + 0.08 * hi)[..., None] - rgb) * mix[..., None]
    return rgb


def _roofs(drawn: list, party: list[NDArray[np.float64]]) -> _Roofs:
    """Roof data of the drawn buildings; ``party``: each one's party-wall segments (local metres).
    A roof runs on over its party walls: they shape no facet or parapet, and a gabled roof
    between them has its eaves across them (like a terrace's ridge along the row)."""
    n = len(drawn)
    edges = np.full((n, MAX_EDGES, 4), np.nan, dtype=np.float32)
    normals = np.zeros((n, MAX_EDGES, 2), dtype=np.float32)
    walls = np.full((n, MAX_PARTY, 4), np.nan, dtype=np.float32)
    for i, b in enumerate(drawn):
        segs = []
        for ring in [b.geom.exterior, *b.geom.interiors]:
            c = np.asarray(ring.coords)
            segs.append(np.hstack([c[:-1], c[1:]]))
        e = np.vstack(segs)[:MAX_EDGES]
        walls[i, : len(party[i])] = party[i]
        shared = edges_on(e, party[i])
        eaves = across(e, e[shared]) if shared.any() else shared
        if b.roof == "gable" and len(e) == 4 and eaves.sum() >= 2:
            e = e[eaves]
        elif shared.any() and not shared.all():
            e = e[~shared]
        d = e[:, 2:] - e[:, :2]
        length = np.hypot(d[:, 0], d[:, 1])
        if b.roof == "gable" and len(e) == 4:
            e = e[length >= np.max(length) - 1e-6] if np.ptp(length) > 0.5 else e[:2]
            d = e[:, 2:] - e[:, :2]
            length = np.hypot(d[:, 0], d[:, 1])
        edges[i, : len(e)] = e
        normals[i, : len(e)] = np.column_stack([d[:, 1], -d[:, 0]]) / length[:, None]
    return _Roofs(
        color=np.array([b.color for b in drawn], dtype=np.float32).reshape(-1, 3),
        roof=np.array([_ROOF_CODES[b.roof] for b in drawn], dtype=np.int8),
        edges=edges, normals=normals, party=walls, n_party=np.array([len(p) for p in party], dtype=np.int64),
    )


def _paint_roofs(rgb: NDArray[np.float32], bid: NDArray[np.int32], xs: NDArray[np.float32],
                 ys: NDArray[np.float32], rows: NDArray[np.int64], cols: NDArray[np.int64],
                 roofs: _Roofs, seed: int) -> None:
    sel = np.nonzero(bid)
    if len(sel[0]) == 0:
        return
    k = bid[sel] - 1
    px, py = xs[sel[1]], ys[sel[0]]
    d1 = np.full(len(k), np.inf, dtype=np.float32)
    d2 = np.full(len(k), np.inf, dtype=np.float32)
    nx = np.zeros(len(k), dtype=np.float32)
    ny = np.zeros(len(k), dtype=np.float32)
    for j in range(MAX_EDGES):
        e = roofs.edges[k, j]
        dist = _seg_dist(px, py, e)
        closer = dist < d1
        d2 = np.where(closer, d1, np.minimum(d2, dist))
        d1 = np.where(closer, dist, d1)
        nx = np.where(closer, roofs.normals[k, j, 0], nx)
        ny = np.where(closer, roofs.normals[k, j, 1], ny)
    code = roofs.roof[k]
    pitched = code > 0
    shade = np.where(pitched, 1.0 + 0.32 * (nx * _SUN[0] + ny * _SUN[1]), 1.0).astype(np.float32)
    shade *= np.where(pitched & (d2 - d1 < 0.25), 1.08, 1.0).astype(np.float32)
    shade *= np.where(~pitched & (d1 < 0.4), 1.14, 1.0).astype(np.float32)
    sub = np.flatnonzero(roofs.n_party[k] > 0)
    if len(sub):
        dp = np.full(len(sub), np.inf, dtype=np.float32)
        for j in range(MAX_PARTY):
            dp = np.minimum(dp, _seg_dist(px[sub], py[sub], roofs.party[k[sub], j]))
        shade[sub] *= (1.0 - PARTY_DARKEN * np.clip(1.0 - dp / PARTY_LINE_M, 0.0, 1.0)).astype(np.float32)
    fine = noise.value(rows, cols, 2.0, seed + 51)[sel] * 0.5 + noise.white(rows, cols, seed + 52)[sel] * 0.5
    stain = noise.value(rows, cols, 25.0, seed + 53)[sel]
    tex = np.where(pitched, 0.07 * fine + 0.03 * stain, 0.06 * fine + 0.08 * stain)
    rgb[sel] = roofs.color[k] * (shade * (1.0 + tex))[:, None]


def _seg_dist(px: NDArray[np.float32], py: NDArray[np.float32], e: NDArray[np.float32]) -> NDArray[np.float32]:
    """Distance from points to segments (x0, y0, x1, y1); inf where the segment is NaN."""
    dx, dy = e[:, 2] - e[:, 0], e[:, 3] - e[:, 1]
    t = ((px - e[:, 0]) * dx + (py - e[:, 1]) * dy) / np.maximum(dx * dx + dy * dy, 1e-9)
    t = np.clip(t, 0.0, 1.0)
    d = np.hypot(px - e[:, 0] - t * dx, py - e[:, 1] - t * dy)
    return np.where(np.isnan(d), np.float32(np.inf), d).astype(np.float32)


def _paint_trees(rgb: NDArray[np.float32], tid: NDArray[np.int32], xs: NDArray[np.float32],
                 ys: NDArray[np.float32], rows: NDArray[np.int64], cols: NDArray[np.int64],
                 trees: NDArray[np.float64], seed: int) -> None:
    sel = np.nonzero(tid)
    if len(sel[0]) == 0:
        return
    t = trees[tid[sel] - 1].astype(np.float32)
    dx, dy = xs[sel[1]] - t[:, 0], ys[sel[0]] - t[:, 1]
    rr = np.minimum(np.hypot(dx, dy) / t[:, 2], 1.0)
    lit = (dx * _SUN[0] + dy * _SUN[1]) / t[:, 2]
    clump = 0.18 * noise.value(rows, cols, 3.0, seed + 61)[sel] + 0.08 * noise.white(rows, cols, seed + 62)[sel]
    shade = (0.9 + 0.35 * lit - 0.3 * rr * rr) * (1.0 + clump)
    rgb[sel] = t[:, 4:7] * shade[:, None]


def _shadows(town: Town, drawn: list) -> list[object]:
    """Shadow polygons (local metres) cast by buildings, cars and tree crowns."""
    out: list[object] = []
    away = -_SUN * _SHADOW_PER_M
    for geom, h in [(b.geom, b.height_m) for b in drawn] + [(c, 1.5) for c in town.cars]:
        v = away * h
        out.append(shapely.transform(geom, lambda c, v=v: c + v))
        for ring in [geom.exterior, *geom.interiors]:
            c = np.asarray(ring.coords)
            quads = np.stack([c[:-1], c[1:], c[1:] + v, c[:-1] + v], axis=1)
            out += list(shapely.polygons(quads))
    t = town.trees
    if len(t):
        a = t[:, :2] + away * (0.35 * t[:, 3])[:, None]
        b = t[:, :2] + away * (0.8 * t[:, 3])[:, None]
        segs = shapely.linestrings(np.stack([a, b], axis=1))
        out += list(shapely.buffer(segs, 0.95 * t[:, 2], quad_segs=5))
    return out
