"""Generate a whole town from a :class:`~pipeline.config.region.SyntheticConfig`, deterministically."""

from __future__ import annotations

import math

import numpy as np
import shapely
from numpy.typing import NDArray
from pyproj import Transformer
from shapely.geometry import LineString, MultiPolygon, Polygon
from shapely.ops import substring

from pipeline.config.region import SyntheticConfig
from pipeline.core.errors import ConfigError
from pipeline.synthetic.blocks import fill_block
from pipeline.synthetic.dense import densify
from pipeline.synthetic.frame import Contents
from pipeline.synthetic.model import ROAD_HALF_WIDTH_M, SIDEWALK_M, Building, Road, Town
from pipeline.synthetic.street_life import street_cars, street_trees
from pipeline.synthetic.streets import Block, StreetPlan, clip_roads, kerb_m, plan_streets

_MIN_BLOCK_M2 = 150.0
#: streets that may be missing from OSM or gone from the image: side streets between two main
#: streets (nothing else joins them, so their absence disconnects nothing), at least this long
_SIDE_STREETS = ("residential", "service")
_MIN_CHANGED_ROAD_M = 30.0


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the WGS 84 / UTM zone holding (lon, lat): 326xx north, 327xx south."""
    zone = min(60, max(1, math.floor((lon + 180.0) / 6.0) + 1))
    return (32600 if lat >= 0 else 32700) + zone


def image_frame(cfg: SyntheticConfig) -> tuple[int, float, float, int]:
    """(epsg, left, bottom, size_px): the orthophoto's UTM grid, centred on ``cfg.centre`` and
    snapped to whole pixels of ``cfg.resolution_m``."""
    size_px = round(cfg.size_m / cfg.resolution_m)
    if size_px < 64:
        raise ConfigError(f"[synthetic] size_m = {cfg.size_m} at resolution_m = {cfg.resolution_m} "
                          "gives fewer than 64 pixels; raise size_m")
    epsg = utm_epsg(*cfg.centre)
    e, n = Transformer.from_crs(4326, epsg, always_xy=True).transform(*cfg.centre)
    res, half = cfg.resolution_m, size_px * cfg.resolution_m / 2
    return epsg, round((e - half) / res) * res, round((n - half) / res) * res, size_px


def make_town(cfg: SyntheticConfig) -> Town:
    """Lay out streets, blocks, buildings, trees and cars, and decide which buildings are
    missing from OSM, demolished, or mapped with an offset, and which side streets are missing
    from OSM or gone from the image. Same ``cfg``, same town."""
    epsg, left, bottom, size_px = image_frame(cfg)
    town = Town(seed=cfg.seed, epsg=epsg, left=left, bottom=bottom, res=cfg.resolution_m, size_px=size_px)
    size = town.size_m
    rng = np.random.default_rng(cfg.seed)
    plan = plan_streets(rng, size)
    roads = clip_roads(plan.roads, size)
    regions = _block_regions(plan, size)
    lakes = _pick_lakes(rng, regions, size)
    parts, uses = [], []
    for k, (block, region) in enumerate(regions):
        uses.append("lake" if k in lakes else _use(rng, region.area, block.centrality))
        parts.append(Contents())
        fill_block(rng, plan.warp, block, region, uses[-1], cfg.tree_density, parts[-1])
    quarters = set(densify(cfg.seed, plan.warp, regions, uses, parts, cfg.tree_density))
    out, dense = Contents(), []
    for k, part in enumerate(parts):
        dense += [k in quarters] * len(part.buildings)
        out.extend(part)
    roads += out.footways
    _assign_road_status(np.random.default_rng([cfg.seed, 3]), roads, cfg.share_roads)
    town.roads = roads
    town.areas = out.areas
    town.paved = out.paved
    town.islands = [p for p in plan.islands if p.within(shapely.box(0, 0, size, size))]
    trees = out.trees + street_trees(rng, roads, ROAD_HALF_WIDTH_M, SIDEWALK_M, cfg.tree_density)
    trees += [(p.centroid.x, p.centroid.y, 2.6, 7.0, 60.0, 84.0, 44.0) for p in town.islands]
    cars, car_colors = street_cars(rng, roads, ROAD_HALF_WIDTH_M)
    cars, car_colors = _off_demolished(roads, cars, car_colors)
    town.cars, town.car_colors = out.cars + cars, out.car_colors + car_colors
    town.markings = out.markings + _road_markings([r for r in roads if r.in_image])
    _ensure_courtyard(out)
    town.buildings = [
        Building(i + 1, c.geom, c.shape, c.use, c.roof, round(float(c.height_m), 1), c.color)
        for i, c in enumerate(out.buildings)
    ]
    _assign_status(np.random.default_rng([cfg.seed, 1]), town, cfg, np.array(dense, dtype=bool))
    town.trees = _clear_trees(np.array(trees, dtype=float).reshape(-1, 7), town)
    return town


def _block_regions(plan: StreetPlan, size: float) -> list[tuple[Block, Polygon | MultiPolygon]]:
    """Each block's area between the kerbs of its streets, inside the image (local metres)."""
    kerb = [shapely.buffer(r.line, kerb_m(r.highway), cap_style="flat") for r in plan.roads]
    kerb += [p.buffer(2.0) for p in plan.islands]
    kerbs = np.array(kerb, dtype=object)
    tree = shapely.STRtree(kerbs)
    frame = shapely.box(0.0, 0.0, size, size)
    inner = shapely.box(1.0, 1.0, size - 1.0, size - 1.0)
    out: list[tuple[Block, Polygon | MultiPolygon]] = []
    for b in plan.blocks:
        poly = plan.warp.polygon(b.u0, b.u1, b.v0, b.v1)
        if not poly.intersects(frame):
            continue
        cut = poly.difference(shapely.union_all(kerbs[np.sort(tree.query(poly))])).intersection(inner)
        parts = [shapely.orient_polygons(p) for p in shapely.get_parts(cut)
                 if isinstance(p, Polygon) and p.area >= _MIN_BLOCK_M2]
        if parts:
            out.append((b, parts[0] if len(parts) == 1 else MultiPolygon(parts)))
    return out


