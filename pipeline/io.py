"""Atomic file writing, tile folders, manifests and GeoParquet/GeoJSON I/O.

Every output is written to a temporary file in the same folder (or a given scratch folder on
the same filesystem) and renamed into place with ``os.replace``, so a killed run never leaves a
partial file under a final name.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.errors import ManifestError
from pipeline.tiles import Tile

if TYPE_CHECKING:
    import geopandas as gpd

MANIFEST_VERSION = 1
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | Path, scratch: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on error delete it.

    The temporary name never ends with the final suffix, so globbing ``*.png`` never sees it.
    """
    path = Path(path)
    folder = Path(scratch) if scratch is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; outputs are for people and other tools too
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


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
# Features (GeoParquet, EPSG:4326)

#: columns of ``features.parquet`` besides ``geometry`` (EPSG:4326)
FEATURE_COLUMNS = ("osm_type", "osm_id", "class", "class_id", "buffer_m", "tags")


FEATURE_ROW_GROUP = 4096


def write_features(gdf: gpd.GeoDataFrame, path: str | Path) -> None:
    """Write features as GeoParquet (EPSG:4326, with a bbox covering column) atomically.

    Rows are stored in spatial (Morton) order of their bounding-box centres, in row groups of
    ``FEATURE_ROW_GROUP`` rows, so that a bbox read (one shard) skips the row groups that lie
    elsewhere instead of scanning the whole file. The order is deterministic (ties keep the
    input order).
    """
    order = np.argsort(_morton_keys(gdf.geometry.to_numpy()), kind="stable")
    with atomic_path(path) as tmp:
        gdf.iloc[order].to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True,
                                   row_group_size=FEATURE_ROW_GROUP)


def _morton_keys(geoms: np.ndarray) -> np.ndarray:
    """Z-order keys (uint64) of the bbox centres of EPSG:4326 geometries on a 2**16 grid."""
    b = shapely.bounds(geoms)
    cx = np.nan_to_num((b[:, 0] + b[:, 2]) / 2)
    cy = np.nan_to_num((b[:, 1] + b[:, 3]) / 2)
    x = np.clip((cx + 180) / 360 * 65536, 0, 65535).astype(np.uint64)
    y = np.clip((90 - cy) / 180 * 65536, 0, 65535).astype(np.uint64)
    return _spread_bits(x) | (_spread_bits(y) << np.uint64(1))


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Insert a zero bit between the 16 low bits of each value (for Morton keys)."""
    v = v & np.uint64(0xFFFF)
    for shift, mask in ((8, 0x00FF00FF), (4, 0x0F0F0F0F), (2, 0x33333333), (1, 0x55555555)):
        v = (v | (v << np.uint64(shift))) & np.uint64(mask)
    return v


def read_features(
    path: str | Path, bbox: tuple[float, float, float, float] | None = None
) -> gpd.GeoDataFrame:
    """Read ``features.parquet`` (EPSG:4326); with ``bbox`` (W, S, E, N degrees) only the rows
    whose bounding box intersects it.

    Reads with pyarrow directly, filtering on the GeoParquet ``bbox`` covering column so whole
    row groups are skipped, and gives the frame a cached EPSG:4326 CRS: ``geopandas.read_parquet``
    parses the file's PROJJSON with pyproj on every call (20 ms, more than a shard's read).
    """
    import geopandas as gpd
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.errors import InputDataError

    filt = None
    if bbox is not None:
        w, s, e, n = bbox
        filt = ((pc.field("bbox", "xmin") <= e) & (pc.field("bbox", "xmax") >= w)
                & (pc.field("bbox", "ymin") <= n) & (pc.field("bbox", "ymax") >= s))
    try:
        table = pq.read_table(path, filters=filt)
    except FileNotFoundError as exc:
        raise InputDataError(f"{path}: features file not found; run ExtractFeatures first") from exc
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
        raise InputDataError(f"{path}: unreadable features file ({exc}); delete it and rerun") from exc
    if "bbox" in table.column_names:
        table = table.drop_columns(["bbox"])
    df = table.to_pandas()
    geoms = shapely.from_wkb(df.pop("geometry").to_numpy())
    return gpd.GeoDataFrame(df, geometry=geoms, crs=_crs_4326())


@functools.cache
def _crs_4326() -> Any:
    import pyproj

    return pyproj.CRS.from_epsg(4326)


# ---------------------------------------------------------------------------------------------
# Tile trees


def write_tile_files(
    root: str | Path, items: Iterable[tuple[Tile, bytes]], ext: str, scratch: str | Path
) -> dict[str, dict[str, Any]]:
    """Write each ``(tile, bytes)`` to ``root/z/x/y.ext`` atomically (through ``scratch``, a
    folder on the same filesystem). Returns ``{"z/x/y.ext": {"size": n, "sha256": hex}}``."""
    root, scratch = Path(root), Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    made: set[Path] = set()
    files: dict[str, dict[str, Any]] = {}
    for t, data in items:
        final = tile_path(root, t, ext)
        if final.parent not in made:
            final.parent.mkdir(parents=True, exist_ok=True)
            made.add(final.parent)
        tmp = scratch / f"{t.z}-{t.x}-{t.y}.{ext}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)
        files[f"{t.z}/{t.x}/{t.y}.{ext}"] = {"size": len(data), "sha256": sha256_bytes(data)}
    return files


# ---------------------------------------------------------------------------------------------
# Tile index: which tiles of a product belong to today's run

#: columns of a product's tile index (``read_tile_index``)
INDEX_COLUMNS = ("z", "x", "y", "shard", "path", "size", "sha256", "status")
#: index statuses: a tile file was written; the tile was skipped (no valid pixels); the source lacked it
WRITTEN, NODATA, MISSING = "written", "nodata", "missing"


def read_tile_index(product_dir: str | Path) -> Any:
    """The tile index of a sharded product (``data/<region>/<product>``) as a DataFrame with
    ``INDEX_COLUMNS``, sorted by (z, x, y): ``path`` is relative to ``product_dir`` (empty when
    no file was written), ``status`` one of ``written``, ``nodata``, ``missing``.

    Built from the shard manifests that the product's tasks wrote (never a glob of the tile
    folders, which may hold tiles of an earlier config). Raises ManifestError naming the folder
    when the product has no shard manifest (run its ``*All`` task first).
    """
    import pandas as pd

    product_dir = Path(product_dir)
    manifests = sorted((product_dir / "_shards").glob("*.json"))
    if not manifests:
        raise ManifestError(f"{product_dir}: no shard manifests; run the stage that makes it first")
    rows: list[tuple[Any, ...]] = []
    for mpath in manifests:
        m = read_manifest(mpath)
        shard = str(m.get("shard", mpath.stem))
        by_tile: dict[str, tuple[str, int, str]] = {}
        for rel, info in m.get("files", {}).items():
            by_tile[rel.rsplit(".", 1)[0]] = (rel, int(info["size"]), str(info.get("sha256", "")))
        status = m.get("status") or {k: "ok" for k in by_tile}
        for key, st in status.items():
            z, x, y = (int(v) for v in key.split("/"))
            rel, size, sha = by_tile.get(key, ("", 0, ""))
            label = WRITTEN if st == "ok" else NODATA if st.startswith("nodata") else MISSING
            rows.append((z, x, y, shard, rel, size, sha, label))
    df = pd.DataFrame(rows, columns=list(INDEX_COLUMNS))
    return df.sort_values(["z", "x", "y"], kind="stable").reset_index(drop=True)
