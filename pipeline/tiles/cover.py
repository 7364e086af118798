"""Stage ``cover``: the tiles at the region's zoom that the features (or the bbox) touch.

The table is ``z, x, y, shard`` (shard = quadkey of the parent tile at ``shard_zoom``),
sorted by x then y, written as ``tiles.csv``. Before it is written, :func:`plan_line` states the
tiles, shards and an estimate of the disk the tile products will take, and :func:`check_plan`
refuses more tiles than ``[region] max_tiles``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
from numpy.typing import NDArray

from pipeline.config.region import RegionConfig
from pipeline.core.atomic import atomic_path
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.core.outputs import file_identity
from pipeline.tiles.geo import burn_geometries, to_mercator
from pipeline.tiles.tilemath import Tile, cover_bbox, cover_mercator, shards_of, tile_ranges

if TYPE_CHECKING:
    import pandas as pd

TILES_COLUMNS = ("z", "x", "y", "shard")


@dataclass(frozen=True)
class TileList:
    """The tile table as columns, without pandas (the cover stage writes it and needs no more):
    ``z``, ``x``, ``y`` int64 arrays and ``shard`` quadkeys, in table order. Has the attributes
    :func:`write_tiles_csv` reads, as a ``z, x, y, shard`` DataFrame does."""

    z: NDArray[np.int64]
    x: NDArray[np.int64]
    y: NDArray[np.int64]
    shard: list[str]

    def __len__(self) -> int:
        return len(self.x)

    def n_shards(self) -> int:
        return len(set(self.shard))

    def frame(self) -> pd.DataFrame:
        """The same table as a DataFrame (what :func:`read_tiles_csv` returns)."""
        import pandas as pd

        return pd.DataFrame({"z": self.z, "x": self.x, "y": self.y, "shard": self.shard})


def cover_features(geoms_4326: NDArray[np.object_], buffer_m: NDArray[np.float64], z: int) -> NDArray[np.int64]:
    """Exact tile cover (x, y) at zoom ``z`` of features in EPSG:4326 with their line buffers."""
    return cover_mercator(burn_geometries(geoms_4326, buffer_m), z)


def tile_list(xy: NDArray[np.int64], z: int, shard_zoom: int) -> TileList:
    """The ``z, x, y, shard`` table of (M, 2) tile indices, as columns."""
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    return TileList(np.full(len(xy), z, dtype=np.int64), xy[:, 0].copy(), xy[:, 1].copy(),
                    shards_of(z, xy[:, 0], xy[:, 1], shard_zoom))


def tiles_table(xy: NDArray[np.int64], z: int, shard_zoom: int) -> pd.DataFrame:
    """Build the ``z, x, y, shard`` table from (M, 2) tile indices (a DataFrame; see :func:`tile_list`)."""
    return tile_list(xy, z, shard_zoom).frame()


def region_tiles(cfg: RegionConfig, geoms_4326: NDArray[np.object_], buffer_m: NDArray[np.float64]) -> TileList:
    """The region's tile table: every tile of ``cfg.bbox`` when set, else the features' cover.
    A bbox of more than ``max_tiles`` tiles is refused before its tiles are listed."""
    if cfg.bbox is not None:
        check_plan(cfg, *bbox_counts(cfg.bbox, cfg.zoom, cfg.shard_zoom))
        xy = cover_bbox(cfg.bbox, cfg.zoom)
    else:
        xy = cover_features(geoms_4326, buffer_m, cfg.zoom)
    return tile_list(xy, cfg.zoom, cfg.shard_zoom)


#: rough bytes per 256-px tile of each tile product (masks: palette PNGs of z19-z21 towns, 4-5 KB;
#: imagery by format; predictions: per-class probability PNGs); scaled by the tile's area
_TILE_BYTES = {"masks": 5_000, "predictions": 15_000}
_IMAGE_BYTES = {"png": 90_000, "jpg": 25_000, "tif": 200_000}


def bbox_counts(bbox: tuple[float, float, float, float], z: int, shard_zoom: int) -> tuple[int, int]:
    """(tiles, shards) of a lon/lat box at zoom ``z``, counted without listing the tiles."""
    bounds = shapely.bounds(to_mercator(np.array([shapely.box(*bbox)], dtype=object)))

    def count(zoom: int) -> int:
        x0, x1, y0, y1 = tile_ranges(bounds, zoom)
        return int((x1[0] - x0[0] + 1) * (y1[0] - y0[0] + 1))

    return count(z), count(shard_zoom)


def disk_estimate(cfg: RegionConfig, n_tiles: int) -> dict[str, int]:
    """Rough bytes on disk per tile product for ``n_tiles`` tiles (imagery only when configured,
    masks only when the region has labels)."""
    scale = (cfg.tile_size / 256) ** 2
    per = dict(_TILE_BYTES)
    if cfg.imagery is not None:
        per["images"] = _IMAGE_BYTES.get(cfg.imagery.format, _IMAGE_BYTES["png"])
    else:
        per.pop("predictions")  # nothing to predict from
    if not cfg.labelled:
        per.pop("masks")  # no labels to burn
    return {k: round(v * scale * n_tiles) for k, v in per.items()}


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def plan_line(cfg: RegionConfig, n_tiles: int, n_shards: int) -> str:
    """One line: the region's tiles, shards and estimated disk by product."""
    est = disk_estimate(cfg, n_tiles)
    parts = ", ".join(f"{k} {_size(v)}" for k, v in est.items())
    return (f"{cfg.name}: {n_tiles:,} tiles at zoom {cfg.zoom} in {n_shards:,} shards (zoom {cfg.shard_zoom}); "
            f"estimated disk about {_size(sum(est.values()))} ({parts}); region.max_tiles = {cfg.max_tiles:,}")


