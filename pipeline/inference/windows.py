"""Image tiles and the windows a model sees: each tile with a border of context from its
neighbours, and blocks of tiles predicted as one mosaic. Torch-free (numpy, Pillow).

A tile of ``T`` pixels is predicted from a window of ``T + 2b`` pixels: the tile itself and a
border of ``b`` pixels taken from its 8 neighbouring tiles (slippy-map tiles, y counted from the
north). A neighbour without imagery is replaced by the mirror image of what lies on the tile's
side of that edge, so the tile's own pixels are never shifted or stretched. ``b`` is rounded up
to a multiple of the model's output stride (32 for the smp encoders), so the strided layers see
the same pixel phase whether the tile is predicted alone or inside a larger mosaic.

A **block** is a rectangle of up to ``n x n`` tiles of one aligned cell of the tile grid
(``x // n``, ``y // n``), predicted as one window with the border once around it: the context
then costs ``((n T + 2b) / n T)^2`` of the pixels instead of ``((T + 2b) / T)^2`` (1.27x instead
of 2.25x for 256-px tiles, a 64-px border and n = 4). Each tile of the block sees exactly what it
would see alone where its neighbours have imagery; a block cell's tiles without imagery are
filled with the band means (zero after normalisation, as a convolution's padding).

Tiles are plain ``(z, x, y)`` tuples; the caller gives a mapping from tile to image file.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import InputDataError

TileKey = tuple[int, int, int]  # (z, x, y)

# ---------------------------------------------------------------------------------------------
# Image tiles


def read_image(path: str | Path) -> np.ndarray:
    """An image tile -> uint8 (bands, height, width), decoded exactly as training decodes it
    (:func:`pipeline.model.split.read_image`: palette expanded, alpha dropped)."""
    from pipeline.model.split import read_image as read_hwc

    return np.ascontiguousarray(read_hwc(path).transpose(2, 0, 1))


class TileReader:
    """Decoded image tiles by ``(z, x, y)`` from ``{tile: path}``, with a small LRU cache (a tile
    is read once for itself and up to 8 times as a neighbour)."""

    def __init__(self, paths: Mapping[TileKey, Path], cache_tiles: int = 512) -> None:
        self.paths = paths
        self.cache_tiles = cache_tiles
        self._cache: OrderedDict[TileKey, np.ndarray] = OrderedDict()

    def __contains__(self, key: TileKey) -> bool:
        return key in self.paths

    def get(self, key: TileKey) -> np.ndarray | None:
        """The tile's uint8 (bands, h, w) array, or None when the region has no imagery there."""
        if key not in self.paths:
            return None
        arr = self._cache.get(key)
        if arr is None:
            arr = read_image(self.paths[key])
            self._cache[key] = arr
            if len(self._cache) > self.cache_tiles:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return arr


def image_paths(data_dir: Path, shard: str | Sequence[str] | None = None) -> dict[tuple[int, int, int], Path]:
    """``{(z, x, y): image file}`` of every tile with imagery (the images' tile index), or of one
    shard, or of several."""
    return {k: data_dir / "images" / p for k, p in image_paths_of(data_dir / "images", shard).items()}


def image_paths_near(data_dir: Path, shard: str) -> dict[tuple[int, int, int], Path]:
    """:func:`image_paths` of shard ``shard`` and the shards around it: every tile whose imagery
    a shard's context windows can need, read from the index without listing the whole region."""
    from pipeline.tiles.tilemath import shard_and_neighbours

    return image_paths(data_dir, shard_and_neighbours(shard))


def image_paths_of(product_dir: Path, shard: str | Sequence[str] | None = None) -> dict[tuple[int, int, int], str]:
    """``{(z, x, y): path relative to product_dir}`` of the written tiles of a sharded product
    (from its shard manifests: ``read_tile_index``), or of one shard, or of several."""
    from pipeline.tiles.index import written_tiles

    idx = written_tiles(product_dir, shard)
    return {(int(z), int(x), int(y)): str(p) for z, x, y, p in zip(idx.z, idx.x, idx.y, idx.path)}


# ---------------------------------------------------------------------------------------------
# Context windows


def plan_border(tile_size: int, context_px: int, stride: int) -> int:
    """The context border in pixels: ``context_px`` rounded up to a multiple of ``stride``, at
    most ``tile_size`` (a neighbour gives no more). With ``tile_size`` a multiple of ``stride``
    the window ``tile_size + 2 * border`` then is one too."""
    if context_px <= 0:
        return 0
    b = math.ceil(context_px / stride) * stride
    return min(b, tile_size)


