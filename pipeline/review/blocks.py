"""The comparison block by block: a large region compared a square block of tiles at a time,
so its memory is one block's, not the region's.

Every OSM feature, predicted polygon and candidate belongs to the block that holds its
representative point (a tile at zoom ``zoom - log2([compare] block_tiles)``; EPSG:4326 in, the
point taken as :func:`pipeline.tiles.tilemath.features_in_tiles` takes it). A block compares
what it owns against everything within :data:`MARGIN_M` ground metres of it (its features'
bounds grown), so pairs, coverage and unexplained area come out as in one comparison of the
whole region: a candidate cut from a prediction that crosses a block border is found in every
block the prediction reaches and kept by the one that holds its point. Figures are summed from
their additive parts (:func:`pipeline.review.compare.summary_of`). The gap simulation runs per
block on the block's held-out tiles; the blocks' labelled pools are pooled
(:func:`pipeline.review.review.pooled`), so the calibration, ``min_score`` and the estimated
curve are the region's. A region within one block is compared exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from pipeline.config.compare import CompareSpec
from pipeline.config.region import ClassSpec
from pipeline.review.candidates import Evidence
from pipeline.review.compare import Comparison, compare, ranked_rows, summary_of
from pipeline.review.coverage import ground_scale, region_scale
from pipeline.review.review import Review, pooled, review, scored, simulations
from pipeline.tiles.geo import mercator_scale, to_lonlat, to_mercator
from pipeline.tiles.tilemath import HALF_WORLD_M, tile_extent_m

if TYPE_CHECKING:
    import geopandas as gpd

#: how far (ground metres) around a block's features the features it is compared with reach: more
#: than any pairing distance (``max_offset_m``), tolerance or placebo move (60 m) of the comparison
MARGIN_M = 100.0


@dataclass(frozen=True)
class Inputs:
    """What a region is compared with (EPSG:4326 frames): predictions, the compared OSM features,
    the OSM ``context`` reaching in from outside and the ``low``-confidence predictions."""

    pred: gpd.GeoDataFrame
    osm: gpd.GeoDataFrame
    context: gpd.GeoDataFrame
    low: gpd.GeoDataFrame | None


def block_zoom(zoom: int, block_tiles: int) -> int:
    """The zoom of the blocks: ``block_tiles`` (a power of two) tiles at ``zoom`` a side."""
    return zoom - int(math.log2(block_tiles))


def block_keys(geoms_4326: np.ndarray, bz: int) -> np.ndarray:
    """The block (``x * 2**bz + y`` of a tile at zoom ``bz``) of each geometry's representative point."""
    g = np.asarray(geoms_4326, dtype=object)
    if not len(g):
        return np.empty(0, dtype=np.int64)
    pts = to_mercator(shapely.point_on_surface(g))
    e = tile_extent_m(bz)
    n = 1 << bz
    tx = np.clip(np.floor((shapely.get_x(pts) + HALF_WORLD_M) / e), 0, n - 1).astype(np.int64)
    ty = np.clip(np.floor((HALF_WORLD_M - shapely.get_y(pts)) / e), 0, n - 1).astype(np.int64)
    return tx * n + ty


def compare_region(inputs: Inputs, classes: tuple[ClassSpec, ...], spec: CompareSpec, evidence: Evidence | None,
                   resolvable_m2: float, held_out: set[tuple[int, int]], zoom: int) -> tuple[Comparison, Review]:
    """The region's comparison and review queue (:func:`pipeline.review.compare.compare`,
    :func:`pipeline.review.review.review`), block by block when it spans more than one block."""
    surround = pd.concat([inputs.osm, inputs.context], ignore_index=True)
    bz = block_zoom(zoom, spec.block_tiles) if spec.block_tiles else 0
    keys = {name: block_keys(df.geometry.to_numpy(), bz) for name, df in (("pred", inputs.pred), ("osm", inputs.osm))}
    # every block a prediction reaches: a candidate cut from it may lie where nothing has its point
    blocks = np.union1d(_reached(to_mercator(inputs.pred.geometry.to_numpy()), bz), keys["osm"])
    if not spec.block_tiles or len(blocks) <= 1:
        cmp = compare(inputs.pred, inputs.osm, classes, spec, evidence, resolvable_m2, inputs.low, inputs.context)
        cmp.summary["blocks"] = 1
        return cmp, review(cmp, inputs.pred, surround, classes, spec, held_out, zoom, evidence)
    with region_scale(ground_scale(to_mercator(inputs.osm.geometry.to_numpy()))):
        return _in_blocks(inputs, classes, spec, (evidence, resolvable_m2), held_out, zoom, (keys, blocks, bz))


