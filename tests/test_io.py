"""pipeline.io: atomic writes, manifests, spatially ordered GeoParquet features."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from pipeline.features import FEATURE_ROW_GROUP, read_features, write_features
from pipeline.io import (
    atomic_path,
    atomic_write_json,
    manifest_is_current,
    write_manifest,
)
from pipeline.masks import geojson_like


def test_atomic_path_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n "a": 1\n}\n'
    assert (target.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_manifest_current_checks_digest_and_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abc")
    m = tmp_path / "m.json"
    write_manifest(m, "d1", {"root": str(tmp_path), "files": {"a.txt": {"size": 3}}})
    assert manifest_is_current(m, "d1")
    assert not manifest_is_current(m, "d2")
    (tmp_path / "a.txt").write_text("abcd")
    assert not manifest_is_current(m, "d1")
    m.write_text("{not json")
    assert not manifest_is_current(m, "d1")


def test_features_are_spatially_ordered_and_bbox_reads_are_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 3 * FEATURE_ROW_GROUP
    lon, lat = rng.uniform(10, 11, n), rng.uniform(50, 51, n)
    geoms = shapely.box(lon, lat, lon + 0.001, lat + 0.001)
    gdf = gpd.GeoDataFrame({"osm_id": np.arange(n)}, geometry=geoms, crs=4326)
    path = tmp_path / "f.parquet"
    write_features(gdf, path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    bbox = (10.2, 50.2, 10.3, 50.25)
    got = read_features(path, bbox=bbox)
    expect = gdf[gdf.intersects(shapely.box(*bbox))]
    assert sorted(got.osm_id) == sorted(expect.osm_id) and len(expect) > 0
    assert read_features(path).crs.to_epsg() == 4326
    write_features(gdf, tmp_path / "g.parquet")
    assert path.read_bytes() == (tmp_path / "g.parquet").read_bytes()  # deterministic


def test_geojson_like_matches_geo_interface() -> None:
    poly = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], holes=[[(1, 1), (2, 1), (2, 2), (1, 2)]])
    multi = shapely.MultiPolygon([poly, shapely.box(10, 10, 11, 11)])
    line = shapely.LineString([(0, 0), (1, 1)])
    for geoms in ([poly, poly], [poly, multi, line]):
        out = geojson_like(np.array(geoms, dtype=object))
        for g, d in zip(geoms, out):
            assert shapely.geometry.shape(d).equals(g)
