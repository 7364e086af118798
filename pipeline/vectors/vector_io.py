"""Vector outputs: RFC 7946 GeoJSON (lon/lat, 7 decimals), GeoPackage with one layer per
class, and the per-shard piece files of the vectorise stage. All written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from pipeline.core.atomic import atomic_path, atomic_write_bytes
from pipeline.core.errors import InputDataError
from pipeline.vectors.merge import PIECE_COLUMNS, empty_pieces

if TYPE_CHECKING:
    import geopandas as gpd

DECIMALS = 7  # 1e-7 degrees: about 1 cm
#: GeoPackage 1.2, which the GDAL of QGIS 3.22 (Debian 12) reads without warnings
GPKG_OPTIONS = {"VERSION": "1.2"}


def _plain(v: Any) -> Any:
    """A JSON-ready property value (numpy scalars unwrapped, NaN and None as null)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is pd.NA or v is None:
        return None
    return v


def geojson_bytes(gdf: gpd.GeoDataFrame, name: str = "") -> bytes:
    """An EPSG:4326 GeoDataFrame as an RFC 7946 FeatureCollection, one feature per line,
    coordinates rounded to 7 decimals (properties: every non-geometry column)."""
    geoms = shapely.transform(gdf.geometry.to_numpy(), lambda c: np.round(c, DECIMALS))
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    records = gdf[cols].to_dict("records") if cols else [{} for _ in range(len(gdf))]
    lines = []
    for g, props in zip(geoms, records):
        feat = {"type": "Feature", "properties": {k: _plain(v) for k, v in props.items()},
                "geometry": json.loads(shapely.to_geojson(g)) if g is not None else None}
        lines.append(json.dumps(feat, separators=(",", ":"), allow_nan=False))
    head = json.dumps({"type": "FeatureCollection", "name": name})[:-1] + ',"features":[\n'
    return (head + ",\n".join(lines) + "\n]}\n").encode()


def write_geojson(gdf: gpd.GeoDataFrame, path: str | Path, name: str = "") -> None:
    """Write :func:`geojson_bytes` atomically."""
    atomic_write_bytes(path, geojson_bytes(gdf, name or Path(path).stem))


def write_gpkg(layers: dict[str, gpd.GeoDataFrame], path: str | Path) -> None:
    """Write a GeoPackage with one layer per entry (empty layers are skipped), atomically."""
    import geopandas as gpd

    with atomic_path(path) as tmp:
        work = tmp.with_name(tmp.name + ".gpkg")  # GDAL wants the extension; renamed onto tmp below
        work.unlink(missing_ok=True)
        todo = {k: v for k, v in layers.items() if len(v)} or {
            "empty": gpd.GeoDataFrame({"class": []}, geometry=[], crs="EPSG:4326")}
        try:
            for name, gdf in todo.items():
                gdf.to_file(work, layer=name, driver="GPKG", engine="pyogrio", dataset_options=GPKG_OPTIONS)
            os.replace(work, tmp)
        finally:
            work.unlink(missing_ok=True)


def write_pieces(pieces: pd.DataFrame, path: str | Path) -> None:
    """Write a piece table (:mod:`pipeline.vectors.merge`; geometries in global pixel coordinates) as Parquet."""
    df = pieces[list(PIECE_COLUMNS)].copy()
    df["geometry"] = shapely.to_wkb(df["geometry"].to_numpy())
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, compression="zstd")


def read_pieces(path: str | Path) -> pd.DataFrame:
    """Read a piece table written by :func:`write_pieces`."""
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: unreadable piece file ({exc}); delete it and rerun Vectorize") from exc
    if len(df) == 0:
        return empty_pieces()
    df["geometry"] = shapely.from_wkb(df["geometry"].to_numpy())
    return df


def shard_files(product_dir: Path, shard: str) -> tuple[Path, Path]:
    """A shard's two vectorise outputs: finished features (GeoParquet, EPSG:4326) and open pieces."""
    return product_dir / f"{shard}.features.parquet", product_dir / f"{shard}.open.parquet"


def write_finished(gdf: gpd.GeoDataFrame, path: str | Path) -> None:
    """Write finished features (EPSG:4326) as GeoParquet, atomically."""
    with atomic_path(path) as tmp:
        gdf.to_parquet(tmp, index=False, compression="zstd")


def read_finished(path: str | Path) -> gpd.GeoDataFrame:
    """Read features written by :func:`write_finished`."""
    import geopandas as gpd

    try:
        return gpd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: unreadable feature file ({exc}); delete it and rerun Vectorize") from exc