def _use(rng: np.random.Generator, area: float, centrality: float) -> str:
    """What a block becomes; denser buildings towards the centre."""
    if area < 1500.0:
        return str(rng.choice(["houses", "park"], p=[0.85, 0.15]))
    uses = ["park", "parking", "retail", "industry", "apartments", "houses"]
    w = np.array([0.07, 0.03, 0.04, 0.04 + 0.12 * centrality, 0.10 + 0.45 * (1 - centrality), 0.0])
    w[-1] = max(0.2, 1.0 - w.sum())
    return str(rng.choice(uses, p=w / w.sum()))


def _pick_lakes(rng: np.random.Generator, regions: list[tuple[Block, Polygon | MultiPolygon]], size: float
                ) -> set[int]:
    """Indices of a few large blocks, clear of the image edge, that become parks with a lake."""
    n = max(1, round(size * size / 1e6 * 0.4))
    ok = [k for k, (_, r) in enumerate(regions) if isinstance(r, Polygon) and r.area > 4000.0
          and min(r.bounds[:2]) > 20.0 and max(r.bounds[2:]) < size - 20.0]
    if not ok:
        return set()
    ranked = sorted(ok, key=lambda k: -regions[k][1].area)[: max(3, 3 * n)]
    return {int(k) for k in rng.choice(ranked, min(n, len(ranked)), replace=False)}


def _ensure_courtyard(out: Contents) -> None:
    """Make sure the town has a courtyard building (an OSM multipolygon): if none came out,
    hollow the largest rectangular building that is at least 28 m on each side."""
    if any(c.shape == "courtyard" for c in out.buildings):
        return
    best, side = None, 28.0
    for c in out.buildings:
        if c.shape == "rect":
            mrr = np.asarray(shapely.minimum_rotated_rectangle(c.geom).exterior.coords)
            short = min(np.hypot(*(mrr[1] - mrr[0])), np.hypot(*(mrr[2] - mrr[1])))
            if short >= side:
                best, side = c, short
    if best is not None:
        wing = min(12.0, (side - 8.0) / 2)
        hole = shapely.buffer(best.geom, -wing, join_style="mitre")
        best.geom = shapely.orient_polygons(Polygon(best.geom.exterior.coords, [hole.exterior.coords]))
        best.shape, best.roof = "courtyard", "flat"


def _road_markings(roads: list[Road]) -> list[LineString]:
    """Dashed centre lines on primary and secondary streets, edge lines on primary ones."""
    out: list[LineString] = []
    for r in roads:
        if r.highway not in ("primary", "secondary") or r.junction:
            continue
        line = r.line
        for s in np.arange(2.0, line.length - 3.0, 9.0):
            out.append(substring(line, float(s), float(s) + 3.0))
        if r.highway == "primary":
            for sgn in (-1.0, 1.0):
                edge = shapely.offset_curve(line, sgn * (ROAD_HALF_WIDTH_M[r.highway] - 0.5))
                out += [g for g in shapely.get_parts(edge) if isinstance(g, LineString)]
    return out