def context_window(centre: np.ndarray, neighbours: Mapping[tuple[int, int], np.ndarray | None],
                   border: int, where: str = "image tile") -> np.ndarray:
    """(bands, T + 2b, T + 2b) window: ``centre`` (bands, T, T) in the middle, its border from the
    ``neighbours`` keyed by ``(dx, dy)`` (dx east, dy south), each (bands, T, T) or None;
    ``where`` names the tile in errors.

    A missing edge neighbour is the centre mirrored across that edge (``numpy.pad`` 'symmetric');
    a missing corner is the strip beside it mirrored across the edge whose neighbour is missing
    (so with no neighbour at all the window equals ``numpy.pad(centre, b, 'symmetric')``)."""
    c, t, t2 = centre.shape
    if t != t2:
        raise InputDataError(f"{where}: {t}x{t2} px is not square; rerun ImageryAll")
    b = border
    if b == 0:
        return centre
    if b > t:
        raise ValueError(f"border {b} px is larger than the tile ({t} px)")
    w = t + 2 * b
    win = np.empty((c, w, w), dtype=centre.dtype)
    win[:, b:b + t, b:b + t] = centre
    mid, lo, hi = slice(b, b + t), slice(0, b), slice(b + t, w)

    def nb(dx: int, dy: int) -> np.ndarray | None:
        arr = neighbours.get((dx, dy))
        if arr is not None and arr.shape != centre.shape:
            raise InputDataError(f"{where}: its neighbour ({dx:+d}, {dy:+d}) has shape {arr.shape}, the tile "
                                 f"{centre.shape}; a region's image tiles must share size and bands: rerun ImageryAll")
        return arr

    left, right, top, bottom = nb(-1, 0), nb(1, 0), nb(0, -1), nb(0, 1)
    win[:, mid, lo] = left[:, :, t - b:] if left is not None else centre[:, :, :b][:, :, ::-1]
    win[:, mid, hi] = right[:, :, :b] if right is not None else centre[:, :, t - b:][:, :, ::-1]
    win[:, lo, mid] = top[:, t - b:, :] if top is not None else centre[:, :b, :][:, ::-1, :]
    win[:, hi, mid] = bottom[:, :b, :] if bottom is not None else centre[:, t - b:, :][:, ::-1, :]
    for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        rows, cols = (lo if dy < 0 else hi), (lo if dx < 0 else hi)
        corner = nb(dx, dy)
        if corner is not None:
            win[:, rows, cols] = corner[:, (slice(t - b, t) if dy < 0 else slice(0, b)),
                                        (slice(t - b, t) if dx < 0 else slice(0, b))]
        elif nb(dx, 0) is None or nb(0, dy) is not None:
            # mirror the strip above/below the tile across the vertical edge
            src = win[:, rows, b:2 * b] if dx < 0 else win[:, rows, t:t + b]
            win[:, rows, cols] = src[:, :, ::-1]
        else:
            # the side neighbour exists, the one above/below does not: mirror across the horizontal edge
            src = win[:, b:2 * b, cols] if dy < 0 else win[:, t:t + b, cols]
            win[:, rows, cols] = src[:, ::-1, :]
    return win


def tile_window(reader: TileReader, key: TileKey, border: int) -> np.ndarray:
    """The context window of tile ``key`` from the reader's tiles (neighbours mirrored when missing)."""
    centre = reader.get(key)
    if centre is None:
        raise InputDataError(f"tile {key[0]}/{key[1]}/{key[2]} has no image tile to predict")
    z, x, y = key
    neighbours = {(dx, dy): reader.get((z, x + dx, y + dy)) if border else None
                  for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)}
    return context_window(centre, neighbours, border, where=f"image tile {z}/{x}/{y} ({reader.paths[key]})")


# ---------------------------------------------------------------------------------------------
# Blocks: several tiles in one window


@dataclass(frozen=True)
class Block:
    """A rectangle of tiles predicted as one window: the tiles ``(z, x0 + i, y0 + j)`` for
    ``0 <= i < cols``, ``0 <= j < rows`` that are in ``keys`` (the others have no imagery)."""

    z: int
    x0: int
    y0: int
    cols: int
    rows: int
    keys: tuple[TileKey, ...]


def plan_blocks(keys: Sequence[TileKey], n: int) -> list[Block]:
    """``keys`` grouped by the aligned ``n x n`` cells of the tile grid, each cell cut to the
    bounding rectangle of its tiles; blocks in row-major order of their cells, tiles in
    row-major order inside (n = 1: one block per tile)."""
    cells: dict[tuple[int, int, int], list[TileKey]] = {}
    for k in keys:
        cells.setdefault((k[0], k[2] // max(1, n), k[1] // max(1, n)), []).append(k)
    out = []
    for (z, _, _), ks in sorted(cells.items()):
        xs, ys = [k[1] for k in ks], [k[2] for k in ks]
        x0, y0 = min(xs), min(ys)
        out.append(Block(z, x0, y0, max(xs) - x0 + 1, max(ys) - y0 + 1,
                         tuple(sorted(set(ks), key=lambda k: (k[2], k[1])))))
    return out


def block_window(reader: TileReader, block: Block, tile_size: int, border: int,
                 fill: Sequence[int] | np.ndarray) -> np.ndarray:
    """(bands, rows T + 2b, cols T + 2b) window of ``block``: every tile's own context window
    (:func:`tile_window`) pasted at its place, so each tile sees its real neighbours and, where a
    neighbour has no imagery, the same mirrored strip it sees alone; what no window covers (inside
    tiles without imagery) is ``fill`` per band (the band means)."""
    t, b = tile_size, border
    wins = {k: tile_window(reader, k, b) for k in block.keys}
    first = next(iter(wins.values()))
    canvas = np.empty((first.shape[0], block.rows * t + 2 * b, block.cols * t + 2 * b), dtype=first.dtype)
    canvas[:] = np.asarray(fill, dtype=first.dtype).reshape(-1, 1, 1)
    for (_, x, y), win in wins.items():
        r, c = (y - block.y0) * t, (x - block.x0) * t
        canvas[:, r:r + t + 2 * b, c:c + t + 2 * b] = win
    return canvas


def block_tiles(block: Block, probs: np.ndarray, tile_size: int, border: int) -> list[tuple[TileKey, np.ndarray]]:
    """Cut the block's (K, rows T + 2b, cols T + 2b) output into its tiles' (K, T, T) centres."""
    t, b = tile_size, border
    return [(k, probs[:, b + (k[2] - block.y0) * t:b + (k[2] - block.y0 + 1) * t,
                      b + (k[1] - block.x0) * t:b + (k[1] - block.x0 + 1) * t]) for k in block.keys]
