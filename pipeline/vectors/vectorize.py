"""Probability tiles -> polygons (area classes) and centrelines (line classes), merged across
tile and shard borders, filtered, simplified and (buildings, by default) regularised in metres.

Pipeline of one region:
1. :func:`tile_pieces` traces each tile's thresholded bands in *global pixel coordinates*
   (see :mod:`pipeline.vectors.merge`): connected components (4-connectivity) become polygons with holes
   along the pixel edges (:mod:`pipeline.vectors.trace`, the same outlines as
   ``rasterio.features.shapes``); line classes become skeleton paths (:mod:`pipeline.vectors.centerline`).
   Area classes with an edge band (:mod:`pipeline.vectors.instances`; ``[vectorize] instances``) are
   first split into instances by marker-based watershed (:mod:`pipeline.vectors.instance_split`), so
   touching buildings become separate polygons.
2. :func:`shard_pieces` merges the pieces that touch tile borders inside a shard
   (:func:`pipeline.vectors.merge.merge_open`); pieces still touching the shard's edge stay ``open``.
3. :func:`pipeline.vectors.finish.finish_shard` finishes the shard's closed pieces at once (they are whole) and keeps
   the open ones; the region merge joins the open pieces of all shards the same way: only
   border pieces are ever merged or held together, so no whole-region union is built, memory
   stays small and the cost is linear in tiles.
4. :func:`pipeline.vectors.finish.finish` converts pixels to EPSG:3857 metres, drops small polygons and holes (ground
   m²), simplifies (ground metres), regularises building classes (or those ``[vectorize]
   regularize`` names) and returns EPSG:4326 features.
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from pipeline.config.region import ClassSpec
from pipeline.config.vectorize import SOURCES, VectorizeSpec, parse_vectorize  # noqa: F401 - re-exported
from pipeline.core.errors import InputDataError
from pipeline.inference.probs import decode_prob_tile
from pipeline.tiles.geo import mercator_scale
from pipeline.tiles.tilemath import Tile, quadkey_to_tile, tile_bounds, tile_extent_m
from pipeline.vectors.centerline import padded, tile_lines
from pipeline.vectors.instance_split import split_instances, trace_instances
from pipeline.vectors.instances import edge_value
from pipeline.vectors.merge import concat_pieces, empty_pieces, merge_open, touches_box
from pipeline.vectors.table import Table
from pipeline.vectors.trace import trace

#: area classes are traced in blocks of this many tiles squared (one raster, no merge inside)
BLOCK_TILES = 8
#: pixels of the neighbouring tiles around a tile when skeletonising line classes
LINE_MARGIN_PX = 32
Loader = Callable[[Tile], "np.ndarray | None"]


def is_building_class(c: ClassSpec) -> bool:
    """True for an area class of buildings: named ``building`` or with a tag filter on a
    ``building*`` key (``building``, ``building=house|...``, ``building:part``)."""
    return c.kind == "area" and (c.name == "building" or any(t.key.startswith("building") for t in c.tags))


def regularized_classes(spec: VectorizeSpec, classes: Sequence[ClassSpec]) -> tuple[str, ...]:
    """The names of the classes whose polygons are regularised: ``[vectorize] regularize`` when
    it is set, else every building class (:func:`is_building_class`)."""
    if spec.regularize is not None:
        return spec.regularize
    return tuple(c.name for c in classes if is_building_class(c))


def threshold_u8(threshold: float) -> int:
    """The smallest uint8 probability ``v`` with ``v / 255 >= threshold``."""
    return max(1, math.ceil(threshold * 255 - 1e-9))


# ---------------------------------------------------------------------------------------------
# Reading tiles


def mask_to_probs(mask: np.ndarray, class_ids: Sequence[int], edges: Sequence[int] = ()) -> np.ndarray:
    """A label mask (H, W class ids; 255 = ignore; ``255 - id`` = the edge band of class ``id``)
    -> uint8 probabilities (C + E, H, W): 255 in the band of the pixel's class (its footprint:
    the class or its edge), 0 elsewhere (ignore pixels are 0 in every band); then per class of
    ``edges`` 255 on its edge band."""
    ids = np.asarray(class_ids, dtype=np.int64)[:, None, None]
    foot = (mask[None, :, :] == ids) | (mask[None, :, :] == edge_value(ids))
    e = edge_value(np.asarray(edges, dtype=np.int64))[:, None, None]
    return (np.concatenate([foot, mask[None, :, :] == e]) * np.uint8(255)).astype(np.uint8)


def read_tile(data: bytes, source: str, class_ids: Sequence[int], where: str, edges: Sequence[int] = ()) -> np.ndarray:
    """PNG bytes of a prediction or mask tile -> uint8 (C + E, H, W) probabilities: the classes,
    then the edge band of each class of ``edges`` (zero where the tile has none)."""
    if source == "predictions":
        arr, have = decode_prob_tile(data, len(class_ids), where)
        if not edges:
            return arr[:len(class_ids)]
        out = np.zeros((len(class_ids) + len(edges), *arr.shape[1:]), dtype=np.uint8)
        out[:len(class_ids)] = arr[:len(class_ids)]
        for j, cid in enumerate(edges):
            if cid in have:
                out[len(class_ids) + j] = arr[len(class_ids) + have.index(cid)]
        return out
    try:
        with Image.open(io.BytesIO(data)) as im:
            mask = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{where}: not a readable mask PNG ({exc}); delete it and rerun MasksAll") from exc
    if mask.ndim != 2:
        raise InputDataError(f"{where}: a mask must be one band of class ids, got shape {mask.shape}")
    return mask_to_probs(mask, class_ids, edges)


# ---------------------------------------------------------------------------------------------
# Tracing


@dataclass(frozen=True)
class Tracing:
    """What :func:`tile_pieces` traces and how: the ``classes`` (bands in ascending class id),
    the probability ``threshold``, the classes ``edges`` whose edge bands follow the class bands
    (split into instances), and the ground m² an instance's core needs to seed one
    (``marker_min_m2``)."""

    classes: Sequence[ClassSpec]
    threshold: float
    edges: Sequence[int] = ()
    marker_min_m2: float = VectorizeSpec.marker_min_m2


@dataclass(frozen=True)
class BlockPlace:
    """Where a block of tiles traced as one raster lies: ``origin`` its top-left pixel and
    ``box`` its extent for the ``open`` flags (global pixels), ``tile_size`` one tile's side."""

    origin: tuple[int, int]
    box: tuple[float, float, float, float]
    tile_size: int


