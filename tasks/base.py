"""Base classes for thin Luigi tasks: a region task reads one config and writes one manifest.

A task's Luigi output is a manifest JSON written last and atomically; the task is complete
only when the manifest exists, records today's chained config digest
(:func:`pipeline.core.stages.stage_digest`), the files it lists still have their sizes, and (a region
task) every region task it requires is complete too: Luigi does not look below a complete task, so
a damaged upstream output (a deleted ``model/best.pt``) would otherwise stay invisible to a rerun.
A task scheduled only for such an upstream repair finds its own output whole and does nothing.

These checks run on every command, so this module imports no pandas, numpy or geometry library:
a task module imports what its ``run()`` needs inside it (see ``tasks/__main__.py``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import luigi

from pipeline.config.region import RegionConfig, load_config
from pipeline.core.atomic import clean_stale_temps
from pipeline.core.errors import ConfigError, ManifestError
from pipeline.core.manifests import MANIFEST_VERSION, manifest_is_current, read_manifest, write_manifest
from pipeline.core.outputs import file_entries, seal
from pipeline.core.stages import file_fingerprint, get_stage, stage_digest
from pipeline.tiles.index import INDEX_FILE, index_is_whole, shards_whole, tiles_on_disk, write_tile_index
from pipeline.tiles.writer import ShardWriter, remove_stale_scratch
from tasks.locking import dynamic, locked
from tasks.settings import osmsat

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.tiles.tilemath import Tile

__all__ = ["AllShardsTask", "IndexTarget", "ManifestTarget", "RegionTask", "ShardTask", "dynamic", "locked",
           "preload", "stage_task", "task_class"]

log = logging.getLogger("luigi-interface")
#: lines the user should see on the terminal without --debug (``python -m tasks`` prints them as ``note: ...``)
NOTICE = logging.getLogger("osmsat.notice")


def task_class(name: str) -> type[RegionTask]:
    """The task class ``"<module>.<Class>"`` under ``tasks/`` (as :mod:`pipeline.core.stages` names
    them), its module imported on first use."""
    module, cls = name.rsplit(".", 1)
    found: type[RegionTask] = getattr(importlib.import_module(f"tasks.{module}"), cls)
    return found


def stage_task(stage: str, config: str, like: luigi.Task | None = None, shard: str | None = None) -> luigi.Task:
    """The task of ``stage`` (its shard task with ``shard``) for region config ``config``, with the
    values that ``like`` (the task asking) has for the parameters both have (``device``)."""
    s = get_stage(stage)
    cls = task_class(s.shard_task if shard is not None else s.task)
    names = {name for name, _ in cls.get_params()} - {"config", "shard"}
    shared = {k: v for k, v in (like.param_kwargs if like is not None else {}).items() if k in names}
    return cls(config=config, **shared, **({"shard": shard} if shard is not None else {}))


class ManifestTarget(luigi.Target):
    """A manifest file that counts as existing only when it records ``digest``."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = Path(path)
        self.digest = digest

    def exists(self) -> bool:
        return manifest_is_current(self.path, self.digest)

    def write(self, body: dict[str, Any]) -> None:
        """Write the manifest, sealed (:func:`pipeline.core.outputs.seal`) and with size, sha256 and
        mtime of every file it lists, then delete temporary files that killed runs left beside
        the files it lists (the task that writes it owns them)."""
        root = Path(body.get("root", self.path.parent))
        if body.get("files"):
            body = {**body, "files": file_entries(root, body["files"])}
        write_manifest(self.path, self.digest, seal({"version": MANIFEST_VERSION, "config_digest": self.digest,
                                                     **body}))
        clean_stale_temps(self.path, *(root / rel for rel in body.get("files", {})))


def labels_needed(task: str, config: Path) -> str:
    """The line that refuses a task that needs labels on a region without them."""
    return (f"{task} needs labels, and {config} has [labels] source = \"none\" (imagery only): run PredictAll, "
            "MergeFeatures or RegionPipeline, or give the region labels ([labels] source = \"osm\" or \"vector\")")


