"""Base classes for thin Luigi tasks: a region task reads one config and writes one manifest.

A task's Luigi output is a manifest JSON written last and atomically; the task is complete
only when the manifest exists, records today's chained config digest
(:func:`pipeline.stages.stage_digest`), and the files it lists still have their sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import luigi
import pandas as pd

from pipeline.config import RegionConfig, load_config
from pipeline.cover import read_tiles_csv
from pipeline.io import manifest_is_current, write_manifest
from pipeline.stages import file_fingerprint, stage_digest


class ManifestTarget(luigi.Target):
    """A manifest file that counts as existing only when it records ``digest``."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = Path(path)
        self.digest = digest

    def exists(self) -> bool:
        return manifest_is_current(self.path, self.digest)

    def write(self, body: dict[str, Any]) -> None:
        write_manifest(self.path, self.digest, body)


class RegionTask(luigi.Task):
    """A task over one region, named by the path of its config TOML."""

    config = luigi.Parameter(description="path to the region config, e.g. configs/helsinki.toml")
    stage: ClassVar[str] = ""

    @property
    def cfg(self) -> RegionConfig:
        """The region config, reloaded when the file changes (Luigi reuses task instances)."""
        key = file_fingerprint(self.config)
        cached = self.__dict__.get("_cfg")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_cfg"] = (key, load_config(self.config))
        return cached[1]

    @property
    def data_dir(self) -> Path:
        return self.cfg.data_dir

    def digest(self) -> str:
        """Today's chained config digest of this task's stage (recomputed on every check)."""
        return stage_digest(self.cfg, self.stage)

    def manifest_path(self) -> Path:
        """Where this task's manifest lives; override in tasks with several instances."""
        return self.data_dir / "_manifests" / f"{self.stage}.json"

    def output(self) -> ManifestTarget:
        return ManifestTarget(self.manifest_path(), self.digest())

    def progress(self, done: int, total: int, what: str) -> None:
        """Report progress to the Luigi scheduler (status message and percentage), when run by a worker."""
        if self.set_status_message is not None:
            self.set_status_message(f"{what}: {done}/{total}")
        if self.set_progress_percentage is not None:
            self.set_progress_percentage(round(100 * done / total) if total else 100)


class ShardTask(RegionTask):
    """A task over one shard (the parent tile at ``shard_zoom``, named by its quadkey)."""

    shard = luigi.Parameter(description="shard quadkey (parent tile at region.shard_zoom)")
    product: ClassVar[str] = ""

    def product_dir(self) -> Path:
        return self.data_dir / self.product

    def manifest_path(self) -> Path:
        return self.product_dir() / "_shards" / f"{self.shard}.json"

    def scratch_dir(self) -> Path:
        """Per-shard scratch folder for temporary files (same filesystem as the tiles)."""
        return self.product_dir() / "_tmp" / str(self.shard)


class AllShardsTask(RegionTask):
    """Runs one shard task per shard of ``tiles.csv`` (as dynamic dependencies, since the shards
    are known only once CoverTiles has run), then writes a region summary as its manifest."""

    product: ClassVar[str] = ""

    def shard_task(self, shard: str) -> ShardTask:
        raise NotImplementedError

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        raise NotImplementedError

    def requires(self) -> Any:
        from tasks.cover import CoverTiles

        return CoverTiles(config=self.config)

    def manifest_path(self) -> Path:
        return self.data_dir / self.product / "_manifest.json"

    def run(self) -> Iterator[Any]:
        tiles = read_tiles_csv(self.data_dir / "tiles.csv")
        shard_tasks = [self.shard_task(s) for s in sorted(tiles.shard.unique())]
        yield shard_tasks
        self.output().write(self.summary(tiles, shard_tasks))
