"""Upkeep of a region's data folder: verify tiles against their index, prune what today's
index does not list, and clean temporary files that killed runs left (``make clean-tmp``:
``python -m pipeline.core.upkeep clean-tmp data``, which refuses while a run holds a lock).

A product folder (``data/<region>/<product>``) holds ``index.parquet`` (today's tiles, see
:func:`pipeline.tiles.index.read_tile_index`), ``_shards/<quadkey>.json`` manifests, ``_manifest.json``
and the tiles ``z/x/y.<ext>``. Everything here works from the index, never trusts a glob of
the tiles except to find files the index does *not* list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import BusyError, OsmsatError
from pipeline.core.locks import try_lock
from pipeline.core.outputs import damaged_files, seal_intact
from pipeline.tiles.index import INDEX_FILE, WRITTEN, read_tile_index, tiles_on_disk

if TYPE_CHECKING:
    from filelock import BaseFileLock

#: held (shared) by every ``python -m tasks`` run on a region for its whole life; a permanent file
#: (not a ``*.lock``: those are per-task locks, deleted on release)
RUN_LOCK = Path("_manifests") / "runs.flock"
#: each run's failures file in the system temp folder, held (exclusive) by the run, deleted at its end
ERRORS_PREFIX, ERRORS_SUFFIX = "osmsat-", ".errors.jsonl"


@dataclass(frozen=True)
class VerifyReport:
    """Tiles of a product checked against their index: how many, and the damaged ones
    (missing, another size, or another sha256) by shard."""

    checked: int
    damaged: dict[str, list[str]] = field(default_factory=dict)

    @property
    def n_damaged(self) -> int:
        return sum(len(v) for v in self.damaged.values())


def product_dirs(data_dir: str | Path) -> list[Path]:
    """The sharded products of a region folder: sub-folders that have a tile index."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / INDEX_FILE).is_file())


def verify_product(product_dir: str | Path, repair: bool = True) -> VerifyReport:
    """Check the sha256 of every written tile of a product against its index. With ``repair``,
    delete each damaged tile file, so the shard it belongs to is incomplete and a rerun of the
    product's stage redoes it (and only it)."""
    product_dir = Path(product_dir)
    df = read_tile_index(product_dir)
    df = df[df.status == WRITTEN]
    damaged: dict[str, list[str]] = {}
    for rel, sha, shard in zip(df.path.tolist(), df.sha256.tolist(), df.shard.tolist(), strict=True):
        path = product_dir / rel
        try:
            ok = hashlib.sha256(path.read_bytes()).hexdigest() == sha
        except OSError:
            ok = False
        if not ok:
            damaged.setdefault(str(shard), []).append(rel)
            if repair:
                path.unlink(missing_ok=True)
    return VerifyReport(len(df), damaged)


def verify_outputs(manifest_path: str | Path, repair: bool = True) -> list[Path]:
    """Check a region task's manifest (its seal, :func:`pipeline.core.outputs.seal_intact`) and the
    sha256 of every file it lists; returns the damaged files (the manifest itself when its seal is
    broken). With ``repair`` each damaged file (or the manifest) is deleted, so a rerun of the task
    redoes it."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        return []
    if not seal_intact(manifest_path):
        if repair:
            manifest_path.unlink(missing_ok=True)
        return [manifest_path]
    manifest = json.loads(manifest_path.read_text())
    root = Path(manifest.get("root", manifest_path.parent))
    damaged = [root / rel for rel in damaged_files(manifest, manifest_path.parent)]
    if repair:
        for path in damaged:
            path.unlink(missing_ok=True)
    return damaged


def stale_tiles(product_dir: str | Path) -> list[str]:
    """Tile files (``z/x/y.ext``) under a product folder that its index does not list."""
    df = read_tile_index(product_dir)
    listed = set(df.path[df.path != ""].tolist())
    return [rel for rel in tiles_on_disk(product_dir) if rel not in listed]


def stale_manifests(product_dir: str | Path) -> list[Path]:
    """Shard manifests (and started markers) of shards that today's index does not list."""
    product_dir = Path(product_dir)
    shards = set(read_tile_index(product_dir).shard.astype(str).tolist())
    folder = product_dir / "_shards"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if p.name.split(".", 1)[0] not in shards)


def prune_product(product_dir: str | Path, dry_run: bool = False) -> dict[str, int]:
    """Delete the tiles and shard manifests of a product that today's index does not list,
    then the folders left empty. Returns the counts (``tiles``, ``manifests``)."""
    product_dir = Path(product_dir)
    tiles, manifests = stale_tiles(product_dir), stale_manifests(product_dir)
    if not dry_run:
        for rel in tiles:
            (product_dir / rel).unlink(missing_ok=True)
        for p in manifests:
            p.unlink(missing_ok=True)
        remove_empty_dirs(product_dir)
    return {"tiles": len(tiles), "manifests": len(manifests)}


