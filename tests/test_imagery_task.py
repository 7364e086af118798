"""Luigi: FetchImagery / ImageryAll from rasters and from a local tile server: shard
manifests, the coverage summary, a SIGKILL in the middle of a download, config changes, and
config validation of ``[imagery]``.

The cover stage is pre-completed here (tiles.csv and its manifest written with today's
digest), so these tests pick their own tiles and do not depend on the OSM extract.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import luigi
import pytest
import rasterio
from rasterio.warp import transform_bounds

from pipeline.config.region import load_config
from pipeline.core.errors import ConfigError
from pipeline.imagery.common import verify_image
from pipeline.tiles.cover import tiles_table, write_tiles_csv
from pipeline.tiles.tilemath import Tile, cover_bbox
from tests.conftest import ROOT
from tests.luigi_settings import luigi_settings
from tests.tileserver import TileServer, tiles_from_raster, write_test_geotiff
from tests.town import write_town_config

ZOOM, SHARD_ZOOM = 19, 17


def region(tmp: Path, imagery: str, tiles: list[Tile]) -> Path:
    """A region config with ``imagery`` (TOML) whose cover stage is already done with ``tiles``."""
    from tasks.cover import CoverTiles
    from tasks.extract import ExtractFeatures

    data = tmp / "data"
    cfg = write_town_config(tmp / "region.toml", tmp / "absent.osm.pbf", data, zoom=ZOOM, shard_zoom=SHARD_ZOOM,
                            extra="\n[imagery]\n" + imagery)
    data.mkdir(parents=True, exist_ok=True)
    df = tiles_table([(t.x, t.y) for t in tiles], ZOOM, SHARD_ZOOM)
    write_tiles_csv(df, data / "tiles.csv")
    CoverTiles(config=str(cfg)).output().write({"root": str(data), "files": {
        "tiles.csv": {"size": (data / "tiles.csv").stat().st_size}}, "tiles": len(df)})
    # completeness looks upstream: the extraction CoverTiles stands on is taken as done too
    ExtractFeatures(config=str(cfg)).output().write({"root": str(data), "files": {}})
    return cfg


def build(*tasks: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")


@pytest.fixture(scope="module")
def ortho(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Tile]]:
    """A generated UTM 35N GeoTIFF and the z19 tiles around it (one ring of tiles beyond it)."""
    tif = write_test_geotiff(tmp_path_factory.mktemp("ortho") / "ortho.tif", size_px=800)
    with rasterio.open(tif) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    pad = 0.0012
    return tif, [Tile(ZOOM, int(x), int(y)) for x, y in cover_bbox((w - pad, s - pad, e + pad, n + pad), ZOOM)]


def image_files(images: Path) -> dict[str, bytes]:
    """The tile files under ``images`` (z/x/y.ext), whatever the index says."""
    from pipeline.tiles.index import tiles_on_disk

    return {rel: (images / rel).read_bytes() for rel in tiles_on_disk(images)}


def test_imagery_all_from_a_raster(tmp_path: Path, ortho: tuple[Path, list[Tile]]) -> None:
    from tasks.imagery import FetchImagery, ImageryAll

    tif, tiles = ortho
    cfg = region(tmp_path, f'source = "raster"\npaths = ["{tif}"]\nformat = "png"\nmin_valid_share = 0.5\n', tiles)
    res = build(ImageryAll(config=str(cfg)))
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
    data = tmp_path / "data"
    summary = json.loads((data / "images" / "_manifest.json").read_text())["coverage"]
    counts = summary["counts"]
    assert summary["tiles"] == len(tiles) == counts["ok"] + counts["nodata-skipped"]
    assert counts["ok"] > 0 and counts["nodata-skipped"] > 0 and counts["missing-on-server"] == 0
    assert len(summary["nodata_skipped"]) == counts["nodata-skipped"]
    files = image_files(data / "images")
    assert len(files) == counts["ok"]
    from pipeline.tiles.index import read_tile_index

    idx = read_tile_index(data / "images")  # index.parquet: every tile of today's shards
    assert len(idx) == len(tiles) and sorted(idx.path[idx.status == "written"]) == sorted(files)
    assert (idx.status == "nodata").sum() == counts["nodata-skipped"]
    for shard in summary["by_shard"]:
        m = json.loads((data / "images" / "_shards" / f"{shard}.json").read_text())
        for rel, info in m["files"].items():
            assert hashlib.sha256(files[rel]).hexdigest() == info["sha256"]
            assert verify_image(files[rel], 256).ext == "png"
        assert set(m["status"].values()) <= {"ok", "nodata-skipped"}
        assert not (data / "images" / "_shards" / f"{shard}.started.json").exists()
    # complete: a second build runs nothing and touches nothing
    stamps = {p: p.stat().st_mtime_ns for p in (data / "images").rglob("*") if p.is_file()}
    assert build(ImageryAll(config=str(cfg))).scheduling_succeeded
    assert {p: p.stat().st_mtime_ns for p in (data / "images").rglob("*") if p.is_file()} == stamps
    assert FetchImagery(config=str(cfg), shard=next(iter(summary["by_shard"]))).resources == {}

    # a changed [imagery] format reruns the imagery (old files go), nothing else
    cfg.write_text(cfg.read_text().replace('format = "png"', 'format = "jpg"'))
    luigi.task_register.Register.clear_instance_cache()  # task instances cache their config
    assert build(ImageryAll(config=str(cfg))).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
    files2 = image_files(data / "images")
    assert {Path(k).suffix for k in files2} == {".jpg"} and len(files2) == counts["ok"]


def test_imagery_all_from_a_flaky_server(tmp_path: Path, ortho: tuple[Path, list[Tile]],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks.imagery import FetchImagery, ImageryAll

    tif, tiles = ortho
    served = tiles_from_raster(tif, tiles)
    holes = set(tiles[::9])
    faults = {t: [["500", "429", "truncate", "html", "timeout"][i % 5]] for i, t in enumerate(tiles) if i % 3 == 1}
    key = "K3Y-FOR-TESTS-ONLY"
    monkeypatch.setenv("OSMSAT_TASK_TEST_KEY", key)
    with (TileServer(served, faults=faults, holes=holes, key=key, timeout_sleep_s=0.6, retry_after="0") as srv,
          luigi_settings("download", timeout_s=0.3, backoff_s=0.01, max_connections=4, user_agent="osmsat-tests")):
        url = srv.url + "/xyz/{z}/{x}/{y}.png?key=${OSMSAT_TASK_TEST_KEY}"
        cfg = region(tmp_path, f'source = "xyz"\nurl = "{url}"\n', tiles)
        res = build(ImageryAll(config=str(cfg)))
        assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
        port = srv.url.rsplit(":", 1)[1]
        task = FetchImagery(config=str(cfg), shard="0")  # every shard claims the same server
        assert task.resources == {f"imagery_server_127_0_0_1_{port}": 1}
    data = tmp_path / "data"
    summary = json.loads((data / "images" / "_manifest.json").read_text())["coverage"]
    assert summary["counts"] == {"ok": len(tiles) - len(holes), "nodata-skipped": 0,
                                 "missing-on-server": len(holes)}
    assert set(summary["missing_on_server"]) == {str(t) for t in holes}
    files = image_files(data / "images")
    assert {Path(k).with_suffix("").as_posix() for k in files} == {str(t) for t in tiles if t not in holes}
    for rel, blob in files.items():
        z, x, y = (int(v) for v in Path(rel).with_suffix("").parts)
        assert blob == served[Tile(z, x, y)]
    every_json = "".join(p.read_text() for p in (data / "images").rglob("*.json"))
    assert key not in every_json and "key=REDACTED" in every_json


def test_kill_during_download_then_rerun(tmp_path: Path, ortho: tuple[Path, list[Tile]]) -> None:
    from tasks.imagery import FetchImagery

    tif, tiles = ortho
    by_shard = _shards(tiles)
    shard = max(by_shard, key=lambda s: len(by_shard[s]))
    mine = by_shard[shard]
    served = tiles_from_raster(tif, tiles)
    with TileServer(served, delay_s=0.08) as srv:
        cfg = region(tmp_path, f'source = "xyz"\nurl = "{srv.url}/xyz/{{z}}/{{x}}/{{y}}.png"\n', tiles)
        code = ("import luigi; from tasks.imagery import FetchImagery; "
                "luigi.configuration.get_config().set('download', 'max_connections', 2); "
                f"luigi.build([FetchImagery(config={str(cfg)!r}, shard={shard!r})], local_scheduler=True, "
                "log_level='WARNING')")
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ))
        images = tmp_path / "data" / "images"
        deadline = time.monotonic() + 60
        while len(image_files(images)) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        before = image_files(images)
        assert 6 <= len(before) < len(mine), "the kill should land in the middle of the shard"
        for rel, blob in before.items():  # every file under its final name is whole
            verify_image(blob, 256)
            z, x, y = (int(v) for v in Path(rel).with_suffix("").parts)
            assert blob == served[Tile(z, x, y)]
        manifest = images / "_shards" / f"{shard}.json"
        assert not manifest.exists() and manifest.with_name(f"{shard}.started.json").exists()
        asked = dict(srv.requests)
        res = build(FetchImagery(config=str(cfg), shard=shard))
        assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
        again = {Tile(*(int(v) for v in Path(rel).with_suffix("").parts)) for rel in before}
        assert all(srv.requests[t] == asked.get(t, 0) for t in again)  # valid tiles were not fetched again
    after = image_files(images)
    assert len(after) == len(mine) and all(after[k] == v for k, v in before.items())
    m = json.loads(manifest.read_text())
    assert m["requests"]["reused"] == len(before) and m["counts"]["ok"] == len(mine)
    assert not manifest.with_name(f"{shard}.started.json").exists()


def _shards(tiles: list[Tile]) -> dict[str, list[Tile]]:
    from pipeline.tiles.tilemath import shard_of

    out: dict[str, list[Tile]] = {}
    for t in tiles:
        out.setdefault(shard_of(t, SHARD_ZOOM), []).append(t)
    return out


@pytest.mark.parametrize("imagery,message", [
    ('source = "xyz"\nurl = "https://t.example/{z}/{x}/{yy}.png"', r"imagery\.url has unknown field"),
    ('source = "xyz"\nurl = "https://t.example/{z}/{x}.png"', r"imagery\.url must contain"),
    ('source = "wms"\nurl = "https://w.example/wms?WIDTH={width}"', r"imagery\.url must contain \{bbox\}"),
    ('source = "xyz"\nurl = "ftp://t.example/{z}/{x}/{y}.png"', r"imagery\.url must start with http"),
    ('source = "raster"\npaths = ["a.tif"]\nkeep_16bit = true', r"imagery\.keep_16bit needs format = 'tif'"),
    ('source = "raster"\npaths = ["a.tif"]\nbands = [1, 2]', r"imagery\.bands = \[1, 2\]"),
    ('source = "raster"\npaths = ["a.tif"]\npercentiles = [2, 120]', r"imagery\.percentiles"),
    ('source = "raster"\npaths = ["a.tif"]\nheaders = { Referer = 3 }', r"imagery\.headers"),
    ('source = "raster"\npaths = ["a.tif"]\nserver_slots = 2', r"unknown key\(s\) in \[imagery\]: server_slots"),
    ('source = "xyz"\npaths = ["a.tif"]\nurl = "https://t.example/{z}/{x}/{y}.png"', r"imagery\.paths is only"),
])
def test_imagery_config_errors_name_file_and_key(tmp_path: Path, imagery: str, message: str) -> None:
    cfg = write_town_config(tmp_path / "r.toml", tmp_path / "x.pbf", tmp_path / "d", extra="\n[imagery]\n" + imagery)
    with pytest.raises(ConfigError, match=message) as err:
        load_config(cfg)
    assert "r.toml" in str(err.value)


def test_imagery_config_keys_parse(tmp_path: Path) -> None:
    imagery = ('source = "xyz"\nurl = "https://t.example/{z}/{x}/{-y}{r}.png?api_key=${KEY}"\nretina = true\n'
               'headers = { Referer = "https://osmsat.example" }\n'
               'jpeg_quality = 85\npng_level = 3\n')
    icfg = load_config(write_town_config(tmp_path / "r.toml", tmp_path / "x.pbf", tmp_path / "d",
                                         extra="\n[imagery]\n" + imagery)).imagery
    assert icfg is not None and icfg.retina
    assert icfg.headers == (("Referer", "https://osmsat.example"),) and icfg.png_level == 3


def test_reuse_marker_and_coverage_summary(tmp_path: Path) -> None:
    from pipeline.core.manifests import write_manifest
    from pipeline.imagery.shard import clear_started, coverage_summary, mark_started, may_reuse

    manifest = tmp_path / "_shards" / "0123.json"
    assert not may_reuse(manifest, "d1")  # nothing known: tiles on disk are not trusted
    mark_started(manifest, "d1")
    assert may_reuse(manifest, "d1") and not may_reuse(manifest, "d2")  # an interrupted run's own tiles only
    clear_started(manifest)
    write_manifest(manifest, "d2", {"files": {}})
    assert may_reuse(manifest, "d2") and not may_reuse(manifest, "d1")
    summary = coverage_summary({
        "a": {"counts": {"ok": 2, "nodata-skipped": 1}, "status": {"19/2/1": "ok", "19/1/1": "nodata-skipped",
                                                                   "19/3/1": "ok"}},
        "b": {"counts": {"ok": 1, "missing-on-server": 2}, "status": {"19/10/5": "missing-on-server",
                                                                      "19/9/5": "missing-on-server", "19/8/5": "ok"}},
    })
    assert summary["tiles"] == 6 and summary["shards"] == 2 and summary["share_with_imagery"] == 0.5
    assert summary["counts"] == {"ok": 3, "nodata-skipped": 1, "missing-on-server": 2}
    assert summary["missing_on_server"] == ["19/9/5", "19/10/5"] and summary["nodata_skipped"] == ["19/1/1"]


def test_synthetic_region_requires_the_generated_orthophoto(tmp_path: Path) -> None:
    from tasks.imagery import FetchImagery, ImageryPlan
    from tasks.synthetic import MakeSampleRegion

    cfg = write_town_config(tmp_path / "r.toml", tmp_path / "d" / "demo.osm.pbf", tmp_path / "d",
                            extra=f'\n[synthetic]\nseed = 1\n\n[imagery]\nsource = "raster"\n'
                                  f'paths = ["{tmp_path / "d" / "ortho.tif"}"]\n')
    for task in (FetchImagery(config=str(cfg), shard="0"), ImageryPlan(config=str(cfg))):
        reqs = luigi.task.flatten(task.requires())
        assert any(isinstance(r, MakeSampleRegion) for r in reqs)
    fetch_reqs = luigi.task.flatten(FetchImagery(config=str(cfg), shard="0").requires())
    assert any(isinstance(r, ImageryPlan) for r in fetch_reqs)


def test_download_settings_are_operational(tmp_path: Path, ortho: tuple[Path, list[Tile]]) -> None:
    """[download] retries, timeouts, connections... live in luigi.toml, outside the digest:
    changing them and rerunning redoes nothing and sends no request."""
    from tasks.imagery import ImageryAll

    tif, tiles = ortho
    tiles = tiles[:12]
    with TileServer(tiles_from_raster(tif, tiles)) as srv:
        cfg = region(tmp_path, f'source = "xyz"\nurl = "{srv.url}/xyz/{{z}}/{{x}}/{{y}}.png"\n', tiles)
        with luigi_settings("download", retries=1, max_connections=2):
            assert build(ImageryAll(config=str(cfg))).status == luigi.execution_summary.LuigiStatusCode.SUCCESS
        asked = sum(srv.requests.values())
        assert asked == len(tiles)
        manifests = {p: p.stat().st_mtime_ns for p in (tmp_path / "data" / "images").rglob("*.json")}
        luigi.task_register.Register.clear_instance_cache()
        with luigi_settings("download", retries=9, max_connections=5, timeout_s=3.0, user_agent="other/2"):
            res = build(ImageryAll(config=str(cfg)))
        assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
        assert sum(srv.requests.values()) == asked  # not one request
        assert "1 complete ones were encountered" in res.summary_text and "ran successfully" not in res.summary_text
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests  # nothing rewritten


@pytest.mark.parametrize("key", ["retries = 3", "max_connections = 4", 'user_agent = "me"', "timeout_s = 5"])
def test_download_keys_in_region_config_say_where_they_moved(tmp_path: Path, key: str) -> None:
    imagery = f'source = "xyz"\nurl = "https://t.example/{{z}}/{{x}}/{{y}}.png"\n{key}\n'
    cfg = write_town_config(tmp_path / "r.toml", tmp_path / "x.pbf", tmp_path / "d", extra="\n[imagery]\n" + imagery)
    with pytest.raises(ConfigError, match=r"r\.toml: imagery\.\w+: download settings .* configs/luigi\.toml "
                                          r"under \[download\]"):
        load_config(cfg)


def test_download_settings_out_of_range() -> None:
    from tasks.settings import download

    with luigi_settings("download", retries=99), pytest.raises(ConfigError, match=r"download\.retries = 99"):
        download().options()
    with luigi_settings("download", retries=2, timeout_s=1.5):
        opts = download().options()
    assert opts.retries == 2 and opts.timeout_s == 1.5


def test_a_server_answering_404_everywhere_is_a_failure_not_an_empty_region(tmp_path: Path,
                                                                             ortho: tuple[Path, list[Tile]]) -> None:
    """`ImageryAll` against a server that has none of the tiles: one clear line naming the
    server (key redacted) and its answer, a non-zero exit, no coverage summary."""
    from tests.test_cli import cli, last_line

    tiles = ortho[1][:6]
    with TileServer({}, holes=tiles) as srv:
        url = srv.url + "/xyz/{z}/{x}/{y}.png?api_key=SECRET-ON-404"
        cfg = region(tmp_path, f'source = "xyz"\nurl = "{url}"\n', tiles)
        code, out, err = cli("ImageryAll", "--config", str(cfg))
        assert sum(srv.requests.values()) == len(tiles)  # each tile asked once: a 404 is an answer
    line = last_line(err)
    assert code != 0 and line.startswith("error: shard ") and "none of its" in line, err
    assert "HTTP 404 for every tile" in line and f"{srv.url}/xyz/{{z}}/{{x}}/{{y}}.png?api_key=REDACTED" in line
    assert "SECRET-ON-404" not in out + err and "Traceback" not in out + err
    assert not (tmp_path / "data" / "images" / "_manifest.json").exists()


def test_missing_tiles_are_asked_again_after_an_age_or_with_the_switch(tmp_path: Path,
                                                                       ortho: tuple[Path, list[Tile]]) -> None:
    """A 404 is not forever: once the server has the tiles, a run after
    `[download] refetch_missing_after_days` (or with `--download-refetch-missing`) asks for the
    missing tiles again, and only for them; a plain rerun before that asks nothing."""
    from collections import Counter

    from tasks.imagery import ImageryAll
    from tests.test_cli import cli

    tif, tiles = ortho
    tiles = tiles[:20]
    served = tiles_from_raster(tif, tiles)
    holes = set(tiles[1::4])
    data = tmp_path / "data"

    def coverage() -> dict[str, int]:
        return json.loads((data / "images" / "_manifest.json").read_text())["coverage"]["counts"]

    def rerun(**settings: object) -> set[Tile]:
        """Build ImageryAll; the tiles the server was asked for."""
        before = Counter(srv.requests)
        luigi.task_register.Register.clear_instance_cache()
        with luigi_settings("download", backoff_s=0.01, **settings):
            res = build(ImageryAll(config=str(cfg)))
        assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
        return {t for t in tiles if srv.requests[t] > before[t]}

    with TileServer(served, holes=holes) as srv:
        cfg = region(tmp_path, f'source = "xyz"\nurl = "{srv.url}/xyz/{{z}}/{{x}}/{{y}}.png"\n', tiles)
        assert rerun() == set(tiles)
        assert coverage()["missing-on-server"] == len(holes)
        srv.holes = {sorted(holes)[0]}  # the server now has all but one of them
        assert rerun() == set()  # asked just now: not again
        shards = [p for p in (data / "images" / "_shards").glob("*.json") if "missing-on-server" in p.read_text()]
        old = time.time() - 40 * 86400
        for p in shards:
            os.utime(p, (old, old))
        assert rerun(refetch_missing_after_days=0) == set()  # 0: never by age
        assert rerun() == holes  # 40 days > the default 30: the missing tiles only, valid ones kept
        assert coverage()["missing-on-server"] == 1
        assert rerun() == set()
        # the switch, on the command line: asked again whatever the age
        srv.holes = set()
        code, _, err = cli("ImageryAll", "--config", str(cfg), "--download-refetch-missing")
        assert code == 0, err
        assert srv.requests[sorted(holes)[0]] == 3 and "now fetched" in err
    assert coverage()["missing-on-server"] == 0
    assert len(image_files(data / "images")) == len(tiles)
    from pipeline.tiles.index import read_tile_index

    assert set(read_tile_index(data / "images").status) == {"written"}
