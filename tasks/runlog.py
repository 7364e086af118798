"""Task records for the run manifest: every region task that succeeds leaves
``data/<region>/_runlog/<task id>.json`` (written atomically by the process that ran it, so it
works with several worker processes and machines). ``pipeline.core.runinfo`` folds them into ``run.json``.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import UTC, datetime
from typing import Any

import luigi

from pipeline.core.atomic import atomic_write_json
from pipeline.core.errors import ManifestError
from pipeline.core.manifests import read_manifest
from tasks.base import RegionTask

_STARTS: dict[str, float] = {}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def peak_mib() -> float:
    """Peak resident memory (MiB) of the process that ran the task, or of a process it waited
    for (DataLoader workers): a forked worker process's own peak; with ``--workers 1`` the
    command's peak so far."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)  # KiB on Linux


@RegionTask.event_handler(luigi.Event.START)
def _started(task: RegionTask) -> None:
    _STARTS[task.task_id] = time.time()


@RegionTask.event_handler(luigi.Event.SUCCESS)
def _succeeded(task: RegionTask) -> None:
    start = _STARTS.pop(task.task_id, None)
    if start is None or task.skipped:  # nothing ran here (nothing to record)
        return
    end = time.time()
    tiles: Any = None
    try:
        tiles = read_manifest(task.manifest_path()).get("tiles")
    except ManifestError:  # a task whose output is no manifest: a record without a tile count
        tiles = None
    rec = {"task": task.get_task_family(), "shard": getattr(task, "shard", None),
           "worker": f"{socket.gethostname()}:{os.getpid()}", "started": _iso(start), "ended": _iso(end),
           "seconds": round(end - start, 3), "peak_mib": peak_mib(),
           # tiles made: shard tasks only (a region task's manifest counts the tiles of its shards)
           "tiles": tiles if isinstance(tiles, int) and getattr(task, "shard", None) else None}
    atomic_write_json(task.data_dir / "_runlog" / f"{task.task_id}.json", rec)
