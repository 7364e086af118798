"""Base classes for thin Luigi tasks: a region task reads one config and writes one manifest.

A task's Luigi output is a manifest JSON written last and atomically; the task is complete
only when the manifest exists, records today's chained config digest
(:func:`pipeline.stages.stage_digest`), and the files it lists still have their sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import luigi
import pandas as pd

from pipeline.config import RegionConfig, load_config
from pipeline.cover import read_tiles_csv
from pipeline.io import (
    INDEX_FILE,
    ShardWriter,
    index_is_whole,
    manifest_is_current,
    read_manifest,
    tiles_on_disk,
    write_manifest,
    write_tile_index,
)
from pipeline.stages import file_fingerprint, stage_digest

log = logging.getLogger("luigi-interface")


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

    def writer(self, exts: Sequence[str] = ()) -> ShardWriter:
        """The shard's tile writer (:class:`pipeline.io.ShardWriter`; use it as a context manager)."""
        return ShardWriter(self.product_dir(), str(self.shard), self.digest(), exts)


class IndexTarget(ManifestTarget):
    """A product's region manifest: current when it records ``digest`` and every tile file of
    the product's ``index.parquet`` still has its recorded size."""

    def exists(self) -> bool:
        return super().exists() and index_is_whole(self.path.parent)


class AllShardsTask(RegionTask):
    """Runs one shard task per shard of ``tiles.csv`` (as dynamic dependencies, since the shards
    are known only once the tiles are), then writes the product's tile index
    (``<product>/index.parquet``) and a region summary as its manifest. Subclasses give
    ``requires`` (the task that makes ``tiles.csv``), ``shard_task`` and ``summary``."""

    product: ClassVar[str] = ""

    def shard_task(self, shard: str) -> ShardTask:
        raise NotImplementedError

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        raise NotImplementedError

    def product_dir(self) -> Path:
        return self.data_dir / self.product

    def manifest_path(self) -> Path:
        return self.product_dir() / "_manifest.json"

    def output(self) -> IndexTarget:
        return IndexTarget(self.manifest_path(), self.digest())

    def run(self) -> Iterator[Any]:
        tiles = read_tiles_csv(self.data_dir / "tiles.csv")
        shard_tasks = [self.shard_task(s) for s in sorted(tiles.shard.unique())]
        yield shard_tasks
        index = write_tile_index(self.product_dir(), {str(t.shard): read_manifest(t.manifest_path())
                                                      for t in shard_tasks})
        stale = len(set(tiles_on_disk(self.product_dir())) - set(index.path[index.path != ""]))
        if stale:
            log.warning("%s: %d tile file(s) on disk are not in today's index (left by an earlier config); "
                        "`make prune REGION=%s` removes them", self.product_dir(), stale, self.cfg.name)
        body = {"stage": self.stage, "root": str(self.product_dir()), "stale_tiles": stale,
                "files": {INDEX_FILE: {"size": (self.product_dir() / INDEX_FILE).stat().st_size}},
                **self.summary(tiles, shard_tasks)}
        self.output().write(body)