def remove_empty_dirs(root: str | Path) -> int:
    """Remove empty folders under ``root`` (not ``root`` itself), deepest first; returns how many."""
    n = 0
    for dirpath, _dirs, _files in os.walk(root, topdown=False):
        if Path(dirpath) == Path(root):
            continue
        try:
            os.rmdir(dirpath)
            n += 1
        except OSError:
            continue
    return n


def _lock_now(path: Path, held: list[BaseFileLock], create: bool = False) -> bool:
    """Whether no process holds a lock on ``path``; if so, an exclusive lock on it, taken now,
    joins ``held`` (release them when done). A missing file (``create`` off) counts as free,
    with nothing to hold."""
    if not create and not path.exists():
        return True
    lock = try_lock(path)
    if lock is None:
        return not create and not path.exists()  # its holder deleted it meanwhile: free
    held.append(lock)
    return True


def clean_tmp(root: str | Path, temp_dir: str | Path | None = None) -> dict[str, int]:
    """Delete what killed runs left under ``root`` (``data/``): ``_tmp`` scratch folders,
    ``.<name>.<random>.tmp*`` files and task/shard lock files; and their empty errors files
    (``osmsat-*.errors.jsonl``) in the system temp folder (``temp_dir``).

    Refuses (:class:`BusyError`, nothing deleted) while a run is going on: a ``python -m tasks``
    run holds its region's ``_manifests/runs.flock``, a task its lock file. While it cleans,
    it holds every region's run lock, so a run that starts meanwhile waits for it. An errors
    file that a live run holds is left alone. Returns the counts of what it deleted."""
    root = Path(root)
    regions: list[Path] = []
    scratch: list[Path] = []
    temps: list[Path] = []
    locks: list[Path] = []
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        if here.name == "_tmp":
            scratch.append(here)
            locks.extend(here / f for f in files if f.endswith(".lock"))
            dirs[:] = []  # shard scratch: it goes with the folder
            continue
        if "_manifests" in dirs:
            regions.append(here)
        temps.extend(here / f for f in files if f.startswith(".") and ".tmp" in f)
        if here.name == "_manifests":
            locks.extend(here / f for f in files if f.endswith(".lock"))
    held: list[BaseFileLock] = []
    try:
        for region in sorted(regions):
            if not _lock_now(region / RUN_LOCK, held, create=True):
                raise BusyError(f"{region}: a run on this region is going on (it holds {region / RUN_LOCK}); "
                                "let it finish or stop it (Ctrl-C), then run make clean-tmp again — nothing "
                                "was deleted")
        for lock in locks:
            if not _lock_now(lock, held):
                raise BusyError(f"{lock}: a task of a running run holds this lock; let the run finish or stop "
                                "it, then run make clean-tmp again — nothing was deleted")
        for folder in scratch:
            shutil.rmtree(folder, ignore_errors=True)
        for path in temps + [p for p in locks if p.parent.name == "_manifests"]:
            path.unlink(missing_ok=True)
    finally:
        for held_lock in held:
            held_lock.release()
    return {"scratch folders": len(scratch), "temporary files": len(temps), "lock files": len(locks),
            "errors files": len(clean_errors_files(temp_dir))}


def clean_errors_files(temp_dir: str | Path | None = None) -> list[Path]:
    """Delete the errors files of ended runs in the temp folder (``tempfile.gettempdir()``); a
    file a live run holds stays."""
    folder = Path(temp_dir if temp_dir is not None else tempfile.gettempdir())
    removed = []
    for path in sorted(folder.glob(f"{ERRORS_PREFIX}*{ERRORS_SUFFIX}")):
        held: list[BaseFileLock] = []
        if not _lock_now(path, held) or not held:  # a live run's, or gone
            continue
        try:
            path.unlink(missing_ok=True)
            removed.append(path)
        finally:
            held[0].release()
    return removed


def main(argv: list[str]) -> int:
    """``python -m pipeline.core.upkeep clean-tmp [ROOT]`` (ROOT: ``data``): one line either way."""
    if len(argv) not in (1, 2) or argv[0] != "clean-tmp":
        print("usage: python -m pipeline.core.upkeep clean-tmp [data]", file=sys.stderr)
        return 2
    try:
        counts = clean_tmp(argv[1] if len(argv) > 1 else "data")
    except OsmsatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("clean-tmp: deleted " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
