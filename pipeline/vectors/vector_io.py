"""Vector outputs: RFC 7946 GeoJSON (lon/lat, 7 decimals), GeoPackage with one layer per
class, and the per-shard piece files of the vectorise stage. All written atomically.

The per-shard files (open pieces: Parquet; finished features: GeoParquet) are written and read
with pyarrow and shapely alone, no pandas or geopandas (about 0.25 s of CPU to import in every
``Vectorize`` process); the GeoParquet file carries the metadata geopandas writes (GeoParquet
1.1.0, the ``geoarrow.wkb`` field, the ``pandas`` schema), so ``geopandas.read_parquet`` reads
it as it read the files geopandas wrote."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import shapely

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import InputDataError
from pipeline.vectors.arrow import to_arrow, to_numpy
from pipeline.vectors.geoparquet import feature_table_arrow, read_feature_table
from pipeline.vectors.merge import PIECE_COLUMNS, empty_pieces
from pipeline.vectors.table import Table

if TYPE_CHECKING:
    import geopandas as gpd

DECIMALS = 7  # 1e-7 degrees: about 1 cm
#: GeoPackage 1.2, which the GDAL of QGIS 3.22 (Debian 12) reads without warnings
GPKG_OPTIONS = {"VERSION": "1.2"}


def _plain(v: Any, na: Any = None) -> Any:
    """A JSON-ready property value (numpy scalars unwrapped, NaN, ``na`` and None as null)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    if v is na or v is None:
        return None
    return v


#: features written per chunk: the file's text is never held whole (a region's largest layers hold
#: a feature per building)
GEOJSON_CHUNK = 20_000


def geojson_bytes(gdf: gpd.GeoDataFrame | Table, name: str = "") -> bytes:
    """An EPSG:4326 GeoDataFrame (or feature table, :mod:`pipeline.vectors.table`) as an RFC 7946
    FeatureCollection, one feature per line, coordinates rounded to 7 decimals (properties:
    every non-geometry column)."""
    return b"".join(geojson_chunks(gdf, name))


def geojson_chunks(gdf: gpd.GeoDataFrame | Table, name: str = "", rows: int = GEOJSON_CHUNK) -> Iterator[bytes]:
    """:func:`geojson_bytes` in pieces of at most ``rows`` features (joined: the same bytes)."""
    yield (json.dumps({"type": "FeatureCollection", "name": name})[:-1] + ',"features":[\n').encode()
    for start in range(0, len(gdf), rows):
        part = gdf[np.arange(start, min(start + rows, len(gdf)))] if isinstance(gdf, Table) else \
            gdf.iloc[start:start + rows]
        yield (("" if start == 0 else ",\n") + ",\n".join(_feature_lines(part))).encode()
    yield b"\n]}\n"


def _feature_lines(gdf: gpd.GeoDataFrame | Table) -> list[str]:
    """One RFC 7946 feature per row, as compact JSON."""
    if isinstance(gdf, Table):
        geoms = shapely.transform(gdf["geometry"], lambda c: np.round(c, DECIMALS))
        cols = [c for c in gdf.columns if c != "geometry"]
        values = [gdf[c].tolist() for c in cols]
        records = [dict(zip(cols, row)) for row in zip(*values)] if cols else [{} for _ in range(len(gdf))]
        na = None
    else:
        import pandas as pd

        geoms = shapely.transform(gdf.geometry.to_numpy(), lambda c: np.round(c, DECIMALS))
        cols = [c for c in gdf.columns if c != gdf.geometry.name]
        records = gdf[cols].to_dict("records") if cols else [{} for _ in range(len(gdf))]
        na = pd.NA
    lines = []
    for g, props in zip(geoms, records):
        feat = {"type": "Feature", "properties": {k: _plain(v, na) for k, v in props.items()},
                "geometry": json.loads(shapely.to_geojson(g)) if g is not None else None}
        lines.append(json.dumps(feat, separators=(",", ":"), allow_nan=False))
    return lines


