"""Luigi tasks ``RasterizeMasks`` (one shard) and ``MasksAll`` (every shard of the region)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from pipeline.cover import read_tiles_csv, shard_tiles
from pipeline.geo import mercator_to_lonlat
from pipeline.io import read_features, reset_dir, write_tile_files
from pipeline.masks import mask_pngs, prepare_burn
from pipeline.tiles import Tile, quadkey_to_tile, tile_bounds
from tasks.base import AllShardsTask, ShardTask
from tasks.cover import CoverTiles
from tasks.extract import ExtractFeatures


def _shard_bbox_lonlat(shard: str, margin_m: float) -> tuple[float, float, float, float]:
    """(W, S, E, N) degrees of a shard, grown by ``margin_m`` web-mercator metres."""
    left, bottom, right, top = tile_bounds(quadkey_to_tile(shard))
    corners = np.array([[left - margin_m, bottom - margin_m], [right + margin_m, top + margin_m]])
    (w, s), (e, n) = mercator_to_lonlat(corners)
    return (float(w), float(s), float(e), float(n))


class RasterizeMasks(ShardTask):
    """Burn the label masks of every tile of one shard into ``masks/z/x/y.png``."""

    stage = "masks"
    product = "masks"

    def requires(self) -> Any:
        return [CoverTiles(config=self.config), ExtractFeatures(config=self.config)]

    def run(self) -> None:
        cfg = self.cfg
        tiles = shard_tiles(read_tiles_csv(self.data_dir / "tiles.csv"), str(self.shard))
        margin = 4 * max((c.buffer_m for c in cfg.classes), default=0.0) + 4 * max(
            (b for c in cfg.classes for _, b in c.buffer_m_by_value), default=0.0) + 1.0
        feats = read_features(self.data_dir / "features.parquet", bbox=_shard_bbox_lonlat(str(self.shard), margin))
        burn = prepare_burn(feats, cfg.classes)
        pngs = mask_pngs(burn, tiles, cfg.tile_size, cfg.palette(), cfg.ignore_ring_px)
        scratch = reset_dir(self.scratch_dir())
        files = write_tile_files(self.product_dir(), self._progress(pngs, len(tiles)), "png", scratch)
        scratch.rmdir()
        self.output().write({"root": str(self.product_dir()), "shard": str(self.shard),
                             "tiles": len(files), "files": files})

    def _progress(self, items: Iterator[tuple[Tile, bytes]], total: int) -> Iterator[tuple[Tile, bytes]]:
        for i, item in enumerate(items):
            if i % 256 == 0:
                self.progress(i, total, f"masks {self.shard}")
            yield item


class MasksAll(AllShardsTask):
    """Every shard's masks; its manifest summarises tiles, shards and classes."""

    stage = "masks"
    product = "masks"

    def shard_task(self, shard: str) -> ShardTask:
        return RasterizeMasks(config=self.config, shard=shard)

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        return {"tiles": len(tiles), "shards": len(done), "palette": "class ids; 255 = ignore",
                "classes": {c.name: c.id for c in self.cfg.classes}}