def _in_blocks(inputs: Inputs, classes: tuple[ClassSpec, ...], spec: CompareSpec,
               evidence: tuple[Evidence | None, float], held_out: set[tuple[int, int]], zoom: int,
               where: tuple[dict[str, np.ndarray], np.ndarray, int]) -> tuple[Comparison, Review]:
    """:func:`compare_region` block by block (``where``: the rows' blocks, the blocks, their zoom)."""
    (evidence_of, resolvable_m2), (keys, blocks, bz) = evidence, where
    layers: dict[str, list[gpd.GeoDataFrame]] = {}
    partials: dict[str, dict[str, float]] = {}
    pools = []
    for b, local in _blocks(inputs, keys, blocks, bz):
        own = _owner(b, bz)
        cmp = compare(local.pred, local.osm, classes, spec, evidence_of, resolvable_m2, local.low, local.context,
                      own=own)
        mine = {(x, y) for x, y in held_out if (x >> (zoom - bz)) * (1 << bz) + (y >> (zoom - bz)) == b}
        pools.append(simulations(cmp, local.pred, pd.concat([local.osm, local.context], ignore_index=True),
                                 classes, spec, mine, zoom, evidence_of))
        for status, layer in cmp.layers.items():
            layers.setdefault(status, []).append(layer)
        for name, part in cmp.partials.items():
            sums = partials.setdefault(name, {})
            for k, v in part.items():
                sums[k] = v if k == "tol_m" else sums.get(k, 0.0) + v
    merged = {s: _concat(ls) for s, ls in layers.items()}
    cmp = Comparison(merged, summary_of(partials, merged, classes, spec, resolvable_m2), inputs.low, partials)
    cmp.summary["blocks"] = len(blocks)
    return cmp, scored(merged, pooled(pools), classes, spec, held_out, zoom)


def _reached(geoms_3857: np.ndarray, bz: int) -> np.ndarray:
    """The blocks (keys as :func:`block_keys`) the bounds of any of ``geoms_3857`` reach."""
    if not len(geoms_3857):
        return np.empty(0, dtype=np.int64)
    e, n = tile_extent_m(bz), 1 << bz
    b = shapely.bounds(geoms_3857)
    x0, x1 = (np.clip(np.floor((b[:, k] + HALF_WORLD_M) / e), 0, n - 1).astype(np.int64) for k in (0, 2))
    y0, y1 = (np.clip(np.floor((HALF_WORLD_M - b[:, k]) / e), 0, n - 1).astype(np.int64) for k in (3, 1))
    out = {int(x) * n + int(y) for a, c, d, f in zip(x0, x1, y0, y1) for x in range(a, c + 1) for y in range(d, f + 1)}
    return np.array(sorted(out), dtype=np.int64)


def _owner(b: int, bz: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda g: block_keys(g, bz) == b


def _concat(layers: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import geopandas as gpd

    full = [x for x in layers if len(x)]
    if not full:
        return layers[0]
    return ranked_rows(gpd.GeoDataFrame(pd.concat(full, ignore_index=True), geometry="geometry", crs="EPSG:4326"))


def _blocks(inputs: Inputs, keys: dict[str, np.ndarray], blocks: np.ndarray, bz: int
            ) -> Iterator[tuple[int, Inputs]]:
    """Each block and what it is compared with, class by class (classes are compared apart): the
    rows within :data:`MARGIN_M` of the block and of each row of the class it owns (a road traced
    across the region brings the roads along it, not the buildings), in the rows' own order."""
    frames: dict[str, Any] = {"pred": inputs.pred, "osm": inputs.osm, "context": inputs.context, "low": inputs.low}
    frames = {k: df for k, df in frames.items() if df is not None and len(df)}
    geoms = {k: df.geometry.to_numpy() for k, df in frames.items()}
    classes = {k: df["class"].to_numpy() for k, df in frames.items()}
    trees = {k: shapely.STRtree(g) for k, g in geoms.items()}  # EPSG:4326: no copies
    e = tile_extent_m(bz)
    n = 1 << bz
    for b in blocks.tolist():
        x, y = divmod(int(b), n)
        box = np.array([x * e - HALF_WORLD_M, HALF_WORLD_M - (y + 1) * e, (x + 1) * e - HALF_WORLD_M,
                        HALF_WORLD_M - y * e])
        grow = MARGIN_M * float(mercator_scale(max(abs(box[1]), abs(box[3]))))
        area = to_lonlat(np.array([shapely.box(*(box + np.array([-grow, -grow, grow, grow])))], dtype=object))[0]
        lat = float(np.max(np.abs(shapely.bounds(area)[[1, 3]])))
        reach = MARGIN_M / 110_574.0 / math.cos(math.radians(min(lat, 89.0)))  # degrees: at least MARGIN_M
        owned = {k: np.flatnonzero(keys[k] == b) for k in ("pred", "osm") if k in frames}
        local: dict[str, Any] = {}
        for k, tree in trees.items():
            rows = set(tree.query(area, predicate="intersects").tolist())
            for o, idx in owned.items():
                for name in np.unique(classes[o][idx]):
                    mine = idx[classes[o][idx] == name]
                    near = tree.query(geoms[o][mine], predicate="dwithin", distance=reach)[1]
                    rows.update(near[classes[k][near] == name].tolist())
            local[k] = frames[k].iloc[np.array(sorted(rows), dtype=np.int64)].reset_index(drop=True)
        empty = {k: df.iloc[:0] for k, df in (("pred", inputs.pred), ("osm", inputs.osm), ("context", inputs.context))}
        yield b, Inputs(local.get("pred", empty["pred"]), local.get("osm", empty["osm"]),
                        local.get("context", empty["context"]), local.get("low"))
