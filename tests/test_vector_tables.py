"""The vectorise stage's pandas-free tables (issue 20): connected components equal scipy's, the
GeoParquet written with pyarrow reads back in geopandas as the file geopandas wrote, piece files
round-trip, the GeoPackage written with sqlite3 is the one GDAL writes."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pyproj
import shapely
from geopandas.testing import assert_geodataframe_equal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.vectors.finish import features_frame
from pipeline.vectors.geoparquet import EPSG_4326_PROJJSON
from pipeline.vectors.merge import components, empty_pieces
from pipeline.vectors.table import Table
from pipeline.vectors.vector_io import (
    read_finished,
    read_finished_table,
    read_pieces,
    write_finished,
    write_gpkg,
    write_pieces,
)


def test_components_number_as_scipy_does() -> None:
    rng = np.random.default_rng(0)
    for n, m in [(1, 0), (5, 0), (50, 30), (400, 380), (1000, 2000)]:
        i, j = rng.integers(0, n, m), rng.integers(0, n, m)
        want = connected_components(coo_matrix((np.ones(m), (i, j)), shape=(n, n)), directed=False)[1]
        assert np.array_equal(components(n, i, j), want)


def test_the_crs_constant_is_epsg_4326() -> None:
    assert pyproj.CRS.from_json(EPSG_4326_PROJJSON) == pyproj.CRS.from_epsg(4326)


def _features() -> Table:
    geoms = np.array([shapely.box(30.0, 0.1, 30.001, 0.101), shapely.LineString([(30, 0.1), (30.002, 0.1005)]),
                      shapely.MultiPolygon([shapely.box(30.003, 0.1, 30.004, 0.101)])], dtype=object)
    return Table({"class": np.array(["building", "road", "building"], dtype=object),
                  "class_id": np.array([1, 2, 1], dtype=np.int64),
                  "kind": np.array(["area", "line", "area"], dtype=object),
                  "prob_mean": np.array([0.9, 0.8, 0.7]), "prob_max": np.array([1.0, 0.9, 0.8]),
                  "area_m2": np.array([12.5, np.nan, 3.0]), "length_m": np.array([np.nan, 250.0, np.nan]),
                  "geometry": geoms})


def test_geoparquet_reads_back_as_geopandas_wrote_it(tmp_path: Path) -> None:
    t = _features()
    write_finished(t, tmp_path / "new.parquet")
    features_frame(t).to_parquet(tmp_path / "old.parquet", index=False, compression="zstd")
    new, old = read_finished(tmp_path / "new.parquet"), gpd.read_parquet(tmp_path / "old.parquet")
    assert_geodataframe_equal(new, old, check_dtype=True, check_crs=True)
    assert list(new.dtypes) == list(old.dtypes)
    back = read_finished_table(tmp_path / "new.parquet")
    assert back.columns == t.columns
    assert all(list(back[k]) == list(t[k]) for k in ("class", "kind", "class_id"))
    assert all(np.array_equal(back[k], t[k], equal_nan=True) for k in ("prob_mean", "prob_max", "area_m2", "length_m"))
    assert all(shapely.equals_exact(back["geometry"], t["geometry"], 0))


def test_pieces_round_trip(tmp_path: Path) -> None:
    p = Table({"geometry": np.array([shapely.box(0, 0, 2, 3), shapely.LineString([(0, 0), (1, 1)])], dtype=object),
               "class_id": np.array([1, 2]), "kind": np.array(["area", "line"], dtype=object),
               "psum": np.array([10.0, 5.0]), "count": np.array([6, 2]), "pmax": np.array([200, 255]),
               "src": np.array([3, 4]), "open": np.array([True, False])})
    write_pieces(p, tmp_path / "p.parquet")
    back = read_pieces(tmp_path / "p.parquet")
    assert back.columns == empty_pieces().columns
    for k in back.columns:
        if k == "geometry":
            assert all(shapely.equals_exact(back[k], p[k], 0))
        else:
            assert np.array_equal(back[k], p[k]) and back[k].dtype == empty_pieces()[k].dtype


def test_arrow_columns_round_trip_without_pandas() -> None:
    """Arrays built from buffers equal ``pyarrow.array``'s; read back through buffers; no pandas."""
    import subprocess
    import sys

    import pyarrow as pa

    from pipeline.vectors.arrow import to_arrow, to_numpy
    from tests.conftest import ROOT

    cols = {"int64": np.array([1, -2, 3], dtype=np.int64), "float64": np.array([0.5, np.nan, 2.0]),
            "bool_": np.array([True, False, True]), "binary": np.array([b"ab", b"", b"c"], dtype=object),
            "large_string": np.array(["area", "line", "é"], dtype=object)}
    for name, v in cols.items():
        a = to_arrow(v, name)
        want = pa.array(v, type=getattr(pa, name)())
        assert a.type == want.type and a.null_count == want.null_count == 0
        assert [b.to_pybytes() for b in a.buffers()[1:]] == [b.to_pybytes() for b in want.buffers()[1:]]
        back = to_numpy(pa.chunked_array([a[:1], a[1:]]))
        assert back.dtype == v.dtype and np.array_equal(back, v, equal_nan=name == "float64")
        assert len(to_numpy(to_arrow(v[:0], name))) == 0
    assert list(to_numpy(to_arrow(np.array(["a", None], dtype=object), "large_string"))) == ["a", None]
    assert np.isnan(to_numpy(pa.array([1, None], type=pa.int64()))[1])
    probe = ("import sys, numpy as np\nfrom pipeline.vectors.arrow import to_arrow, to_numpy\n"
             "to_numpy(to_arrow(np.array([1.0]), 'float64')); to_numpy(to_arrow(np.array(['a'], dtype=object), "
             "'large_string'))\nprint('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _gdal_gpkg(layers: dict[str, gpd.GeoDataFrame], path: Path) -> None:
    """The GeoPackage as GDAL writes it (the GeoDataFrame path of ``write_gpkg``)."""
    write_gpkg(layers, path)


def _schema(path: Path) -> list[tuple[object, ...]]:
    """Everything of a GeoPackage but the time stamps: schema, GeoPackage tables, rows, R*Trees."""
    import sqlite3

    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = [tuple(r) for r in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")]
        for t in ("gpkg_spatial_ref_sys", "gpkg_geometry_columns", "gpkg_extensions", "gpkg_ogr_contents"):
            out += [(t, *r) for r in db.execute(f"SELECT * FROM {t} ORDER BY 1")]
        out += [tuple(r) for r in db.execute("SELECT table_name, data_type, identifier, description, min_x, min_y, "
                                             "max_x, max_y, srs_id FROM gpkg_contents ORDER BY 1")]
        out += [("pragma", db.execute(f"PRAGMA {k}").fetchone()) for k in ("application_id", "user_version")]
        for (t,) in db.execute("SELECT table_name FROM gpkg_contents").fetchall():
            out.append((t, tuple(db.execute(f'SELECT * FROM "{t}" ORDER BY fid').fetchall())))
            out.append((t, tuple(db.execute(f'SELECT * FROM "rtree_{t}_geom" ORDER BY id').fetchall())))
        return out
    finally:
        db.close()


def test_gpkg_of_tables_is_the_one_gdal_writes(tmp_path: Path) -> None:
    """Tables written with sqlite3 give GDAL's GeoPackage: the same schema, rows (geometry blobs),
    R*Tree and metadata; read back in geopandas, the same frames. Singles and multis mixed: promoted
    as pyogrio promotes them; no rows at all: GDAL's ``empty`` layer."""
    t = _features()
    layers = {"building": t[t["class"] == "building"], "road": t[t["class"] == "road"], "water": t[t["class"] == "x"]}
    frame = features_frame(t)
    write_gpkg(layers, tmp_path / "new.gpkg")
    _gdal_gpkg({k: frame[frame["class"] == k] for k in layers}, tmp_path / "old.gpkg")
    assert _schema(tmp_path / "new.gpkg") == _schema(tmp_path / "old.gpkg")
    for name in ("building", "road"):
        new = gpd.read_file(tmp_path / "new.gpkg", layer=name)
        assert_geodataframe_equal(new, gpd.read_file(tmp_path / "old.gpkg", layer=name), check_dtype=True)
    assert gpd.read_file(tmp_path / "new.gpkg", layer="building").geom_type.tolist() == ["MultiPolygon"] * 2
    write_gpkg({"building": layers["water"]}, tmp_path / "new_empty.gpkg")
    _gdal_gpkg({"building": frame.iloc[:0]}, tmp_path / "old_empty.gpkg")
    assert _schema(tmp_path / "new_empty.gpkg") == _schema(tmp_path / "old_empty.gpkg")
