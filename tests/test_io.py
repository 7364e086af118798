"""Atomic writes, manifests, locks, the tile writer and index, spatially ordered GeoParquet features."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from pipeline.core.atomic import atomic_path, atomic_write_json
from pipeline.core.errors import InputDataError
from pipeline.core.locks import file_lock
from pipeline.core.manifests import manifest_is_current, read_manifest, write_manifest
from pipeline.labels.features import FEATURE_ROW_GROUP, read_feature_columns, read_features, write_features
from pipeline.tiles.index import (
    INDEX_COLUMNS,
    WRITTEN,
    index_is_whole,
    read_tile_index,
    tile_index,
    tiles_on_disk,
    write_tile_index,
)
from pipeline.tiles.masks import geojson_like
from pipeline.tiles.tilemath import Tile
from pipeline.tiles.writer import ShardWriter, TileStatus
from tests.conftest import ROOT


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
    cols = read_feature_columns(path, ("geometry", "osm_id"))  # the same rows, as numpy arrays
    whole = read_features(path)
    assert cols["osm_id"].tolist() == whole.osm_id.tolist()
    assert shapely.equals(cols["geometry"], whole.geometry.to_numpy()).all()
    part = read_feature_columns(path, ("osm_id",), bbox=bbox)
    assert sorted(part["osm_id"].tolist()) == sorted(expect.osm_id)


def test_feature_bounds_and_class_reads(tmp_path: Path) -> None:
    """The comparison's index of a features file (classes and bounds, no geometries) and its reads
    of one class in a box (pipeline.review.block_inputs)."""
    from pipeline.labels.features import read_feature_bounds

    rng = np.random.default_rng(5)
    n = 500
    lon, lat = rng.uniform(10, 11, n), rng.uniform(50, 51, n)
    cls = np.where(np.arange(n) % 3 == 0, "road", "building")
    gdf = gpd.GeoDataFrame({"osm_id": np.arange(n), "class": cls},
                           geometry=shapely.box(lon, lat, lon + 0.002, lat + 0.001), crs=4326)
    path = tmp_path / "f.parquet"
    write_features(gdf, path)
    got_cls, bounds = read_feature_bounds(path)
    whole = read_features(path)
    assert got_cls.tolist() == whole["class"].tolist()
    assert np.allclose(bounds, shapely.bounds(whole.geometry.to_numpy()), atol=1e-4)  # (float32 bbox, rounded out)
    assert (bounds[:, :2] <= shapely.bounds(whole.geometry.to_numpy())[:, :2]).all()
    box = (10.2, 50.2, 10.6, 50.7)
    roads = read_features(path, box, ("road",))
    expect = whole[(whole["class"] == "road") & whole.intersects(shapely.box(*box))]
    assert sorted(roads.osm_id) == sorted(expect.osm_id) and len(expect) > 5


def test_feature_columns_read_without_pandas(tmp_path: Path) -> None:
    """The cover stage reads two columns; neither pyarrow.dataset nor to_numpy may pull pandas in."""
    path = tmp_path / "f.parquet"
    gdf = gpd.GeoDataFrame({"buffer_m": [0.0, 2.5]}, geometry=[shapely.box(0, 0, 1, 1), shapely.Point(2, 2)],
                           crs=4326)
    write_features(gdf, path)
    code = ("import sys; from pipeline.labels.features import read_feature_columns as r; "
            f"c = r({str(path)!r}, ('geometry', 'buffer_m')); "
            "assert dict(zip(c['buffer_m'].tolist(), [g.geom_type for g in c['geometry']])) == "
            "{0.0: 'Polygon', 2.5: 'Point'}, c; "
            "assert 'pandas' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
    with pytest.raises(InputDataError, match="not found"):
        read_feature_columns(tmp_path / "missing.parquet", ("geometry",))


def test_geojson_like_matches_geo_interface() -> None:
    poly = shapely.Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], holes=[[(1, 1), (2, 1), (2, 2), (1, 2)]])
    multi = shapely.MultiPolygon([poly, shapely.box(10, 10, 11, 11)])
    line = shapely.LineString([(0, 0), (1, 1)])
    for geoms in ([poly, poly], [poly, multi, line]):
        out = geojson_like(np.array(geoms, dtype=object))
        for g, d in zip(geoms, out):
            assert shapely.geometry.shape(d).equals(g)


def test_importing_io_leaves_the_umask_alone(tmp_path: Path) -> None:
    code = ("import os; os.umask(0o027); import pipeline.tiles.index; import pipeline.core.atomic as io; "
            "io.atomic_write_bytes(os.environ['OUT'], b'x'); m = os.umask(0); print(oct(m))")
    out = tmp_path / "f.bin"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                       env={**os.environ, "OUT": str(out)})
    assert r.stdout.strip() == "0o27"
    assert (out.stat().st_mode & 0o777) == 0o640  # 0666 less the umask, as for any new file


def test_shard_writer_records_locks_resumes_and_cleans(tmp_path: Path) -> None:
    product = tmp_path / "masks"
    t1, t2, t3 = Tile(19, 10, 20), Tile(19, 11, 20), Tile(19, 12, 20)
    (product / "_tmp" / "q").mkdir(parents=True)
    (product / "_tmp" / "q" / "19-10-20.png.tmp").write_bytes(b"left by a killed run")
    (product / "19" / "12").mkdir(parents=True)
    (product / "19" / "12" / "20.jpg").write_bytes(b"old format")
    (product / "_shards").mkdir()
    killed_writes = [product / "_shards" / ".q.started.json.0badf00d.tmp", product / "_shards" / ".q.json.1234abcd.tmp"]
    for p in killed_writes:
        p.write_bytes(b"{")
    with ShardWriter(product, "q", "d1", exts=("png", "jpg")) as out:
        assert not out.current and not out.resumable
        assert list(out.scratch.iterdir()) == []  # the killed run's scratch is gone
        assert not any(p.exists() for p in killed_writes)  # and so are its half-written marker and manifest
        assert (product / "_shards" / "q.started.json").is_file()
        sha = out.write(t1, b"one", "png")
        out.write(t2, b"two", "png", valid_share=0.5)
        out.skip(t3, TileStatus.NODATA)
        body = out.commit({"extra": 1})
    assert sha == hashlib.sha256(b"one").hexdigest()
    assert body["files"] == {"19/10/20.png": {"size": 3, "sha256": sha},
                             "19/11/20.png": {"size": 3, "sha256": hashlib.sha256(b"two").hexdigest()}}
    assert body["status"] == {"19/10/20": TileStatus.OK, "19/11/20": TileStatus.OK, "19/12/20": TileStatus.NODATA}
    assert body["valid_share"] == {"19/11/20": 0.5} and body["extra"] == 1
    assert not (product / "19" / "12" / "20.jpg").exists()  # a skipped tile keeps no old file
    assert not (product / "_tmp").exists() and not (product / "_shards" / "q.started.json").exists()
    assert manifest_is_current(product / "_shards" / "q.json", "d1")
    with ShardWriter(product, "q", "d1") as again:
        assert again.current  # e.g. another run finished it while this one waited for the lock
    with pytest.raises(RuntimeError), ShardWriter(product, "q", "d2") as killed:
        killed.write(t1, b"new", "png")
        raise RuntimeError("killed")
    with ShardWriter(product, "q", "d2") as resumed:
        assert resumed.resumable and not resumed.current  # the interrupted run had today's digest
    idx = tile_index({"q": read_manifest(product / "_shards" / "q.json")})
    assert idx.status.tolist() == [WRITTEN, WRITTEN, "nodata"] and idx.path.tolist()[2] == ""


def test_file_lock_makes_a_second_holder_wait(tmp_path: Path) -> None:
    lock = tmp_path / "sub" / "x.lock"
    order: list[str] = []
    waited = threading.Event()

    def second() -> None:
        with file_lock(lock, on_wait=waited.set):
            order.append("second")

    with file_lock(lock):
        th = threading.Thread(target=second)
        th.start()
        assert waited.wait(5)
        order.append("first")
    th.join(5)
    assert order == ["first", "second"] and not lock.exists()


def test_index_is_read_from_index_parquet_and_checked_by_size(tmp_path: Path) -> None:
    product = tmp_path / "images"
    with ShardWriter(product, "q", "d") as out:
        out.write(Tile(3, 1, 2), b"abc", "png")
        out.skip(Tile(3, 2, 2), TileStatus.MISSING)
        out.commit()
    (product / "_shards" / "stale.json").write_text('{"config_digest": "x", "files": {}, "status": {"3/7/7": "ok"}}')
    write_tile_index(product, {"q": read_manifest(product / "_shards" / "q.json")})
    idx = read_tile_index(product)
    assert list(idx.columns) == list(INDEX_COLUMNS) and len(idx) == 2  # the stale shard is not today's
    assert idx.status.tolist() == [WRITTEN, "missing"]
    assert index_is_whole(product)
    (product / "3" / "1" / "2.png").write_bytes(b"ab")
    assert not index_is_whole(product)
    assert tiles_on_disk(product) == ["3/1/2.png"]


def test_written_tiles_of_some_shards_are_read_from_the_index_or_the_manifests(tmp_path: Path) -> None:
    from pipeline.tiles.index import written_tiles

    product = tmp_path / "images"
    manifests = {}
    for shard, tiles in (("q0", [Tile(3, 0, 0), Tile(3, 1, 0)]), ("q1", [Tile(3, 2, 0)]), ("q2", [Tile(3, 3, 0)])):
        with ShardWriter(product, shard, "d") as out:
            for t in tiles:
                out.write(t, b"abc", "png")
            out.skip(Tile(3, tiles[0].x, 5), TileStatus.MISSING)
            out.commit()
        manifests[shard] = read_manifest(product / "_shards" / f"{shard}.json")

    def keys(df: Any) -> list[tuple[str, int]]:
        return sorted(zip(df.shard.tolist(), df.x.tolist()))

    for with_index in (False, True):  # shard manifests first, then index.parquet
        if with_index:
            write_tile_index(product, manifests)
        assert keys(written_tiles(product)) == [("q0", 0), ("q0", 1), ("q1", 2), ("q2", 3)]
        assert keys(written_tiles(product, "q0")) == [("q0", 0), ("q0", 1)]
        assert keys(written_tiles(product, ["q2", "q0", "nowhere"])) == [("q0", 0), ("q0", 1), ("q2", 3)]
        assert keys(written_tiles(product, [])) == []


def test_remove_stale_scratch_skips_held_locks(tmp_path: Path) -> None:
    from pipeline.core.locks import file_lock
    from pipeline.tiles.writer import remove_stale_scratch

    tmp = tmp_path / "_tmp"
    (tmp / "0123").mkdir(parents=True)
    (tmp / "0123" / "19-1-2.png.tmp").write_bytes(b"partial")
    (tmp / "0123.lock").write_bytes(b"")  # left by a killed run
    with file_lock(tmp / "0130.lock"):  # a live run
        (tmp / "0130").mkdir()
        assert remove_stale_scratch(tmp) == 1
        assert not (tmp / "0123").exists() and not (tmp / "0123.lock").exists()
        assert (tmp / "0130").is_dir() and (tmp / "0130.lock").exists()
    (tmp / "0130").rmdir()
    assert remove_stale_scratch(tmp) == 0 and not tmp.exists()