def _assign_status(rng: np.random.Generator, town: Town, cfg: SyntheticConfig, dense: NDArray[np.bool_]) -> None:
    """Pick demolished (in OSM only), missing (image only) and offset buildings; each kind
    includes a building of a dense quarter (``dense``, by building) when there are any."""
    n = len(town.buildings)
    order = rng.permutation(n)
    n_dem = round(cfg.share_demolished * n)
    n_miss = round(cfg.share_missing * (n - n_dem))
    n_off = round(cfg.share_offset * (n - n_dem - n_miss))
    _mix_in(order, dense, [n_dem, n_miss, n_off])
    rest = order[n_dem:]
    mapped = rest[n_miss:]
    for k in order[:n_dem]:
        town.buildings[k].status = "demolished"
        if rng.random() < 0.5:
            town.bare.append(town.buildings[k].geom.buffer(0.8, join_style="mitre"))
    for k in rest[:n_miss]:
        town.buildings[k].status = "missing_in_osm"
    for k in mapped[:n_off]:
        dist, ang = rng.uniform(1.0, 2.0), rng.uniform(0.0, 2 * math.pi)
        town.buildings[k].offset = (round(dist * math.cos(ang), 3), round(dist * math.sin(ang), 3))


def _assign_road_status(rng: np.random.Generator, roads: list[Road], share: float) -> None:
    """Mark ``share`` of the side streets (``_SIDE_STREETS``, no roundabout, at least
    ``_MIN_CHANGED_ROAD_M`` long) ``missing_in_osm`` (painted, not in OSM) and as many others
    ``demolished`` (in OSM, not painted: grass where the street was); at least one of each when
    ``share`` > 0 and there are two side streets."""
    side = [k for k, r in enumerate(roads) if r.highway in _SIDE_STREETS and r.junction is None and r.name
            and r.line.length >= _MIN_CHANGED_ROAD_M]
    if share <= 0 or len(side) < 2:
        return
    n = min(max(1, round(share * len(side))), len(side) // 2)
    order = rng.permutation(len(side))
    for j in order[:n]:
        roads[side[j]].status = "missing_in_osm"
    for j in order[n:2 * n]:
        roads[side[j]].status = "demolished"


def _off_demolished(roads: list[Road], cars: list[Polygon], colors: list[tuple[int, int, int]]
                    ) -> tuple[list[Polygon], list[tuple[int, int, int]]]:
    """The cars (and their colours) not parked on a demolished street. (Street life is laid out
    along every street first, so that the random draws, and the town, stay the same whichever
    streets are demolished; trees along a demolished street stay, as they would.)"""
    gone = [shapely.buffer(r.line, ROAD_HALF_WIDTH_M[r.highway], cap_style="flat") for r in roads if not r.in_image]
    if not gone or not cars:
        return cars, colors
    hit, _ = shapely.STRtree(np.array(gone, dtype=object)).query(np.array(cars, dtype=object), predicate="intersects")
    keep = np.ones(len(cars), dtype=bool)
    keep[hit] = False
    return [c for c, k in zip(cars, keep) if k], [c for c, k in zip(colors, keep) if k]


def _mix_in(order: NDArray[np.int64], dense: NDArray[np.bool_], sizes: list[int]) -> None:
    """Reorder ``order`` in place so that each of its leading slices of ``sizes`` (the status
    kinds) holds a dense building: swap the slice's last one with the first dense building
    after all the slices."""
    free = sum(sizes)
    start = 0
    for size in sizes:
        if size and not dense[order[start:start + size]].any():
            later = np.flatnonzero(dense[order[free:]])
            if len(later):
                j = free + int(later[0])
                order[start + size - 1], order[j] = order[j], order[start + size - 1]
        start += size


def _clear_trees(trees: np.ndarray, town: Town) -> np.ndarray:
    """Drop trees rooted in a building, on a carriageway, in water or outside the image."""
    if len(trees) == 0:
        return trees
    x, y = trees[:, 0], trees[:, 1]
    keep = (x > 0) & (y > 0) & (x < town.size_m) & (y < town.size_m)
    pts = shapely.points(x, y)
    blockers = [b.geom for b in town.buildings]
    blockers += [a.geom for a in town.areas if a.kind == "water"]
    blockers += [shapely.buffer(r.line, ROAD_HALF_WIDTH_M[r.highway] + 0.5, cap_style="flat") for r in town.roads
                 if r.in_image]
    if blockers:
        hit, _ = shapely.STRtree(np.array(blockers, dtype=object)).query(pts, predicate="intersects")
        keep[hit] = False
    return trees[keep]