def write_geojson(gdf: gpd.GeoDataFrame | Table, path: str | Path, name: str = "") -> None:
    """Write :func:`geojson_bytes` atomically, a chunk at a time."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        for chunk in geojson_chunks(gdf, name or Path(path).stem):
            fh.write(chunk)


def write_gpkg(layers: Mapping[str, gpd.GeoDataFrame] | Mapping[str, Table], path: str | Path) -> None:
    """Write a GeoPackage with one layer per entry (empty layers are skipped; none left: one layer
    ``empty`` with a ``class`` column), atomically. Feature tables (:mod:`pipeline.vectors.table`,
    EPSG:4326) are written by :mod:`pipeline.vectors.gpkg` (sqlite3, no GDAL or pandas), GeoDataFrames
    by GDAL through geopandas; both give the same layers when read back."""
    if layers and all(isinstance(v, Table) for v in layers.values()):
        from pipeline.vectors.gpkg import write_gpkg_file

        # none left: the layer GDAL wrote for ``GeoDataFrame({"class": []})`` (pandas gives it float64)
        tables = {k: v for k, v in layers.items() if isinstance(v, Table) and len(v)} or {
            "empty": Table({"class": np.empty(0, dtype=np.float64), "geometry": np.empty(0, dtype=object)})}
        with atomic_path(path) as tmp:
            tmp.unlink()  # sqlite3 creates the database
            write_gpkg_file(tables, tmp)
        return
    import geopandas as gpd

    with atomic_path(path) as tmp:
        work = tmp.with_name(tmp.name + ".gpkg")  # GDAL wants the extension; renamed onto tmp below
        work.unlink(missing_ok=True)
        todo = {k: cast("gpd.GeoDataFrame", v) for k, v in layers.items() if len(v)} or {
            "empty": gpd.GeoDataFrame({"class": []}, geometry=[], crs="EPSG:4326")}
        try:
            for name, gdf in todo.items():
                gdf.to_file(work, layer=name, driver="GPKG", engine="pyogrio", dataset_options=GPKG_OPTIONS)
            os.replace(work, tmp)
        finally:
            work.unlink(missing_ok=True)


#: arrow types of the piece columns (``geometry``: WKB)
_PIECE_TYPES = {"geometry": "binary", "class_id": "int64", "kind": "large_string", "psum": "float64",
                "count": "int64", "pmax": "int64", "src": "int64", "open": "bool_"}


def write_pieces(pieces: Table, path: str | Path) -> None:
    """Write a piece table (:mod:`pipeline.vectors.merge`; geometries in global pixel coordinates) as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {k: pieces[k] for k in PIECE_COLUMNS}
    cols["geometry"] = shapely.to_wkb(cols["geometry"]) if len(pieces) else np.empty(0, dtype=object)
    table = pa.Table.from_arrays([to_arrow(v, _PIECE_TYPES[k]) for k, v in cols.items()], names=list(cols))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_pieces(path: str | Path) -> Table:
    """Read a piece table written by :func:`write_pieces`."""
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as f:
            table = f.read(columns=list(PIECE_COLUMNS))
    except (OSError, ValueError, KeyError) as exc:  # pyarrow's errors subclass these
        raise InputDataError(f"{path}: unreadable piece file ({exc}); delete it and rerun Vectorize") from exc
    if table.num_rows == 0:
        return empty_pieces()
    cols = {k: to_numpy(table.column(k)) for k in PIECE_COLUMNS}
    cols["geometry"] = shapely.from_wkb(cols["geometry"])
    return Table(cols)


def shard_files(product_dir: Path, shard: str) -> tuple[Path, Path]:
    """A shard's two vectorise outputs: finished features (GeoParquet, EPSG:4326) and open pieces."""
    return product_dir / f"{shard}.features.parquet", product_dir / f"{shard}.open.parquet"


def write_finished(features: Table, path: str | Path) -> None:
    """Write finished features (:func:`pipeline.vectors.finish.finish_table`, EPSG:4326) as
    GeoParquet, atomically."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(feature_table_arrow(features), tmp, compression="zstd")


def read_finished_table(path: str | Path) -> Table:
    """Read features written by :func:`write_finished` as a feature table."""
    try:
        return read_feature_table(path)
    except (OSError, ValueError, KeyError) as exc:
        raise InputDataError(f"{path}: unreadable feature file ({exc}); delete it and rerun Vectorize") from exc


def read_class_geoms(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The geometries (EPSG:4326) of each class ``names`` in ``features.parquet`` (the extract
    stage's GeoParquet; pyarrow and shapely, no pandas: ``ParquetFile`` reads without the
    dataset layer, whose import brings in pandas, 0.18 s of CPU)."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path).read(columns=["class", "geometry"])
    except (OSError, ValueError) as exc:  # pyarrow's errors are subclasses of these
        raise InputDataError(f"{path}: cannot read the OSM features ({exc}); delete it and run ExtractFeatures") \
            from exc
    cls = to_numpy(table.column("class")).astype(str)
    geoms = shapely.from_wkb(to_numpy(table.column("geometry")))
    return {n: geoms[cls == n] for n in names}


def read_finished(path: str | Path) -> gpd.GeoDataFrame:
    """Read features written by :func:`write_finished`."""
    import geopandas as gpd

    try:
        return gpd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: unreadable feature file ({exc}); delete it and rerun Vectorize") from exc
