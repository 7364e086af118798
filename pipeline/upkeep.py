"""Upkeep of a region's data folder: verify tiles against their index, prune what today's
index does not list, and clean temporary files that killed runs left.

A product folder (``data/<region>/<product>``) holds ``index.parquet`` (today's tiles, see
:func:`pipeline.io.read_tile_index`), ``_shards/<quadkey>.json`` manifests, ``_manifest.json``
and the tiles ``z/x/y.<ext>``. Everything here works from the index, never trusts a glob of
the tiles except to find files the index does *not* list.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.io import INDEX_FILE, WRITTEN, read_tile_index, tiles_on_disk


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


def clean_temps(data_dir: str | Path) -> list[Path]:
    """Delete what killed runs left under a region folder: ``_tmp`` scratch folders and
    ``.<name>.<random>.tmp*`` files. Never run it while a run on the region is going on."""
    removed: list[Path] = []
    for dirpath, dirs, files in os.walk(data_dir):
        for d in [d for d in dirs if d == "_tmp"]:
            shutil.rmtree(Path(dirpath) / d, ignore_errors=True)
            removed.append(Path(dirpath) / d)
            dirs.remove(d)
        for f in files:
            if f.startswith(".") and ".tmp" in f:
                (Path(dirpath) / f).unlink(missing_ok=True)
                removed.append(Path(dirpath) / f)
    return removed