def check_plan(cfg: RegionConfig, n_tiles: int, n_shards: int) -> None:
    """Raise ConfigError naming ``region.max_tiles`` when the region has more tiles than it allows."""
    if n_tiles > cfg.max_tiles:
        est = sum(disk_estimate(cfg, n_tiles).values())
        raise ConfigError(f"{cfg.path}: region.max_tiles = {cfg.max_tiles:,}, but zoom {cfg.zoom} over this region "
                          f"is {n_tiles:,} tiles in {n_shards:,} shards (about {_size(est)} on disk) — lower "
                          f"region.zoom or shrink region.bbox, or raise max_tiles in [region] to {n_tiles} or more "
                          "if this is meant")


def write_tiles_csv(df: pd.DataFrame | TileList, path: str | Path) -> None:
    """Write the tile table (a DataFrame or a :class:`TileList`) as CSV (header ``z,x,y,shard``,
    ``\\n`` line ends), atomically."""
    lines = ["z,x,y,shard"]
    lines += [f"{z},{x},{y},{s}" for z, x, y, s in zip(_ints(df.z), _ints(df.x), _ints(df.y), df.shard)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="ascii")


def _ints(col: object) -> list[int]:
    """A column (numpy array or pandas Series) as Python ints."""
    return np.asarray(col, dtype=np.int64).tolist()


def read_tiles_csv(path: str | Path) -> pd.DataFrame:
    """Read ``tiles.csv``; the shard column stays a string (quadkeys may start with 0)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype={"z": np.int64, "x": np.int64, "y": np.int64, "shard": str},
                         keep_default_na=False)
    except FileNotFoundError as exc:
        raise _tiles_csv_missing(path) from exc
    except (ValueError, pd.errors.ParserError) as exc:
        raise _tiles_csv_unreadable(path, exc) from exc
    _check_columns(path, tuple(df.columns))
    return df


def _tiles_csv_missing(path: str | Path) -> InputDataError:
    return InputDataError(f"{path}: tile list not found; run CoverTiles first")


def _tiles_csv_unreadable(path: str | Path, exc: Exception) -> InputDataError:
    return InputDataError(f"{path}: unreadable tile list ({exc}); delete it and rerun CoverTiles")


def _check_columns(path: str | Path, columns: tuple[str, ...]) -> None:
    if columns != TILES_COLUMNS:
        raise InputDataError(f"{path}: expected columns {','.join(TILES_COLUMNS)}, got {','.join(columns)}")


def read_shards(path: str | Path) -> list[str]:
    """The sorted distinct shard quadkeys of ``tiles.csv``, read without pandas (what a task
    scheduling one task per shard needs; the same errors as :func:`read_tiles_csv`)."""
    import csv

    try:
        with open(path, newline="") as fh:
            rows = csv.reader(fh)
            _check_columns(path, tuple(next(rows, ())))
            shards = {row[3] for row in rows if len(row) == len(TILES_COLUMNS)}
    except FileNotFoundError as exc:
        raise _tiles_csv_missing(path) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _tiles_csv_unreadable(path, exc) from exc
    return sorted(shards)


def shard_tiles(df: pd.DataFrame, shard: str) -> list[Tile]:
    """The tiles of one shard from the tile table, in table order."""
    sel = df[df.shard == shard]
    return [Tile(int(z), int(x), int(y)) for z, x, y in zip(sel.z, sel.x, sel.y)]


#: ``tiles.csv`` grouped by shard, by the file's (path, size, mtime): read once by the process
#: that schedules a stage's shards (``tasks.base.ShardTask.prepare``) and inherited by the shard
#: processes it forks, instead of each of them reading the region's whole table
_BY_SHARD: dict[tuple[str, int, int], dict[str, list[Tile]]] = {}


def tiles_by_shard(path: str | Path) -> dict[str, list[Tile]]:
    """``{shard: its tiles in table order}`` of ``tiles.csv`` (read once per file version)."""
    try:
        key = file_identity(path)
    except FileNotFoundError as exc:
        raise _tiles_csv_missing(path) from exc
    if key not in _BY_SHARD:
        df = read_tiles_csv(path)
        out: dict[str, list[Tile]] = {}
        for z, x, y, shard in zip(df.z.tolist(), df.x.tolist(), df.y.tolist(), df.shard.tolist(), strict=True):
            out.setdefault(shard, []).append(Tile(z, x, y))
        _BY_SHARD.clear()  # one table at a time
        _BY_SHARD[key] = out
    return _BY_SHARD[key]
