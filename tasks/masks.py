"""Luigi tasks ``RasterizeMasks`` (one shard) and ``MasksAll`` (every shard of the region)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from tasks.base import AllShardsTask, ShardTask, locked

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.tiles.tilemath import Tile


class RasterizeMasks(ShardTask):
    """Burn the label masks of every tile of one shard into ``masks/z/x/y.png``."""

    needs_labels = True

    stage = "masks"
    product = "masks"
    reads_tile_table = True

    def run_imports(self) -> tuple[str, ...]:
        return (*super().run_imports(), "pipeline.labels.features", "pipeline.labels.feedback",
                "pipeline.tiles.masks", "pipeline.vectors.instances", "geopandas", "pyproj", "scipy.ndimage")

    @locked
    def run(self) -> None:
        from pipeline.labels.features import read_features
        from pipeline.labels.feedback import load_feedback
        from pipeline.tiles.masks import mask_palette, mask_pngs, prepare_burn, shard_read_bbox

        cfg = self.cfg
        with self.writer(("png",)) as out:
            if out.current:  # another run finished this shard while we waited for it
                return
            tiles = self.tiles()
            feats = read_features(self.data_dir / "features.parquet",
                                  bbox=shard_read_bbox(str(self.shard), cfg.classes))
            burn = prepare_burn(feats, cfg.classes, cfg.edge_ids, load_feedback(cfg.labels))
            pngs = mask_pngs(burn, tiles, cfg.tile_size, mask_palette(cfg.classes), cfg.masks.ignore_ring_px,
                             cfg.masks.edge_px if cfg.edge_ids else 0)
            out.write_many(self._progress(pngs, len(tiles)), "png")
            out.commit()

    def _progress(self, items: Iterator[tuple[Tile, bytes]], total: int) -> Iterator[tuple[Tile, bytes]]:
        for i, item in enumerate(items):
            if i % 256 == 0:
                self.progress(i, total, f"masks {self.shard}")
            yield item
        self.progress(total, total, f"masks {self.shard}")


class MasksAll(AllShardsTask):
    """Every shard's masks; its manifest summarises tiles, shards and classes."""

    needs_labels = True

    stage = "masks"
    product = "masks"

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        from pipeline.vectors.instances import edge_value

        return {"tiles": len(tiles), "shards": len(done), "palette": "class ids; 255 = ignore; 255 - id = edge band",
                "classes": {c.name: c.id for c in self.cfg.classes},
                "edges": {c.name: edge_value(c.id) for c in self.cfg.classes if c.id in self.cfg.edge_ids}}