def tile_pieces(probs: np.ndarray, t: Tile, tracing: Tracing, src: int = 0, load: Loader | None = None,
                kinds: tuple[str, ...] = ("area", "line"), block: BlockPlace | None = None) -> Columns:
    """The pieces of one tile as piece-table columns (numpy arrays; :func:`pieces_frame` makes
    the table): ``probs`` uint8 (C, H, W), bands in ascending class id of ``tracing.classes``;
    geometries in global pixel coordinates of ``t.z`` at the tile's size. With ``load`` (tile
    -> probs or None), line classes are skeletonised with ``LINE_MARGIN_PX`` pixels of the
    neighbouring tiles, so centrelines cross tile borders straight. Only classes of ``kinds``
    are traced. ``probs`` may also be a block of tiles placed by ``block`` (areas only; see
    :class:`BlockPlace`). The bands after the classes are the edge bands of the classes
    ``tracing.edges`` (:func:`read_tile`): those classes are split into instances, each interior
    of at least ``tracing.marker_min_m2`` ground m² seeding one."""
    edges = tracing.edges
    ordered = sorted(tracing.classes, key=lambda c: c.id)
    if probs.shape[0] != len(ordered) + len(edges):
        raise ValueError(f"tile {t}: {probs.shape[0]} bands for {len(ordered)} classes and {len(edges)} edges")
    size = probs.shape[1]
    x0, y0 = block.origin if block is not None else (t.x * size, t.y * size)
    thr = threshold_u8(tracing.threshold)
    box = block.box if block is not None else (x0, y0, x0 + probs.shape[2], y0 + size)
    tile_size = block.tile_size if block is not None else size
    parts: list[Columns] = []
    for k, (band, c) in enumerate(zip(probs, ordered)):
        if c.kind not in kinds or int(band.max()) < thr:
            continue
        if c.kind == "line":
            pb = padded(load, t, k, LINE_MARGIN_PX, size) if load is not None else band
            cols = _columns(tile_lines(pb, thr, x0, y0, LINE_MARGIN_PX if load is not None else 0))
        elif c.id in edges:
            edge = probs[len(ordered) + list(edges).index(c.id)]
            cols = _tile_polygons(band, thr, x0, y0, edge, _marker_px(t, tile_size, tracing.marker_min_m2))
        else:
            cols = _tile_polygons(band, thr, x0, y0)
        n = len(cols["geometry"])
        if n == 0:
            continue
        cols["class_id"] = np.full(n, c.id, dtype=np.int64)
        cols["kind"] = np.full(n, c.kind, dtype=object)
        cols["src"] = np.full(n, src, dtype=np.int64)
        cols["open"] = touches_box(cols["geometry"], box, 1.5 if c.kind == "line" else 0.0)
        parts.append(cols)
    return _concat_columns(parts)