class RegionTask(luigi.Task):
    """A task over one region, named by the path of its config TOML.

    Its ``stage`` names its row of the stage table (:mod:`pipeline.core.stages`), from which
    :meth:`requires` comes. Its ``run`` says how it is guarded: :func:`locked` (under the task's
    lock; every shard task is) or :func:`dynamic` (yields its shard tasks). A task whose run found
    the output whole (another run made it) is ``skipped``.
    """

    config = luigi.Parameter(description="path to the region config, e.g. configs/helsinki.toml")
    stage: ClassVar[str] = ""
    #: the task reads the region's labels (masks, training, evaluation): refused for a region
    #: without them (``[labels] source = "none"``)
    needs_labels: ClassVar[bool] = False
    #: set by its run: the output was whole already, nothing ran (no run record: tasks/runlog.py);
    #: (no annotation: Luigi's mypy plugin would take an annotated attribute for a parameter)
    skipped = False
    _tqdm = None

    def requires(self) -> list[luigi.Task]:
        """The tasks of the stages this one reads (its stage's ``upstream`` under this config,
        those that apply to it) and of other regions' stages it reads (its ``foreign``), from the
        stage table. A task of no stage requires nothing."""
        if not self.stage:
            return []
        s, config = get_stage(self.stage), str(self.config)
        ups = [up for up in s.upstream_of(self.cfg) if get_stage(up).applies_to(self.cfg)]
        return [*(stage_task(up, config, self) for up in ups),
                *(stage_task(other, str(path), self) for other, path in s.foreign_of(self.cfg))]

    def shard_task(self, shard: str) -> ShardTask:
        """This stage's task for ``shard`` (the stage table names it)."""
        return stage_task(self.stage, str(self.config), self, shard=shard)  # type: ignore[return-value]

    def check_labels(self) -> None:
        """ConfigError (one line) when this task needs labels and the region has none."""
        if self.needs_labels and not self.cfg.labelled:
            raise ConfigError(labels_needed(self.task_family, self.cfg.path))

    def lock_path(self) -> Path:
        """The lock held while this task runs (``data/<region>/_manifests/<Task>.lock``)."""
        return self.data_dir / "_manifests" / f"{self.task_family}.lock"

    def owned_files(self) -> list[Path]:
        """Outputs whose leftover temporary files a rerun deletes before it starts (besides
        those its manifest lists, cleaned when it is written)."""
        return [self.manifest_path()]

    @property
    def cfg(self) -> RegionConfig:
        """The region config, reloaded when the file changes (Luigi reuses task instances)."""
        key = file_fingerprint(self.config)
        cached: tuple[str, RegionConfig] | None = getattr(self, "_loaded", None)
        if cached is None or cached[0] != key:
            cached = self._loaded = (key, load_config(self.config))
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

    def output_whole(self) -> bool:
        """This task's own output is current and whole (its upstream tasks not looked at)."""
        return bool(super().complete())

    def complete(self) -> bool:
        """Own output whole and every region task it requires complete (each task checked once
        per outermost call)."""
        seen = getattr(_CHECKS, "seen", None)
        if seen is not None:
            return _deep_complete(self, seen)
        _CHECKS.seen = {}
        try:
            return _deep_complete(self, _CHECKS.seen)
        finally:
            _CHECKS.seen = None

    #: what the terminal bar counts (``progress`` draws a tqdm bar when stderr is a terminal)
    progress_unit: ClassVar[str] = "tile"

    def progress(self, done: int, total: int, what: str) -> None:
        """Report progress to the Luigi scheduler (status message and percentage, visible on the
        ``luigid`` page) when run by a worker, and as a tqdm bar when stderr is a terminal."""
        if self.set_status_message is not None:
            self.set_status_message(f"{what}: {done}/{total}")
        if self.set_progress_percentage is not None:
            self.set_progress_percentage(round(100 * done / total) if total else 100)
        if total > 1:
            self._bar(done, total, what)

    def notice(self, message: str) -> None:
        """Say ``message`` on the terminal (``note: ...``), in the log and to the scheduler."""
        NOTICE.info(message)
        if self.set_status_message is not None:
            self.set_status_message(message)

    def progress_done(self) -> None:
        """Tell the scheduler the task is at 100 % (called when ``run`` returns)."""
        if self.set_progress_percentage is not None:
            self.set_progress_percentage(100)

    def _bar(self, done: int, total: int, what: str) -> None:
        from tqdm import tqdm

        bar = self._tqdm
        if bar is None or bar.total != total:
            bar = self._tqdm = tqdm(total=total, desc=what, unit=self.progress_unit, disable=None, leave=False)
        elif getattr(bar, "desc", what) != what:  # (a disabled bar has no desc)
            bar.set_description_str(what, refresh=False)
        bar.update(max(0, done - bar.n))
        if done >= total:
            bar.close()
            del self._tqdm  # (back to the class's None)


