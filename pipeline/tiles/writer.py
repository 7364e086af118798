"""Tile trees: one writer for every sharded product (masks, images, predictions).

Tiles are written into ``<product>/z/x/y.<ext>``, each through a temporary file in a scratch
folder on the same filesystem, renamed into place. A shard is written by :class:`ShardWriter`,
and is done when its manifest ``<product>/_shards/<quadkey>.json`` records today's config
digest and its files still have their sizes (the product's tile index,
:mod:`pipeline.tiles.index`, is made from those manifests).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.atomic import atomic_write_json, clean_stale_temps
from pipeline.core.errors import ManifestError
from pipeline.core.locks import file_lock, try_lock
from pipeline.core.manifests import manifest_is_current, read_manifest, write_manifest

if TYPE_CHECKING:
    from pipeline.tiles.tilemath import Tile

log = logging.getLogger(__name__)

class TileStatus(StrEnum):
    """What became of a tile, as its shard manifest's ``status`` records it (the values are what
    the manifests hold): a file was written (``OK``); none, the tile had too few valid pixels
    (``NODATA``: a raster's nodata, transparent pixels); none, the source lacks it (``MISSING``:
    HTTP 404 / 410 / 204, a tile absent from a folder). The product's tile index words them
    as :data:`pipeline.tiles.index.INDEX_STATUS` says."""

    OK = "ok"
    NODATA = "nodata-skipped"
    MISSING = "missing-on-server"


def tile_path(root: str | Path, t: Tile, ext: str) -> Path:
    """``root/z/x/y.ext`` for tile ``t``."""
    return Path(root) / str(t.z) / str(t.x) / f"{t.y}.{ext}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def reset_dir(path: str | Path) -> Path:
    """Delete ``path`` (a scratch folder left by a killed run) and create it empty."""
    path = Path(path)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


class TileWriter:
    """Writes tiles into ``root/z/x/y.<ext>``, each through a temporary file in ``scratch`` (a
    folder on the same filesystem) renamed into place, and records what became of every tile:
    ``files`` (``{"z/x/y.ext": {"size", "sha256"}}``), ``status`` (``{"z/x/y": status}``) and
    ``valid_share`` (tiles with fewer than all pixels valid). ``exts``: the extensions a tile
    of this product may have; writing one deletes the tile's files with the others."""

    def __init__(self, root: str | Path, scratch: str | Path, exts: Sequence[str] = ()) -> None:
        self.root, self.scratch, self.exts = Path(root), Path(scratch), tuple(exts)
        self.files: dict[str, dict[str, Any]] = {}
        self.status: dict[str, str] = {}
        self.valid_share: dict[str, float] = {}
        self._made: set[Path] = set()

    def write(self, t: Tile, data: bytes, ext: str, valid_share: float = 1.0) -> str:
        """Write one tile atomically; returns its sha256."""
        final = tile_path(self.root, t, ext)
        if final.parent not in self._made:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(final.parent)
        tmp = self.scratch / f"{t.z}-{t.x}-{t.y}.{ext}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)
        sha = sha256_bytes(data)
        self._remove(t, keep=ext)
        self.adopt(t, TileStatus.OK, ext, len(data), sha, valid_share)
        return sha

    def write_many(self, items: Iterable[tuple[Tile, bytes]], ext: str) -> None:
        for t, data in items:
            self.write(t, data, ext)

    def skip(self, t: Tile, status: TileStatus, valid_share: float = 0.0) -> None:
        """Record a tile without a file (``TileStatus.NODATA`` / ``MISSING``); deletes any old file."""
        self._remove(t)
        self.adopt(t, status, valid_share=valid_share)

    def adopt(self, t: Tile, status: str, ext: str = "", size: int = 0, sha256: str = "",
              valid_share: float = 1.0) -> None:
        """Record a tile; for ``TileStatus.OK`` its file ``root/z/x/y.ext`` (written here, or by a
        downloader through ``scratch``) of ``size`` bytes and ``sha256``."""
        key = f"{t.z}/{t.x}/{t.y}"
        self.status[key] = status
        if status == TileStatus.OK:
            self.files[f"{key}.{ext}"] = {"size": size, "sha256": sha256}
            if valid_share < 1.0:
                self.valid_share[key] = valid_share

    def _remove(self, t: Tile, keep: str = "") -> None:
        for ext in self.exts:
            if ext != keep:
                tile_path(self.root, t, ext).unlink(missing_ok=True)