Columns = dict[str, np.ndarray]


def _columns(rows: list[dict[str, Any]]) -> Columns:
    """Rows of :func:`pipeline.vectors.centerline.tile_lines` as columns."""
    return {"geometry": np.array([r["geometry"] for r in rows], dtype=object),
            "psum": np.array([r["psum"] for r in rows], dtype=np.float64),
            "count": np.array([r["count"] for r in rows], dtype=np.int64),
            "pmax": np.array([r["pmax"] for r in rows], dtype=np.int64)}


def _concat_columns(parts: list[Columns]) -> Columns:
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def pieces_frame(parts: list[Columns]) -> Table:
    """One piece table from the columns of many tiles."""
    cols = _concat_columns([p for p in parts if p])
    if not cols:
        return empty_pieces()
    return Table({k: cols[k] for k in empty_pieces().columns})


def _marker_px(t: Tile, size: int, m2: float) -> int:
    """Pixels of ``m2`` ground square metres at tile ``t``'s latitude and ``size``-px tiles."""
    _, bottom, _, top = tile_bounds(t)
    side = tile_extent_m(t.z) / size / float(mercator_scale((bottom + top) / 2))
    return max(1, math.ceil(m2 / (side * side)))


def _tile_polygons(p: np.ndarray, thr: int, x0: int, y0: int, edge: np.ndarray | None = None,
                   min_marker_px: int = 1) -> Columns:
    """Connected components (4-connectivity) of ``p >= thr`` as polygons with holes, with the
    sum, count and maximum of the probabilities of each component's pixels. With ``edge`` (the
    class's edge band), components are instances split along it (:mod:`pipeline.vectors.instance_split`)."""
    binary = p >= thr
    idx = np.flatnonzero(binary)
    split = edge is not None and bool(edge.any())
    if edge is not None and split:
        lab = split_instances(p, edge, thr, min_marker_px, pix=idx)
        n = int(lab.max())
    else:
        lab, n = ndimage.label(binary)
    labs = lab.ravel()[idx]
    vals = p.ravel()[idx]
    psum = np.bincount(labs, weights=vals, minlength=n + 1)
    cnt = np.bincount(labs, minlength=n + 1)
    pmax = np.zeros(n + 1, dtype=np.uint8)
    np.maximum.at(pmax, labs, vals)  # (same dtypes: numpy's fast path, far quicker than a sort)
    polys, comp = trace_instances(lab, x0, y0, pix=idx) if split else trace(binary, lab, x0, y0)
    return {"geometry": polys, "psum": psum[comp].astype(np.float64), "count": cnt[comp].astype(np.int64),
            "pmax": pmax[comp].astype(np.int64)}


def shard_box_px(shard: str, z: int, size: int) -> tuple[float, float, float, float]:
    """The box (x0, y0, x1, y1) of shard ``shard`` (a quadkey) in global pixel coordinates of ``z``."""
    p = quadkey_to_tile(shard)
    n = (1 << (z - p.z)) * size
    return (p.x * n, p.y * n, (p.x + 1) * n, (p.y + 1) * n)


#: the last reader :func:`cached_loader` wrapped and its cache (one at a time: memory stays bounded)
_LAST_CACHE: list[tuple[Loader, Loader]] = []


