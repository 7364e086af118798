"""Luigi task ``SplitDataset``: image/mask pairs -> ``split.csv`` + ``split_stats.json``."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.atomic import atomic_write_json
from tasks.base import RegionTask, locked


class SplitDataset(RegionTask):
    """Spatially blocked train/val/test split of the region's tiles, with the training split's
    band statistics and class pixel shares (``[split]`` in the region config)."""

    needs_labels = True

    stage = "split"

    def owned_files(self) -> list[Path]:
        return [*super().owned_files(), self.data_dir / "split.csv", self.data_dir / "split_stats.json"]

    @locked
    def run(self) -> None:
        from pipeline.model.split import make_split, write_split_csv

        cfg = self.cfg
        self.progress(0, 1, "split")
        rows, stats = make_split(cfg.data_dir, cfg.split, cfg.zoom)
        write_split_csv(cfg.data_dir / "split.csv", rows)
        atomic_write_json(cfg.data_dir / "split_stats.json", stats)
        files = {}
        for name in ("split.csv", "split_stats.json"):
            files[name] = {"size": (cfg.data_dir / name).stat().st_size}
        self.output().write({"root": str(cfg.data_dir), "files": files, "tiles": stats["tiles"],
                             "counts": stats["counts"], "band_stats": stats["band_stats"],
                             "class_shares": stats["class_shares"]})