def write_tile_files(
    root: str | Path, items: Iterable[tuple[Tile, bytes]], ext: str, scratch: str | Path
) -> dict[str, dict[str, Any]]:
    """Write each ``(tile, bytes)`` to ``root/z/x/y.ext`` atomically (through ``scratch``).
    Returns ``{"z/x/y.ext": {"size": n, "sha256": hex}}``."""
    Path(scratch).mkdir(parents=True, exist_ok=True)
    w = TileWriter(root, scratch)
    w.write_many(items, ext)
    return w.files


class ShardWriter(TileWriter):
    """The writer of one shard of a product (``product_dir``), as a context manager.

    On entry it locks the shard (``_tmp/<shard>.lock``: a second run of the same shard waits,
    then finds it done in ``current``; ``lock=False`` when the caller holds that lock already, as a
    shard task's run does: ``tasks.base.locked``), deletes what a killed run left in the scratch folder,
    deletes temporary files killed writes of its manifest or marker left, and records a started
    marker with ``digest``: ``resumable`` tells whether the tiles on disk
    come from a run with today's digest (a killed one, or a finished one), so a downloader may
    keep them after verifying. ``commit(extra)`` writes the shard manifest last
    (``_shards/<shard>.json``); on exit the scratch folder, the lock and an empty ``_tmp`` go.
    """

    def __init__(self, product_dir: str | Path, shard: str, digest: str, exts: Sequence[str] = (),
                 lock: bool = True) -> None:
        product_dir = Path(product_dir)
        super().__init__(product_dir, product_dir / "_tmp" / shard, exts)
        self.shard, self.digest = shard, digest
        self.manifest = product_dir / "_shards" / f"{shard}.json"
        self.marker = product_dir / "_shards" / f"{shard}.started.json"
        self.resumable = self.current = False
        self.lock = lock
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> ShardWriter:
        stack = contextlib.ExitStack()
        if self.lock:
            stack.enter_context(file_lock(self.root / "_tmp" / f"{self.shard}.lock",
                                          on_wait=lambda: log.info("shard %s: waiting for another run", self.shard)))
        self._lock = stack
        try:
            self.current = manifest_is_current(self.manifest, self.digest)
            if not self.current:
                self.resumable = any(_records_digest(p, self.digest) for p in (self.marker, self.manifest))
                reset_dir(self.scratch)
                clean_stale_temps(self.manifest, self.marker)  # killed writes of them (we hold the lock)
                atomic_write_json(self.marker, {"config_digest": self.digest})
        except BaseException:
            stack.close()
            raise
        return self

    def commit(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write the shard manifest (root, shard, tiles, files, status, valid_share, ``extra``)."""
        body = {"root": str(self.root), "shard": self.shard, "tiles": len(self.status), "files": self.files,
                "status": self.status, "valid_share": self.valid_share, **(extra or {})}
        write_manifest(self.manifest, self.digest, body)
        self.marker.unlink(missing_ok=True)
        return body

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
        with contextlib.suppress(OSError):
            (self.root / "_tmp").rmdir()


def _records_digest(path: Path, digest: str) -> bool:
    try:
        return path.is_file() and read_manifest(path).get("config_digest") == digest
    except ManifestError:
        return False


def remove_stale_scratch(folder: str | Path) -> int:
    """Delete what killed shard runs left in a product's ``_tmp`` folder: scratch folders
    (``<shard>/``) and lock files (``<shard>.lock``) of shards no process holds, then the folder
    itself if it is empty; returns how many shards were cleaned. Safe beside live runs: a held
    lock is skipped, and ``file_lock`` retries when its file was deleted."""
    folder = Path(folder)
    names = {p.stem for p in folder.glob("*.lock")} | {p.name for p in folder.iterdir() if p.is_dir()} \
        if folder.is_dir() else set()
    cleaned = 0
    for name in sorted(names):
        lock = folder / f"{name}.lock"
        try:
            held = try_lock(lock)
        except OSError:  # gone meanwhile (the folder too)
            continue
        if held is None:  # held by a live run
            continue
        try:
            shutil.rmtree(folder / name, ignore_errors=True)
            lock.unlink(missing_ok=True)
            cleaned += 1
        finally:
            held.release()
    with contextlib.suppress(OSError):
        folder.rmdir()
    return cleaned