def cached_loader(read: Loader, classes: Sequence[ClassSpec], maxsize: int = 3 * 8 * BLOCK_TILES * BLOCK_TILES
                  ) -> Loader:
    """``read`` (tile -> uint8 probs or None) with an LRU cache when ``classes`` has a line class,
    so the neighbours a centreline's margins need are decoded once (the default holds three
    columns of blocks of a 64 x 64-tile shard); without line classes every tile is read once
    and nothing is cached. Called again with the same ``read`` (the shards of one region, one
    after the other), it returns the same cache, so a tile read for a neighbouring shard's
    margins is not decoded twice; a new ``read`` replaces the cache (one is held at a time)."""
    if not any(c.kind == "line" for c in classes):
        return read
    if _LAST_CACHE and _LAST_CACHE[0][0] is read:
        return _LAST_CACHE[0][1]
    cached: Loader = functools.lru_cache(maxsize=maxsize)(read)
    _LAST_CACHE[:] = [(read, cached)]
    return cached


def shard_pieces(tiles: Sequence[Tile], load: Loader, classes: Sequence[ClassSpec], threshold: float,
                 box: tuple[float, float, float, float] | None, src_id: int = 0, edges: Sequence[int] = (),
                 marker_min_m2: float = VectorizeSpec.marker_min_m2) -> Table:
    """Trace every tile of ``tiles`` (read through ``load``, best :func:`cached_loader`) and merge
    the pieces across tile borders; pieces that reach the edge of ``box`` (the shard, in global
    pixels) stay ``open``. Area classes are traced per block of ``BLOCK_TILES``² tiles (one
    raster: nothing to merge inside a block), line classes per tile with margins from the
    neighbouring tiles; blocks are visited column by column so those neighbours stay cached.
    ``edges``: the classes whose edge bands follow the class bands (see :func:`tile_pieces`)."""
    tracing = Tracing(classes, threshold, edges, marker_min_m2)
    parts = []
    blocks: dict[tuple[int, int], list[Tile]] = {}
    for t in sorted(tiles):
        blocks.setdefault((t.x // BLOCK_TILES, t.y // BLOCK_TILES), []).append(t)
    lines = any(c.kind == "line" for c in classes)
    i = 0
    for b, ((bx, by), ts) in enumerate(sorted(blocks.items())):  # one block in memory at a time
        items = []
        for t in ts:
            probs = load(t)
            if probs is None:
                continue
            items.append((t, probs))
            if lines:
                parts.append(tile_pieces(probs, t, tracing, src=i, load=load, kinds=("line",)))
            i += 1
        if items:
            parts.append(_block_pieces(items, bx, by, tracing, b, box))
    return merge_open(pieces_frame(parts), box, src_id, tuple(edges))


def _block_pieces(items: list[tuple[Tile, np.ndarray]], bx: int, by: int, tracing: Tracing, src: int,
                  shard_box: tuple[float, float, float, float] | None) -> Columns:
    """Area pieces of a block of up to BLOCK_TILES x BLOCK_TILES tiles, traced as one raster
    (no merge needed inside the block); ``open`` means reaching the block's (or shard's) edge."""
    t0 = items[0][0]
    c, size = items[0][1].shape[0], items[0][1].shape[1]
    x0, y0 = bx * BLOCK_TILES, by * BLOCK_TILES
    nx = max(t.x for t, _ in items) - x0 + 1
    ny = max(t.y for t, _ in items) - y0 + 1
    canvas = np.zeros((c, ny * size, nx * size), dtype=np.uint8)
    for t, probs in items:
        canvas[:, (t.y - y0) * size:(t.y - y0 + 1) * size, (t.x - x0) * size:(t.x - x0 + 1) * size] = probs
    box = (x0 * size, y0 * size, (x0 + nx) * size, (y0 + ny) * size)
    if shard_box is not None:
        box = (max(box[0], shard_box[0]), max(box[1], shard_box[1]), min(box[2], shard_box[2]),
               min(box[3], shard_box[3]))
    return tile_pieces(canvas, t0, tracing, src=src, kinds=("area",),
                       block=BlockPlace(origin=(x0 * size, y0 * size), box=box, tile_size=size))


def region_pieces(shards: Iterable[Table], edges: Sequence[int] = ()) -> Table:
    """Join the shards' pieces: their open pieces are merged across shard borders (each shard's
    pieces must carry a distinct ``src``; ``edges``: the classes split into instances)."""
    return merge_open(concat_pieces(list(shards)), None, -1, tuple(edges))
