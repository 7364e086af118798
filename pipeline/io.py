"""Atomic file writing, manifests, locks, the tile writer and the tile index.

Every output is written to a temporary file in the same folder (or a given scratch folder on
the same filesystem) and renamed into place with ``os.replace``, so a killed run never leaves a
partial file under a final name. Nothing here changes process state at import (no umask).

Sharded products (masks, images, and later predictions) are written by one writer,
:class:`ShardWriter`, and are complete by one protocol: a shard is done when its manifest
``<product>/_shards/<quadkey>.json`` records today's config digest and its files still have
their sizes; the product is done when ``<product>/_manifest.json`` does and ``index.parquet``
(every tile of today's shards, written by the ``*All`` task) lists files that still have theirs.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.atomic import atomic_path
from pipeline.errors import ManifestError

if TYPE_CHECKING:
    from pipeline.tiles import Tile

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary files that ``atomic_path(path)`` calls killed mid-write left beside ``path``
    (``.<name>.<random>.tmp``, and what writers made from them, e.g. ``.tmp.aux.xml``)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*") if p.is_file())


def clean_stale_temps(*paths: str | Path) -> list[Path]:
    """Delete the temporary files that killed ``atomic_path`` writes of ``paths`` left beside
    them (the caller owns these outputs, e.g. holds their lock); returns what went."""
    gone: list[Path] = []
    for p in paths:
        for tmp in stale_temps(p):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone


def atomic_write_bytes(path: str | Path, data: bytes, scratch: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path, scratch) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


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


def write_manifest(path: str | Path, digest: str, body: dict[str, Any]) -> None:
    """Write a manifest: ``{"version", "config_digest", ...body}``, atomically."""
    atomic_write_json(path, {"version": MANIFEST_VERSION, "config_digest": digest, **body})


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest; raises ManifestError naming the file when it is not valid JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc}); delete it to redo that work") from exc
    if not isinstance(data, dict) or "config_digest" not in data:
        raise ManifestError(f"{path}: not an osmsat manifest; delete it to redo that work")
    return data


def manifest_is_current(path: str | Path, digest: str, check_files: bool = True) -> bool:
    """True when the manifest exists, records ``digest``, and every file it lists
    (``files: {relative path: {"size": n, ...}}``, relative to the manifest's ``root``) still
    exists with the recorded size."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        m = read_manifest(path)
    except ManifestError:
        return False
    if m.get("config_digest") != digest:
        return False
    if check_files:
        root = Path(m.get("root", path.parent))
        for rel, info in m.get("files", {}).items():
            p = root / rel
            try:
                if p.stat().st_size != info["size"]:
                    return False
            except OSError:
                return False
    return True


# ---------------------------------------------------------------------------------------------
# Locks


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block; wait
    for another holder (``on_wait`` is called once first). The file is deleted on release, and a
    waiter that got the lock on a deleted file tries again, so two runs never both hold it."""
    path = Path(path)
    waited = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder is new, or another run just removed it empty
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None and not waited:
                    on_wait()
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


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
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                shutil.rmtree(folder / name, ignore_errors=True)
                os.unlink(lock)
                cleaned += 1
        except OSError:  # held by a live run (BlockingIOError), or gone meanwhile
            pass
        finally:
            os.close(fd)
    with contextlib.suppress(OSError):
        folder.rmdir()
    return cleaned


# ---------------------------------------------------------------------------------------------
# Tile trees: one writer for every sharded product

#: manifest statuses of a tile: a file was written; skipped (no valid pixels); the source lacked it
TILE_OK, TILE_NODATA, TILE_MISSING = "ok", "nodata-skipped", "missing-on-server"


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
        self.adopt(t, TILE_OK, ext, len(data), sha, valid_share)
        return sha

    def write_many(self, items: Iterable[tuple[Tile, bytes]], ext: str) -> None:
        for t, data in items:
            self.write(t, data, ext)

    def skip(self, t: Tile, status: str, valid_share: float = 0.0) -> None:
        """Record a tile without a file (``TILE_NODATA`` / ``TILE_MISSING``); deletes any old file."""
        self._remove(t)
        self.adopt(t, status, valid_share=valid_share)

    def adopt(self, t: Tile, status: str, ext: str = "", size: int = 0, sha256: str = "",
              valid_share: float = 1.0) -> None:
        """Record a tile; for ``TILE_OK`` its file ``root/z/x/y.ext`` (written here, or by a
        downloader through ``scratch``) of ``size`` bytes and ``sha256``."""
        key = f"{t.z}/{t.x}/{t.y}"
        self.status[key] = status
        if status == TILE_OK:
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
    then finds it done in ``current``), deletes what a killed run left in the scratch folder,
    deletes temporary files killed writes of its manifest or marker left, and records a started
    marker with ``digest``: ``resumable`` tells whether the tiles on disk
    come from a run with today's digest (a killed one, or a finished one), so a downloader may
    keep them after verifying. ``commit(extra)`` writes the shard manifest last
    (``_shards/<shard>.json``); on exit the scratch folder, the lock and an empty ``_tmp`` go.
    """

    def __init__(self, product_dir: str | Path, shard: str, digest: str, exts: Sequence[str] = ()) -> None:
        product_dir = Path(product_dir)
        super().__init__(product_dir, product_dir / "_tmp" / shard, exts)
        self.shard, self.digest = shard, digest
        self.manifest = product_dir / "_shards" / f"{shard}.json"
        self.marker = product_dir / "_shards" / f"{shard}.started.json"
        self.resumable = self.current = False
        self._lock: contextlib.ExitStack | None = None

    def __enter__(self) -> ShardWriter:
        stack = contextlib.ExitStack()
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


# ---------------------------------------------------------------------------------------------
# Tile index: which tiles of a product belong to today's run

#: columns of a product's tile index (``read_tile_index``)
INDEX_COLUMNS = ("z", "x", "y", "shard", "path", "size", "sha256", "status")
#: index statuses: a tile file was written; the tile was skipped (no valid pixels); the source lacked it
WRITTEN, NODATA, MISSING = "written", "nodata", "missing"
#: a manifest status -> its index status (one vocabulary: the two words of each status live here only)
INDEX_STATUS = {TILE_OK: WRITTEN, TILE_NODATA: NODATA, TILE_MISSING: MISSING}
INDEX_FILE = "index.parquet"


def tile_index(manifests: Mapping[str, Mapping[str, Any]]) -> Any:
    """The tile index (DataFrame with ``INDEX_COLUMNS``, sorted by z, x, y) of shard manifests
    ``{shard: manifest}``; ``path`` relative to the product folder, empty when no file."""
    import pandas as pd

    rows: list[tuple[Any, ...]] = []
    for shard in sorted(manifests):
        m = manifests[shard]
        by_tile = {rel.rsplit(".", 1)[0]: (rel, int(info["size"]), str(info.get("sha256", "")))
                   for rel, info in m.get("files", {}).items()}
        status = m.get("status") or {k: TILE_OK for k in by_tile}
        for key, st in status.items():
            z, x, y = (int(v) for v in key.split("/"))
            rel, size, sha = by_tile.get(key, ("", 0, ""))
            label = INDEX_STATUS.get(st, MISSING)
            rows.append((z, x, y, str(m.get("shard", shard)), rel, size, sha, label))
    df = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    df = df.astype({"z": "int64", "x": "int64", "y": "int64", "size": "int64"})
    return df.sort_values(["z", "x", "y"], kind="stable").reset_index(drop=True)


def write_tile_index(product_dir: str | Path, manifests: Mapping[str, Mapping[str, Any]]) -> Any:
    """Write ``product_dir/index.parquet`` from today's shard manifests; returns the index."""
    df = tile_index(manifests)
    with atomic_path(Path(product_dir) / INDEX_FILE) as tmp:
        df.to_parquet(tmp, index=False)
    return df


def read_tile_index(product_dir: str | Path) -> Any:
    """The tile index of a sharded product (``data/<region>/<product>``) as a DataFrame with
    ``INDEX_COLUMNS``, sorted by (z, x, y): ``path`` is relative to ``product_dir`` (empty when
    no file was written), ``status`` one of ``written``, ``nodata``, ``missing``.

    Reads ``index.parquet``, which the product's ``*All`` task writes from the manifests of
    today's shards (never a glob of the tile folders, which may hold tiles of an earlier
    config). Without it (a product made before the index existed), built from every shard
    manifest. Raises ManifestError naming the folder when there is neither.
    """
    import pandas as pd

    product_dir = Path(product_dir)
    index = product_dir / INDEX_FILE
    if index.is_file():
        try:
            return pd.read_parquet(index)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{index}: unreadable tile index ({exc}); delete it and rerun the stage") from exc
    manifests = sorted((product_dir / "_shards").glob("*.json"))
    manifests = [p for p in manifests if not p.name.endswith(".started.json")]
    if not manifests:
        raise ManifestError(f"{product_dir}: no tile index or shard manifests; run the stage that makes it first")
    return tile_index({p.stem: read_manifest(p) for p in manifests})


def index_is_whole(product_dir: str | Path) -> bool:
    """True when ``index.parquet`` exists and every file it lists has its recorded size (a
    cheap check: one ``stat`` per tile; ``Verify`` checks the sha256)."""
    import pandas as pd

    index = Path(product_dir) / INDEX_FILE
    try:
        df = pd.read_parquet(index, columns=["path", "size", "status"])
    except (OSError, ValueError):
        return False
    root = str(product_dir)
    for rel, size in zip(df.path[df.status == WRITTEN].tolist(), df["size"][df.status == WRITTEN].tolist(),
                         strict=True):
        try:
            if os.stat(os.path.join(root, rel)).st_size != size:
                return False
        except OSError:
            return False
    return True


def shards_whole(product_dir: str | Path, shards: Iterable[str], digest: str) -> bool:
    """True when the manifest of each of ``shards`` (``_shards/<quadkey>.json``) records ``digest``
    and every tile file it lists has its recorded size: :func:`index_is_whole` for the index those
    manifests made, read from their JSON (no parquet reader, no pandas: a quick completeness check)."""
    product_dir = Path(product_dir)
    root = str(product_dir)
    for shard in shards:
        try:
            m = read_manifest(product_dir / "_shards" / f"{shard}.json")
        except ManifestError:
            return False
        if m.get("config_digest") != digest:
            return False
        for rel, info in m.get("files", {}).items():
            try:
                if os.stat(os.path.join(root, rel)).st_size != info["size"]:
                    return False
            except (OSError, KeyError, TypeError):
                return False
    return True


def tiles_on_disk(product_dir: str | Path) -> list[str]:
    """Relative paths ``z/x/y.ext`` of the tile files under ``product_dir`` (numeric folders
    only; manifests, scratch and the index are not tiles). For stale-tile reports and pruning."""
    out: list[str] = []
    root = Path(product_dir)
    if not root.is_dir():
        return out
    for zdir in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        for dirpath, _dirs, names in os.walk(zdir):
            rel = os.path.relpath(dirpath, root)
            out.extend(f"{rel}/{n}" for n in names if not n.startswith("."))
    return sorted(out)
