"""Benchmark: vectorisation (tiles/s) and the region merge (features/s), with peak memory, at
three region sizes up to 25 km² of z19 tiles (256 px); compared with the plain way
(``rasterio.features.shapes`` per tile, then one ``unary_union`` of everything).

    python -m bench.bench_vectorize [--sizes 1,6.25,25] [--no-regularize] [--regularizer R] [--no-plain]

Synthetic probability tiles (PNG bytes in memory, decoded in the timed loop as Vectorize
does): rotated rectangles of 6-14 m on a jittered 20 m grid (2,500 houses per km², about 15
per tile, a third of them cut by tile borders); one area class (building). One core. Each
phase runs in a fresh process, so its peak RSS is its own (it inherits the imports and the
PNG bytes, about 3 KB per tile: some 170 MiB in all; the tiles are made in a process of their
own, so the generator's shapes and heap are not counted). Rates are per CPU second of the phase's
process (``time.process_time``), so a busy shared machine does not skew them; ``total_s`` is
wall time.

Our phases, as the tasks run them: ``Vectorize`` per shard (64 x 64 tiles: tracing, merge
across tile borders inside the shard, finishing the shard's closed features) and
``MergeFeatures`` (merge of the pieces on shard borders, finish, concatenation in order);
features/s = all features of the region / the MergeFeatures time. The defaults square the
building class (``pipeline.vectors.square``; ``--regularizer buildingregulariser``: the library,
about 6 ms of CPU per building, most of the time at 2,500 buildings per km²); ``--no-regularize``
does the plain baseline's work.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import rasterize, shapes

from bench.common import report, run_phase
from pipeline.config.region import ClassSpec, TagFilter
from pipeline.inference.probs import decode_probs, encode_probs
from pipeline.tiles.geo import mercator_scale
from pipeline.tiles.tilemath import Tile, shard_of, tile_bounds, tile_extent_m, tile_transform
from pipeline.vectors.finish import finish_shard_table
from pipeline.vectors.region import merge_tables
from pipeline.vectors.vectorize import (
    VectorizeSpec,
    cached_loader,
    shard_box_px,
    shard_pieces,
)

Z, SIZE, SHARD_Z = 19, 256, 13
BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
X0, Y0 = 310_000, 262_000  # z19 tiles near 32.9° E, 0.2° S (0.3 m pixels)


def make_tiles(km2: float, seed: int = 0) -> dict[Tile, bytes]:
    """A square block of z19 tiles covering about ``km2`` square kilometres, as PNG bytes."""
    lat = 0.2
    tile_m = tile_extent_m(Z) * math.cos(math.radians(lat))
    n = max(2, round(math.sqrt(km2 * 1e6) / tile_m))
    rng = np.random.default_rng(seed)
    left, _, _, top = tile_bounds(Tile(Z, X0, Y0))
    side = n * tile_extent_m(Z)
    k = int(side // 20)  # a jittered 20 m grid: houses of 6-14 m, none overlapping
    gx, gy = np.meshgrid(np.arange(k), np.arange(k))
    count = k * k
    cx = left + 10 + gx.ravel() * 20 + rng.uniform(-2, 2, count)
    cy = top - 10 - gy.ravel() * 20 + rng.uniform(-2, 2, count)
    w, h = rng.uniform(6, 14, count), rng.uniform(6, 12, count)
    ang = rng.uniform(0, 90, count)
    rects = [shapely.affinity.rotate(shapely.box(x - a / 2, y - b / 2, x + a / 2, y + b / 2), t)
             for x, y, a, b, t in zip(cx, cy, w, h, ang)]
    tree = shapely.STRtree(rects)
    vals = rng.integers(140, 256, len(rects))
    out = {}
    for i in range(n):
        for j in range(n):
            t = Tile(Z, X0 + i, Y0 + j)
            hit = tree.query(shapely.box(*tile_bounds(t)))
            arr = np.zeros((1, SIZE, SIZE), dtype=np.uint8)
            if len(hit):
                arr[0] = rasterize([(rects[k], int(vals[k])) for k in hit], (SIZE, SIZE),
                                   transform=tile_transform(t, SIZE), dtype=np.uint8)
            out[t] = encode_probs(arr)
    return out


def ours(tiles: dict[Tile, bytes], spec: VectorizeSpec | None = None) -> dict[str, Any]:
    import time

    t0 = time.process_time()
    load = cached_loader(lambda t: decode_probs(tiles[t], 1) if t in tiles else None, (BUILDING,))
    by_shard: dict[str, list[Tile]] = {}
    for t in tiles:
        by_shard.setdefault(shard_of(t, SHARD_Z), []).append(t)
    spec = spec or VectorizeSpec()
    done, parts = [], []
    for k, (s, ts) in enumerate(sorted(by_shard.items())):  # Vectorize, shard by shard
        pieces = shard_pieces(ts, load, (BUILDING,), 0.5, shard_box_px(s, Z, SIZE), k)
        finished, still_open = finish_shard_table(pieces, (BUILDING,), spec, Z, SIZE)
        done.append(finished)
        parts.append(still_open)
    t1 = time.process_time()
    feats = merge_tables(done, parts, (BUILDING,), spec, Z, SIZE)  # MergeFeatures, as the task calls it
    t2 = time.process_time()
    return {"vectorize_s": t1 - t0, "merge_s": t2 - t1, "features": len(feats), "shards": len(by_shard),
            "open": int(sum(len(p) for p in parts)), "merged": len(feats) - int(sum(len(d) for d in done))}


def plain(tiles: dict[Tile, bytes]) -> dict[str, Any]:
    """The plain way: rasterio shapes per tile in mercator metres, then one unary_union."""
    import time

    t0 = time.process_time()
    polys = []
    for t, data in tiles.items():
        p = decode_probs(data, 1)[0]
        binary = p >= 128
        if not binary.any():
            continue
        tr: Affine = tile_transform(t, SIZE)
        polys += [shapely.geometry.shape(g) for g, _ in shapes(binary.astype(np.uint8), mask=binary, transform=tr)]
    t1 = time.process_time()
    merged = shapely.get_parts(shapely.union_all(polys))
    scale = mercator_scale(shapely.get_y(shapely.centroid(merged)))
    merged = merged[shapely.area(merged) / scale**2 >= 2.0]
    t2 = time.process_time()
    return {"vectorize_s": t1 - t0, "merge_s": t2 - t1, "features": len(merged)}


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,6.25,25", help="region sizes in km², comma separated")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain shapes + unary_union baseline")
    ap.add_argument("--no-regularize", action="store_true",
                    help="[vectorize] regularize = [] (no building regularisation: the plain baseline's work)")
    ap.add_argument("--regularizer", default="", help="[vectorize] regularizer (default: square)")
    args = ap.parse_args(argv)
    spec = VectorizeSpec(regularize=()) if args.no_regularize else VectorizeSpec(regularizer=args.regularizer)
    what = ", not regularised" if args.no_regularize else f", buildings regularised ({args.regularizer or 'square'})"
    for km2 in (float(s) for s in args.sizes.split(",")):
        tiles = run_phase(make_tiles, km2)[0]  # the generator's garbage stays in its own process
        n = len(tiles)
        res, wall, peak = run_phase(ours, tiles, spec)
        report(f"vectorize {km2:g} km² ({n} z19 tiles, 256 px{what})", n / res["vectorize_s"], "tiles/s",
               shards=res["shards"], open=res["open"], peak_MiB=round(peak))
        report(f"merge + finish {km2:g} km²", res["features"] / res["merge_s"], "features/s", merged=res["merged"],
               features=res["features"], s=round(res["merge_s"], 2), total_s=round(wall, 2), peak_MiB=round(peak))
        if not args.no_plain:
            res, wall, peak = run_phase(plain, tiles)
            report(f"  plain shapes {km2:g} km²", n / res["vectorize_s"], "tiles/s", peak_MiB=round(peak))
            report(f"  plain unary_union {km2:g} km²", res["features"] / res["merge_s"], "features/s",
                   features=res["features"], total_s=round(wall, 2), peak_MiB=round(peak))


if __name__ == "__main__":
    main(sys.argv[1:])
