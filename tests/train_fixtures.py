"""Seeded generated tile regions for the dataset and training tests (no Luigi, no OSM).

A region is a grid of z18 tiles with image tiles (noisy ground, bright roofs) and mask tiles
(0 ground, 1 building, 255 along roof edges), and the shard manifests that
``pipeline.tiles.index.read_tile_index`` reads; one tile may be left without imagery ("nodata").
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.manifests import write_manifest
from pipeline.tiles.tilemath import Tile, quadkey
from pipeline.tiles.writer import TileStatus, write_tile_files

Z, SHARD_Z = 18, 16
X0, Y0 = 154_000, 130_000  # a multiple of 4: the grid starts on a z16 shard corner


def tile_arrays(rng: np.random.Generator, size: int, buildings: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 RGB image, uint8 mask) of one tile with ``buildings`` rectangular roofs."""
    img = np.clip(rng.normal((70, 100, 60), 18, (size, size, 3)), 0, 255)
    mask = np.zeros((size, size), np.uint8)
    for _ in range(buildings):
        w, h = rng.integers(size // 8, size // 3, 2)
        x, y = rng.integers(0, size - w), rng.integers(0, size - h)
        img[y : y + h, x : x + w] = np.clip(rng.normal((200, 90, 70), 12, (h, w, 3)), 0, 255)
        mask[y : y + h, x : x + w] = 1
        mask[y, x : x + w] = 255  # an ignored edge row
    return img.astype(np.uint8), mask


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def write_region(data_dir: Path, n: int = 4, size: int = 64, seed: int = 0, nodata: tuple[int, int] | None = None,
                 empty: bool = False) -> list[Tile]:
    """Write an ``n`` x ``n`` grid of tiles under ``data_dir`` (images, masks, shard manifests).

    ``nodata`` (column, row) is a tile without imagery; ``empty`` makes every mask background."""
    rng = np.random.default_rng(seed)
    tiles = [Tile(Z, X0 + i, Y0 + j) for j in range(n) for i in range(n)]
    shards: dict[str, list[Tile]] = {}
    for t in tiles:
        shards.setdefault(quadkey(Tile(SHARD_Z, t.x >> (Z - SHARD_Z), t.y >> (Z - SHARD_Z))), []).append(t)
    for qk, members in sorted(shards.items()):
        imgs, masks, status = [], [], {}
        for t in members:
            img, mask = tile_arrays(rng, size, 0 if empty else int(rng.integers(0, 4)))
            masks.append((t, _png(mask)))
            if nodata is not None and (t.x - X0, t.y - Y0) == nodata:
                status[str(t)] = TileStatus.NODATA
            else:
                imgs.append((t, _png(img)))
                status[str(t)] = "ok"
        for product, items, st in (("images", imgs, status), ("masks", masks, None)):
            root = data_dir / product
            files = write_tile_files(root, items, "png", root / "_tmp")
            body = {"root": str(root), "shard": qk, "files": files, **({"status": st} if st else {})}
            write_manifest(root / "_shards" / f"{qk}.json", "test", body)
    return tiles
