"""One shard of imagery tiles, whatever the source, its manifest, and the region's coverage.

A shard manifest (``images/_shards/<quadkey>.json``) lists the files written (size, sha256),
the status of every tile of the shard (``ok`` / ``nodata-skipped`` / ``missing-on-server``),
counts, and the source with secrets redacted. A marker ``<quadkey>.started.json`` records the
config digest of a run in progress, so that a rerun after a kill keeps (after verifying) the
tiles that run downloaded, and never trusts tiles from a run with another config.

Tiles a server lacked are asked again once their shard's manifest (written when they were last
asked) is older than a cutoff (:func:`missing_due`); the shard is then reopened as a resumed run
(:func:`reopen_shard`): its valid tiles are kept, only the missing ones are requested.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.core.atomic import atomic_write_json
from pipeline.core.errors import ManifestError
from pipeline.core.manifests import read_manifest
from pipeline.imagery.common import STATUSES
from pipeline.imagery.registry import ShardJob, ShardResult
from pipeline.imagery.sources import source_of
from pipeline.tiles.writer import ShardWriter, TileStatus, reset_dir

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig
    from pipeline.tiles.tilemath import Tile

__all__ = ["ShardResult", "coverage_summary", "describe_source", "make_shard", "manifest_body", "manifest_extra",
           "server_resource"]


def make_shard(icfg: ImageryConfig, plan: Any, shard: str, tiles: Sequence[Tile], size: int, out: ShardWriter,
               progress: Callable[[int, int], None] | None = None, download: Any = None) -> ShardResult:
    """Make the imagery tiles of one shard through the shard's tile writer ``out``, by the
    registered source of ``icfg`` (cut from rasters with their region ``plan``, copied from a
    folder, downloaded keeping verified tiles already on disk when ``out.resumable``, ...)."""
    return source_of(icfg).make_shard(ShardJob(icfg, plan, shard, tiles, size, out, progress, download))


def describe_source(icfg: ImageryConfig) -> dict[str, Any]:
    """The source as it goes into manifests (its registry entry's ``describe``: type and paths or
    folder, or the redacted URL template)."""
    return source_of(icfg).describe(icfg)


def server_resource(icfg: ImageryConfig | None) -> str | None:
    """Name of the Luigi resource for the server of a download config (``imagery_server_<host>``
    with non-alphanumerics as ``_``), or None for a source that downloads nothing."""
    if icfg is None or not source_of(icfg).downloads or not icfg.url:
        return None
    netloc = urlsplit(icfg.url).netloc.rsplit("@", 1)[-1].lower()
    return "imagery_server_" + re.sub(r"[^a-z0-9]+", "_", netloc).strip("_")


def manifest_extra(icfg: ImageryConfig, result: ShardResult) -> dict[str, Any]:
    """What an imagery shard manifest adds to the tile writer's (source, counts, requests)."""
    counts = Counter(r.status for r in result.records)
    return {"source": describe_source(icfg), "counts": {s: counts.get(s, 0) for s in STATUSES},
            "requests": result.stats}


def manifest_body(icfg: ImageryConfig, shard: str, result: ShardResult, out_root: Path) -> dict[str, Any]:
    """The body of a shard manifest (``write_manifest`` adds version and config digest)."""
    files = {r.rel_path: {"size": r.size, "sha256": r.sha256} for r in result.records if r.status == TileStatus.OK}
    status = {str(r.tile): r.status for r in result.records}
    partial = {str(r.tile): r.valid_share for r in result.records if r.status == TileStatus.OK and r.valid_share < 1.0}
    return {"root": str(out_root), "shard": shard, "files": files, "status": status, "tiles": len(result.records),
            "valid_share": partial, **manifest_extra(icfg, result)}


def coverage_summary(manifests: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Coverage of a region from its shard manifests: tiles with imagery, skipped for nodata,
    missing on the server, per shard and in total, with the skipped and missing tile lists."""
    total: Counter[str] = Counter()
    by_shard: dict[str, dict[str, int]] = {}
    lists: dict[str, list[str]] = {TileStatus.NODATA: [], TileStatus.MISSING: []}
    for shard in sorted(manifests):
        m = manifests[shard]
        counts = {str(s): int(m["counts"].get(s, 0)) for s in STATUSES}
        by_shard[shard] = counts
        total.update(counts)
        for tile, st in m["status"].items():
            if st in lists:
                lists[st].append(tile)
    n = sum(total.values())
    return {
        "tiles": n, "shards": len(manifests),
        "counts": {s: total.get(s, 0) for s in STATUSES},
        "share_with_imagery": round(total.get(TileStatus.OK, 0) / n, 4) if n else 0.0,
        "by_shard": by_shard,
        "nodata_skipped": sorted(lists[TileStatus.NODATA], key=_tile_key),
        "missing_on_server": sorted(lists[TileStatus.MISSING], key=_tile_key),
    }


def _tile_key(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split("/"))


def started_marker(manifest_path: Path) -> Path:
    """``<quadkey>.started.json`` beside the shard manifest."""
    return manifest_path.with_name(manifest_path.stem + ".started.json")


def may_reuse(manifest_path: Path, digest: str) -> bool:
    """True when tiles on disk come from a run with config digest ``digest``: an interrupted
    run (its started marker records ``digest``) or a finished one (its manifest does)."""
    for path in (started_marker(manifest_path), manifest_path):
        if path.is_file():
            try:
                return read_manifest(path).get("config_digest") == digest
            except ManifestError:
                return False
    return False


def mark_started(manifest_path: Path, digest: str) -> None:
    """Record that a run with ``digest`` is writing this shard's tiles."""
    atomic_write_json(started_marker(manifest_path), {"config_digest": digest})


def clear_started(manifest_path: Path) -> None:
    started_marker(manifest_path).unlink(missing_ok=True)


def refetch_cutoff(icfg: ImageryConfig | None, after_days: float, refetch: bool, run_started: float,
                   now: float | None = None) -> float | None:
    """Tiles missing on a server that were last asked before this time (epoch seconds) are asked
    again: ``after_days`` ago (0: never by age), or, with ``refetch``, ``run_started``. None for
    a source that downloads nothing (its registry entry says), or when neither applies."""
    if icfg is None or not source_of(icfg).downloads:
        return None
    cutoffs = [run_started] if refetch else []
    if after_days > 0:
        cutoffs.append((time.time() if now is None else now) - after_days * 86400)
    return max(cutoffs) if cutoffs else None


def missing_count(manifest_path: Path) -> int:
    """Tiles a finished shard recorded missing on the server (0 when unreadable)."""
    try:
        return int(read_manifest(manifest_path).get("counts", {}).get(TileStatus.MISSING, 0))
    except (ManifestError, AttributeError, TypeError, ValueError):
        return 0


def missing_due(manifest_path: Path, cutoff: float | None) -> bool:
    """True when the shard manifest records tiles missing on the server that were last asked
    (when the manifest was written: its mtime) before ``cutoff`` (epoch seconds)."""
    if cutoff is None:
        return False
    try:
        if manifest_path.stat().st_mtime >= cutoff:
            return False
    except OSError:
        return False
    return missing_count(manifest_path) > 0


def reopen_shard(out: ShardWriter) -> None:
    """Reopen a finished shard (its manifest current, its lock held by ``out``) to ask for its
    missing tiles again: as a resumed run, whose valid tiles on disk are kept after verifying.
    Until the new manifest is written, the old one stays: a killed refetch loses nothing."""
    out.current, out.resumable = False, True
    reset_dir(out.scratch)
    mark_started(out.manifest, out.digest)
