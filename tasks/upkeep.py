"""Luigi tasks that look after a region's data folder: ``Verify`` (sha256 of every tile against
its product's index and of every whole-region output against its task's manifest; what is damaged
is redone) and ``Prune`` (delete tiles and shard manifests
that today's index does not list). Both run every time they are asked (``make verify``,
``make prune``); each writes a report to ``data/<region>/_manifests/<task>.json``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi

from pipeline.core.atomic import atomic_write_json
from pipeline.core.errors import ManifestError
from pipeline.core.manifests import manifest_is_current, read_manifest
from pipeline.core.stages import stage_digest
from pipeline.core.upkeep import product_dirs, prune_product, verify_outputs, verify_product
from tasks.base import AllShardsTask, RegionTask, ShardTask, dynamic, locked

log = logging.getLogger("luigi-interface")

_RUN_ID = f"{os.getpid()}-{time.time_ns()}"


def all_task_for(product: str, config: str) -> AllShardsTask:
    """The ``*All`` task that makes ``product`` (any imported AllShardsTask subclass)."""
    import tasks.imagery
    import tasks.masks  # noqa: F401

    todo: list[type[AllShardsTask]] = list(AllShardsTask.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.product == product:
            return cls(config=config)
    raise ManifestError(f"no task makes the product {product!r}; is its tasks module imported?")


def region_tasks(config: str) -> dict[str, RegionTask]:
    """Every region task (one instance per region, not a shard task) of ``config`` whose
    manifest exists, by task family: the owners of the region's whole-region outputs."""
    import importlib

    from tasks.__main__ import STAGE_MODULES

    for name in STAGE_MODULES:
        importlib.import_module(f"tasks.{name}")
    found: dict[str, RegionTask] = {}
    todo: list[type[RegionTask]] = list(RegionTask.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if not cls.stage or issubclass(cls, (ShardTask, _Always)):
            continue
        task = cls(config=config)
        if task.manifest_path().is_file():
            found[task.task_family] = task
    return found


class _Always(RegionTask):
    """A task that runs once per command: its report records this process's run id."""

    run_id = luigi.Parameter(default=_RUN_ID, significant=False, visibility=luigi.parameter.ParameterVisibility.HIDDEN,
                             description="identifies one command run (set automatically)")

    def report_path(self) -> Path:
        return self.data_dir / "_manifests" / f"{type(self).__name__.lower()}.json"

    def output(self) -> luigi.LocalTarget:  # type: ignore[override]
        return luigi.LocalTarget(str(self.report_path()))

    def complete(self) -> bool:
        try:
            return bool(read_manifest(self.report_path()).get("run_id") == self.run_id)
        except ManifestError:
            return False

    def output_whole(self) -> bool:
        return self.complete()

    def write_report(self, body: dict[str, Any]) -> None:
        atomic_write_json(self.report_path(), {"config_digest": "", "run_id": self.run_id, **body})


class Verify(_Always):
    """Check every tile of every product against its index (sha256); delete damaged tiles and
    rerun their products' ``*All`` tasks, which redo just the shards that lost a tile. Then the
    same for every region task's outputs (model, vectors, comparison, report, run.json): a damaged
    file is deleted and its task redone (a damaged ``best.pt`` is rebuilt from ``last.pt``)."""

    @dynamic
    def run(self) -> Iterator[Any]:
        pending = self.data_dir / "_manifests" / "verify.pending.json"
        found: dict[str, dict[str, list[str]]] = {}
        if pending.is_file():
            found = {k: v for k, v in read_manifest(pending).items() if isinstance(v, dict)}
        checked: dict[str, int] = {}
        tasks = region_tasks(str(self.config))
        outputs: dict[str, list[str]] = dict(found.pop("_outputs", {}))
        for family, task in sorted(tasks.items()):
            damaged = verify_outputs(task.manifest_path())
            if damaged:
                log.warning("verify: %s damaged (missing, another size or another sha256); redoing %s",
                            ", ".join(map(str, damaged)), family)
                outputs.setdefault(family, []).extend(map(str, damaged))
        for pdir in product_dirs(self.data_dir):
            self.progress(0, 1, f"verifying {pdir.name}")
            rep = verify_product(pdir)
            checked[pdir.name] = rep.checked
            if rep.damaged:
                log.warning("verify %s: %d damaged tile(s) in %d shard(s); redoing them", pdir,
                            rep.n_damaged, len(rep.damaged))
                for shard, rels in rep.damaged.items():
                    found.setdefault(pdir.name, {}).setdefault(shard, []).extend(rels)
        atomic_write_json(pending, {"config_digest": "", **found, "_outputs": outputs})
        yield [all_task_for(product, str(self.config)) for product in sorted(found)]
        yield [tasks[f] if f in tasks else region_tasks(str(self.config))[f] for f in sorted(outputs)]
        self.write_report({"checked": checked, "redone": found, "outputs": outputs})
        pending.unlink(missing_ok=True)


class Prune(_Always):
    """Delete the tiles and shard manifests that today's index of each product does not list
    (left by an earlier config, e.g. a larger bbox). Refuses when a product's index is not
    today's (run the region first)."""

    dry_run = luigi.BoolParameter(default=False, description="only count what would be deleted")

    @locked
    def run(self) -> None:
        removed: dict[str, dict[str, int]] = {}
        for pdir in product_dirs(self.data_dir):
            manifest = pdir / "_manifest.json"
            stage = read_manifest(manifest).get("stage", "") if manifest.is_file() else ""
            if not stage or not manifest_is_current(manifest, stage_digest(self.cfg, str(stage)), check_files=False):
                raise ManifestError(f"{pdir}: its tile index is not today's; run the region "
                                    f"(make region REGION={self.cfg.name}) before pruning")
            removed[pdir.name] = prune_product(pdir, dry_run=bool(self.dry_run))
            log.info("prune %s: %s%s", pdir, removed[pdir.name], " (dry run)" if self.dry_run else "")
        self.write_report({"removed": removed, "dry_run": bool(self.dry_run)})
