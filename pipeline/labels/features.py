"""Stage extract's output: ``features.parquet`` (GeoParquet, EPSG:4326), written in spatial
order so that a shard reads only the row groups near it."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.core.atomic import atomic_path

if TYPE_CHECKING:
    import geopandas as gpd

#: columns of ``features.parquet`` besides ``geometry`` (EPSG:4326)
FEATURE_COLUMNS = ("osm_type", "osm_id", "class", "class_id", "buffer_m", "tags")


FEATURE_ROW_GROUP = 4096


def empty_features() -> gpd.GeoDataFrame:
    """A features frame with no rows and the columns and types of ``features.parquet`` (a region
    without labels: ``[labels] source = "none"``)."""
    import geopandas as gpd
    import pandas as pd

    cols = {"osm_type": pd.Series([], dtype=str), "osm_id": pd.Series([], dtype="int64"),
            "class": pd.Series([], dtype=str), "class_id": pd.Series([], dtype="uint8"),
            "buffer_m": pd.Series([], dtype="float64"), "tags": pd.Series([], dtype=str)}
    return gpd.GeoDataFrame(cols, geometry=gpd.GeoSeries([], crs="EPSG:4326"), crs="EPSG:4326")


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
    path: str | Path, bbox: tuple[float, float, float, float] | None = None, classes: tuple[str, ...] | None = None
) -> gpd.GeoDataFrame:
    """Read ``features.parquet`` (EPSG:4326); with ``bbox`` (W, S, E, N degrees) only the rows
    whose bounding box intersects it, with ``classes`` only the rows of those classes.

    Reads with pyarrow directly, filtering on the GeoParquet ``bbox`` covering column so whole
    row groups are skipped, and gives the frame a cached EPSG:4326 CRS: ``geopandas.read_parquet``
    parses the file's PROJJSON with pyproj on every call (20 ms, more than a shard's read).
    """
    import geopandas as gpd

    table = _read_table(path, bbox, None, classes)
    if "bbox" in table.column_names:
        table = table.drop_columns(["bbox"])
    df = table.to_pandas()
    geoms = shapely.from_wkb(df.pop("geometry").to_numpy())
    return gpd.GeoDataFrame(df, geometry=geoms, crs=crs_4326())


def read_feature_columns(
    path: str | Path, columns: tuple[str, ...], bbox: tuple[float, float, float, float] | None = None
) -> dict[str, np.ndarray]:
    """Some columns of ``features.parquet`` as numpy arrays (``geometry``: shapely geometries,
    EPSG:4326), without pandas or geopandas: for a stage that needs a few arrays (the cover reads
    ``geometry`` and ``buffer_m``), importing them would cost more than the read itself."""
    table = _read_table(path, bbox, list(columns), None)
    out = {}
    for name in columns:
        values = table.column(name).to_pylist()  # (pyarrow's to_numpy imports pandas)
        if name == "geometry":
            out[name] = shapely.from_wkb(np.array([*values, None], dtype=object)[:-1])
        else:
            out[name] = np.array(values)
    return out


def read_feature_bounds(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The class of every row of ``features.parquet`` and its bounds ((n, 4), W, S, E, N degrees:
    the ``bbox`` column, or the geometries' where a file has none), without the geometries."""
    table = _read_table(path, None, ["class", "bbox"] if _has_bbox(path) else ["class", "geometry"], None)
    cls = np.array(table.column("class").to_pylist(), dtype=object)
    if "bbox" in table.column_names:
        b = table.column("bbox").combine_chunks()
        cols = [np.asarray(b.field(k).to_numpy(zero_copy_only=False), dtype=float)
                for k in ("xmin", "ymin", "xmax", "ymax")]
        return cls, np.column_stack(cols) if len(cls) else np.empty((0, 4))
    geoms = shapely.from_wkb(np.array([*table.column("geometry").to_pylist(), None], dtype=object)[:-1])
    return cls, shapely.bounds(geoms).reshape(-1, 4)


def _has_bbox(path: str | Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return "bbox" in pq.read_schema(path).names
    except (OSError, ValueError):
        return False  # (the read that follows names the file)


def _read_table(path: str | Path, bbox: tuple[float, float, float, float] | None,
                columns: list[str] | None, classes: tuple[str, ...] | None) -> Any:
    """The pyarrow table of ``features.parquet`` (row groups outside ``bbox`` skipped, rows
    outside it or of other ``classes`` filtered out); errors name the file and the fix."""
    import pyarrow.parquet as pq

    from pipeline.core.errors import InputDataError

    filt = None
    if bbox is not None or classes is not None:
        import pyarrow.compute as pc

        filt = pc.scalar(True)
        if bbox is not None:
            w, s, e, n = bbox
            filt = ((pc.field("bbox", "xmin") <= e) & (pc.field("bbox", "xmax") >= w)
                    & (pc.field("bbox", "ymin") <= n) & (pc.field("bbox", "ymax") >= s))
        if classes is not None:
            filt = filt & pc.field("class").isin(list(classes))
    try:
        if filt is None:  # pyarrow.dataset (read_table's engine) imports pandas: 0.25 s of CPU
            with pq.ParquetFile(path) as f:
                return f.read(columns=columns)
        return pq.read_table(path, columns=columns, filters=filt)
    except FileNotFoundError as exc:
        raise InputDataError(f"{path}: features file not found; run ExtractFeatures first") from exc
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
        raise InputDataError(f"{path}: unreadable features file ({exc}); delete it and rerun") from exc


@functools.cache
def crs_4326() -> Any:
    import pyproj

    return pyproj.CRS.from_epsg(4326)


