"""The vectorise stage's pandas-free tables (issue 20): connected components equal scipy's, the
GeoParquet written with pyarrow reads back in geopandas as the file geopandas wrote, piece files
round-trip."""

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
from pipeline.vectors.vector_io import read_finished, read_finished_table, read_pieces, write_finished, write_pieces


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
