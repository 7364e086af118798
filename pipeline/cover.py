"""Stage ``cover``: the tiles at the region's zoom that the features (or the bbox) touch.

The table is ``z, x, y, shard`` (shard = quadkey of the parent tile at ``shard_zoom``),
sorted by x then y, written as ``tiles.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pipeline.config import RegionConfig
from pipeline.errors import InputDataError
from pipeline.geo import burn_geometries
from pipeline.io import atomic_path
from pipeline.tiles import Tile, cover_bbox, cover_mercator, shards_of

TILES_COLUMNS = ("z", "x", "y", "shard")


def cover_features(geoms_4326: NDArray[np.object_], buffer_m: NDArray[np.float64], z: int) -> NDArray[np.int64]:
    """Exact tile cover (x, y) at zoom ``z`` of features in EPSG:4326 with their line buffers."""
    return cover_mercator(burn_geometries(geoms_4326, buffer_m), z)


def tiles_table(xy: NDArray[np.int64], z: int, shard_zoom: int) -> pd.DataFrame:
    """Build the ``z, x, y, shard`` table from (M, 2) tile indices."""
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame(
        {
            "z": np.full(len(xy), z, dtype=np.int64),
            "x": xy[:, 0],
            "y": xy[:, 1],
            "shard": shards_of(z, xy[:, 0], xy[:, 1], shard_zoom),
        }
    )


def region_tiles(cfg: RegionConfig, geoms_4326: NDArray[np.object_], buffer_m: NDArray[np.float64]) -> pd.DataFrame:
    """The region's tile table: every tile of ``cfg.bbox`` when set, else the features' cover."""
    if cfg.bbox is not None:
        xy = cover_bbox(cfg.bbox, cfg.zoom)
    else:
        xy = cover_features(geoms_4326, buffer_m, cfg.zoom)
    return tiles_table(xy, cfg.zoom, cfg.shard_zoom)


def write_tiles_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write the tile table as CSV (header ``z,x,y,shard``, ``\\n`` line ends), atomically."""
    lines = ["z,x,y,shard"]
    lines += [f"{z},{x},{y},{s}" for z, x, y, s in zip(df.z, df.x, df.y, df.shard)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")


def read_tiles_csv(path: str | Path) -> pd.DataFrame:
    """Read ``tiles.csv``; the shard column stays a string (quadkeys may start with 0)."""
    try:
        df = pd.read_csv(path, dtype={"z": np.int64, "x": np.int64, "y": np.int64, "shard": str},
                         keep_default_na=False)
    except FileNotFoundError as exc:
        raise InputDataError(f"{path}: tile list not found; run CoverTiles first") from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputDataError(f"{path}: unreadable tile list ({exc}); delete it and rerun CoverTiles") from exc
    if tuple(df.columns) != TILES_COLUMNS:
        raise InputDataError(f"{path}: expected columns {','.join(TILES_COLUMNS)}, got {','.join(df.columns)}")
    return df


def shard_tiles(df: pd.DataFrame, shard: str) -> list[Tile]:
    """The tiles of one shard from the tile table, in table order."""
    sel = df[df.shard == shard]
    return [Tile(int(z), int(x), int(y)) for z, x, y in zip(sel.z, sel.x, sel.y)]