#: the completeness checks of the outermost ``complete()`` call going on in this thread
_CHECKS = threading.local()


def _deep_complete(task: RegionTask, seen: dict[str, bool]) -> bool:
    if task.task_id not in seen:
        ups = [t for t in luigi.task.flatten(task.requires()) if isinstance(t, RegionTask)]
        seen[task.task_id] = task.output_whole() and all(_deep_complete(t, seen) for t in ups)
    return seen[task.task_id]


def preload(modules: Sequence[str]) -> None:
    """Import ``modules`` now, in this process. Luigi asks a task whether it is complete in the
    scheduling process, and with ``--workers N`` runs it in a process forked from there, which
    starts with every module its parent had: a shard task found incomplete preloads what its
    ``run()`` imports, so the tens or thousands of shard processes of a region do not each import
    scipy, scikit-image or torch again (0.3-1.5 s of CPU a shard), and a run with nothing to do
    imports none of it. A module that fails to import is left to ``run()``, which says why."""
    for name in modules:
        if name not in sys.modules:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)


class ShardTask(RegionTask):
    """A task over one shard (the parent tile at ``shard_zoom``, named by its quadkey); complete
    when its own manifest is (its upstream region tasks are checked by its ``*All`` task)."""

    shard = luigi.Parameter(description="shard quadkey (parent tile at region.shard_zoom)")
    product: ClassVar[str] = ""
    #: the heavy modules every shard's ``run()`` imports (see :func:`preload`; a task adds its own
    #: in :meth:`run_imports`)
    common_imports: ClassVar[tuple[str, ...]] = ("numpy", "pandas", "pyarrow.parquet", "tqdm",
                                                 "pipeline.tiles.cover")
    #: whether ``run()`` takes the shard's tiles from ``tiles.csv`` (:meth:`tiles`)
    reads_tile_table: ClassVar[bool] = False

    def run_imports(self) -> tuple[str, ...]:
        """The modules ``run()`` imports, preloaded once this task is found incomplete."""
        return self.common_imports

    def product_dir(self) -> Path:
        return self.data_dir / self.product

    def manifest_path(self) -> Path:
        return self.product_dir() / "_shards" / f"{self.shard}.json"

    def complete(self) -> bool:
        whole = self.output_whole()
        if not whole and osmsat().preload:
            with contextlib.suppress(Exception):  # (run() meets and reports any error itself)
                preload(self.run_imports())
                self.prepare()
        return whole

    def prepare(self) -> None:
        """Work every shard of the task would repeat (reading the region's tile table, hashing a
        model file), done once by the scheduling process when it finds a shard incomplete, for its
        forked shards to inherit."""
        if self.reads_tile_table:
            self.tiles()

    def tiles(self) -> list[Tile]:
        """This shard's tiles, in ``tiles.csv`` order (the table read once per process and file
        version: :func:`pipeline.tiles.cover.tiles_by_shard`)."""
        from pipeline.tiles.cover import tiles_by_shard

        return list(tiles_by_shard(self.data_dir / "tiles.csv").get(str(self.shard), ()))

    def lock_path(self) -> Path:
        """The shard's own lock (``<product>/_tmp/<shard>.lock``, the one its tile writer holds):
        shards of one product run side by side, one shard never twice at once."""
        return self.product_dir() / "_tmp" / f"{self.shard}.lock"

    def writer(self, exts: Sequence[str] = ()) -> ShardWriter:
        """The shard's tile writer (:class:`pipeline.tiles.writer.ShardWriter`; use it as a context
        manager) for a :func:`locked` run, which holds the shard's lock already."""
        return ShardWriter(self.product_dir(), str(self.shard), self.digest(), exts, lock=False)


#: the key of a product's region manifest that lists the shards its ``index.parquet`` was made from
INDEX_SHARDS = "index_shards"


