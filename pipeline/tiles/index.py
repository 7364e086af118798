"""The tile index of a sharded product: which tiles belong to today's run, and whether they are
whole on disk.

A product is done when its ``<product>/_manifest.json`` records today's config digest and
``index.parquet`` (every tile of today's shards, written by the ``*All`` task from the shard
manifests, see :mod:`pipeline.tiles.writer`) lists files that still have their sizes. The tile
files on disk are listed only to find those the index does *not* list (stale-tile reports, pruning).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import ManifestError
from pipeline.core.manifests import read_manifest
from pipeline.tiles.writer import TileStatus

#: columns of a product's tile index (``read_tile_index``)
INDEX_COLUMNS = ("z", "x", "y", "shard", "path", "size", "sha256", "status")
#: index statuses: a tile file was written; the tile was skipped (no valid pixels); the source lacked it
WRITTEN, NODATA, MISSING = "written", "nodata", "missing"
#: a manifest status -> its index status (one vocabulary: the two words of each status live here only)
INDEX_STATUS = {TileStatus.OK: WRITTEN, TileStatus.NODATA: NODATA, TileStatus.MISSING: MISSING}
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
        status = m.get("status") or {k: TileStatus.OK for k in by_tile}
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


def read_tile_index(product_dir: str | Path, shards: Sequence[str] | None = None) -> Any:
    """The tile index of a sharded product (``data/<region>/<product>``) as a DataFrame with
    ``INDEX_COLUMNS``, sorted by (z, x, y): ``path`` is relative to ``product_dir`` (empty when
    no file was written), ``status`` one of ``written``, ``nodata``, ``missing``.

    Reads ``index.parquet``, which the product's ``*All`` task writes from the manifests of
    today's shards (never a glob of the tile folders, which may hold tiles of an earlier
    config). Without it (a product made before the index existed), built from every shard
    manifest. Raises ManifestError naming the folder when there is neither. ``shards``: only the
    rows of these shards (quadkeys), filtered while reading.
    """
    import pandas as pd

    product_dir = Path(product_dir)
    index = product_dir / INDEX_FILE
    if index.is_file():
        try:
            if not shards:  # (pyarrow cannot filter on an empty list)
                df = pd.read_parquet(index)
                return df if shards is None else df.iloc[:0]
            return pd.read_parquet(index, filters=[("shard", "in", sorted(set(shards)))])
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{index}: unreadable tile index ({exc}); delete it and rerun the stage") from exc
    manifests = sorted((product_dir / "_shards").glob("*.json"))
    manifests = [p for p in manifests if not p.name.endswith(".started.json")]
    if not manifests:
        raise ManifestError(f"{product_dir}: no tile index or shard manifests; run the stage that makes it first")
    if shards is not None:
        manifests = [p for p in manifests if p.stem in set(shards)]
    return tile_index({p.stem: read_manifest(p) for p in manifests})


def written_tiles(product_dir: str | Path, shard: str | Sequence[str] | None = None) -> Any:
    """The rows of a product's tile index (:func:`read_tile_index`) whose tile file was written
    (status ``written``): of every shard, or of one ``shard`` (a quadkey), or of several."""
    shards = None if shard is None else [shard] if isinstance(shard, str) else list(shard)
    idx = read_tile_index(product_dir, shards)
    return idx[idx.status == WRITTEN]


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