class IndexTarget(ManifestTarget):
    """A product's region manifest: current when it records ``digest`` and every tile file of
    the product's ``index.parquet`` still has its recorded size. Checked from the JSON manifests of
    the shards the index was made from (the manifest's ``index_shards``), else (a manifest written
    before that key existed) from ``index.parquet`` itself."""

    def exists(self) -> bool:
        if not super().exists():
            return False
        try:
            shards = read_manifest(self.path).get(INDEX_SHARDS)
        except ManifestError:
            return False
        if isinstance(shards, list):
            return shards_whole(self.path.parent, (str(s) for s in shards), self.digest)
        return index_is_whole(self.path.parent)


class AllShardsTask(RegionTask):
    """Runs one shard task per shard of ``tiles.csv`` (as dynamic dependencies, since the shards
    are known only once the tiles are), then writes the product's tile index
    (``<product>/index.parquet``) and a region summary as its manifest. Subclasses give
    ``summary``; the stage table gives ``requires`` and the shard task."""

    product: ClassVar[str] = ""
    #: whether the shard tasks are static dependencies, once decided (at scheduling: :meth:`deps`)
    _shards_decided = _static_shards = False

    def summary(self, tiles: pd.DataFrame, done: list[ShardTask]) -> dict[str, Any]:
        raise NotImplementedError

    def product_dir(self) -> Path:
        return self.data_dir / self.product

    def manifest_path(self) -> Path:
        return self.product_dir() / "_manifest.json"

    def output_whole(self) -> bool:
        """Done, and no shard manifest was written after the product's summary (a shard redone on
        its own, e.g. to ask missing tiles again, makes the summary and index stale)."""
        if not super().output_whole():
            return False
        shards = self.product_dir() / "_shards"
        try:
            mine = self.manifest_path().stat().st_mtime_ns
            return all(p.stat().st_mtime_ns <= mine for p in shards.glob("*.json"))
        except OSError:
            return False

    def output(self) -> IndexTarget:
        return IndexTarget(self.manifest_path(), self.digest())

    def shard_tasks(self) -> list[ShardTask]:
        """One task per shard of today's ``tiles.csv``."""
        from pipeline.tiles.cover import read_shards

        return [self.shard_task(s) for s in read_shards(self.data_dir / "tiles.csv")]

    def deps(self) -> list[Any]:
        """The upstream tasks and, when they are already complete at scheduling time, the shard
        tasks too: then every worker that schedules this task (other machines against one
        ``luigid``) can take shards, not only the worker that runs it. Decided once per task
        instance, at scheduling: when the upstream was not complete then, the shards come as
        dynamic dependencies of ``run`` (and the run-time check of ``deps`` must not ask for them)."""
        deps = list(super().deps())
        if not self._shards_decided:
            self._static_shards = bool(deps) and all(d.complete() for d in deps)
            self._shards_decided = True
        return deps + self.shard_tasks() if self._static_shards else deps

    @dynamic
    def run(self) -> Iterator[Any]:
        from pipeline.tiles.cover import read_tiles_csv

        tiles = read_tiles_csv(self.data_dir / "tiles.csv")
        shard_tasks = self.shard_tasks()
        yield shard_tasks
        # every shard is complete: what killed shard runs left (locks, started markers) goes
        for marker in (self.product_dir() / "_shards").glob("*.started.json"):
            marker.unlink(missing_ok=True)
        remove_stale_scratch(self.product_dir() / "_tmp")
        index = write_tile_index(self.product_dir(), {str(t.shard): read_manifest(t.manifest_path())
                                                      for t in shard_tasks})
        stale = len(set(tiles_on_disk(self.product_dir())) - set(index.path[index.path != ""]))
        if stale:
            log.warning("%s: %d tile file(s) on disk are not in today's index (left by an earlier config); "
                        "`make prune REGION=%s` removes them", self.product_dir(), stale, self.cfg.name)
        body = {"stage": self.stage, "root": str(self.product_dir()), "stale_tiles": stale,
                "files": {INDEX_FILE: {"size": (self.product_dir() / INDEX_FILE).stat().st_size}},
                INDEX_SHARDS: sorted(str(t.shard) for t in shard_tasks),
                **self.summary(tiles, shard_tasks)}
        self.output().write(body)
