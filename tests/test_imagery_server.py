"""Downloading from a flaky tile server started on 127.0.0.1 (tests/tileserver.py): every tile
ends valid on disk or recorded missing, never corrupt; retries, Retry-After, rate limits,
URL schemes, and no API key in any log, error or manifest."""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import rasterio
from rasterio.warp import transform_bounds

from pipeline.config.region import ImageryConfig
from pipeline.core.errors import ConfigError, InputDataError, TileServerError
from pipeline.imagery.common import TileRecord, redact, redact_url, verify_image
from pipeline.imagery.download import DownloadOptions, FetchOptions, FetchStats, RateLimiter, parse_retry_after
from pipeline.imagery.fetch import Downloader
from pipeline.imagery.shard import ShardResult, manifest_body, server_resource
from pipeline.imagery.wms import wms_url
from pipeline.imagery.xyz import FetchRun, fetch_tiles, url_function, xyz_url
from pipeline.tiles.tilemath import Tile, cover_bbox, quadkey, tile_bounds
from pipeline.tiles.writer import TileStatus
from tests.tileserver import TileServer, tiles_from_raster, write_test_geotiff

KINDS = ["500", "429", "timeout", "truncate", "html", "garbage", "reset", "503"]  # retried ("small" is not)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[Tile, bytes]:
    """Tiles at z18 cut from a generated GeoTIFF (UTM 35N, 0.3 m, 360 m square)."""
    tif = write_test_geotiff(tmp_path_factory.mktemp("srv") / "ortho.tif")
    with rasterio.open(tif) as src:
        bounds = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tiles = [Tile(18, int(x), int(y)) for x, y in cover_bbox(bounds, 18)]
    return tiles_from_raster(tif, tiles)


class Server(NamedTuple):
    """A download config: the region's ``[imagery]`` and the operational settings."""

    icfg: ImageryConfig
    download: DownloadOptions


def server_config(url: str, **kw: object) -> Server:
    ops: dict[str, object] = dict(timeout_s=0.4, backoff_s=0.01, max_connections=6, retries=5,
                                  user_agent="osmsat-test/1.0 (+tests)")
    opts: dict[str, object] = dict(source="xyz", url=url)
    operational = {f.name for f in dataclasses.fields(DownloadOptions)}
    for k, v in kw.items():
        (ops if k in operational else opts)[k] = v
    return Server(ImageryConfig(**opts), DownloadOptions(**ops))  # type: ignore[arg-type]


def fetch(server: Server, *args: Any, **kw: Any) -> tuple[list[TileRecord], FetchStats]:
    return fetch_tiles(server.icfg, *args, run=FetchRun(**kw), download=server.download)


def check_tree(root: Path, records: list, served: dict[Tile, bytes]) -> None:
    """Every OK tile is on disk byte-identical to what the server has; nothing else is."""
    expect = set()
    for r in records:
        if r.status == TileStatus.OK:
            data = (root / r.rel_path).read_bytes()
            assert data == served[r.tile] and hashlib.sha256(data).hexdigest() == r.sha256
            assert verify_image(data, 256).ext == "png"
            expect.add(r.rel_path)
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    assert on_disk == expect


# ---------------------------------------------------------------------------------------------
# URLs and secrets


def test_url_templates() -> None:
    t = Tile(18, 149223, 75880)
    assert xyz_url("https://a.b/{z}/{x}/{y}.png", t) == "https://a.b/18/149223/75880.png"
    assert xyz_url("https://a.b/{z}/{x}/{-y}.png", t) == f"https://a.b/18/149223/{(1 << 18) - 1 - 75880}.png"
    assert xyz_url("https://a.b/q/{quadkey}.jpeg", t) == f"https://a.b/q/{quadkey(t)}.jpeg"
    assert xyz_url("https://a.b/{z}/{x}/{y}{r}.png", t, retina=True) == "https://a.b/18/149223/75880@2x.png"
    assert xyz_url("https://a.b/{z}/{x}/{y}{r}.png", t) == "https://a.b/18/149223/75880.png"
    url = wms_url("https://w.ms/?SERVICE=WMS&REQUEST=GetMap&BBOX={bbox}&WIDTH={width}&HEIGHT={height}", t, 512)
    bbox = [float(v) for v in url.split("BBOX=")[1].split("&")[0].split(",")]
    assert bbox == pytest.approx(list(tile_bounds(t)), abs=1e-3)
    assert url.endswith("WIDTH=512&HEIGHT=512")


def test_redaction() -> None:
    url = "https://user:pa55@tiles.example.com/{z}/{x}/{y}.png?api_key=SECRET1&style=dark&access_token=TOK2&Signature=S3"
    red = redact_url(url)
    for secret in ("pa55", "SECRET1", "TOK2", "S3", "user:"):
        assert secret not in red
    assert "style=dark" in red and "tiles.example.com/{z}/{x}/{y}.png" in red
    text = f"failed: {url} (and the literal value MYKEYVALUE in a path /v1/MYKEYVALUE/1)"
    out = redact(text, ["MYKEYVALUE"])
    assert "SECRET1" not in out and "MYKEYVALUE" not in out and "pa55" not in out
    assert server_resource(server_config("http://u:p@Tiles.Example.com:8080/{z}/{x}/{y}.png").icfg) == \
        "imagery_server_tiles_example_com_8080"
    assert server_resource(ImageryConfig(source="raster", paths=(Path("a.tif"),))) is None


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) == 0.0 and parse_retry_after("soon") == 0.0
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after(date, now=1_000_000) == pytest.approx(30, abs=1)


def test_rate_limiter_spaces_requests() -> None:
    now = [100.0]
    waits: list[float] = []
    lim = RateLimiter(10.0, clock=lambda: now[0], sleep=waits.append)
    for _ in range(4):
        lim.acquire()
    assert waits == pytest.approx([0.1, 0.2, 0.3])
    assert RateLimiter(0).acquire() == 0.0


# ---------------------------------------------------------------------------------------------
# Faults


def fault_plan(tiles: list[Tile]) -> tuple[dict[Tile, list[str]], set[Tile]]:
    """Two faults in a row on most tiles (every kind), a few 404 holes."""
    faults = {t: [KINDS[i % len(KINDS)], KINDS[(i * 5 + 2) % len(KINDS)]] for i, t in enumerate(tiles) if i % 4}
    holes = set(tiles[3::7])
    return faults, holes


def test_faults_end_valid_or_missing(served: dict[Tile, bytes], tmp_path: Path) -> None:
    tiles = sorted(served)
    faults, holes = fault_plan(tiles)
    assert {k for f in faults.values() for k in f} == set(KINDS)
    with TileServer(served, faults=faults, holes=holes, timeout_sleep_s=0.8, retry_after="1") as srv:
        icfg = server_config(srv.url + "/xyz/{z}/{x}/{y}.png")
        records, stats = fetch(icfg, tiles, 256, tmp_path / "images", tmp_path / "scratch", seed=1)
        assert [r.tile for r in records] == tiles
        assert {r.tile for r in records if r.status == TileStatus.MISSING} == holes
        assert {r.tile for r in records if r.status == TileStatus.OK} == set(tiles) - holes
        check_tree(tmp_path / "images", records, served)
        assert not list((tmp_path / "scratch").iterdir())
        # each good tile was served intact exactly once; faults were retried
        assert all(srv.served[t] == 1 for t in tiles if t not in holes)
        assert all(srv.requests[t] == 3 for t in faults if t not in holes)  # 2 faults, then served
        assert stats.retries > len(faults)
        assert srv.user_agents == {"osmsat-test/1.0 (+tests)"}
        assert srv.max_inflight <= 6

        # a rerun keeps the valid tiles and fetches only the deleted and the corrupted one
        ok = [r for r in records if r.status == TileStatus.OK]
        (tmp_path / "images" / ok[0].rel_path).unlink()
        (tmp_path / "images" / ok[1].rel_path).write_bytes(served[ok[1].tile][:100])
        before = Counter(srv.requests)
        again, stats2 = fetch(icfg, tiles, 256, tmp_path / "images", tmp_path / "scratch", reuse=True)
        fetched = {t for t in tiles if srv.requests[t] > before[t]}
        assert fetched == {ok[0].tile, ok[1].tile} | holes
        assert stats2.reused == len(ok) - 2
        check_tree(tmp_path / "images", again, served)


def test_persistent_failure_is_reported_and_others_kept(served: dict[Tile, bytes], tmp_path: Path) -> None:
    tiles = sorted(served)[:8]
    bad = tiles[2]
    with TileServer(served, faults={bad: ["503"] * 20}) as srv:
        icfg = server_config(srv.url + "/xyz/{z}/{x}/{y}.png", retries=3)
        with pytest.raises(TileServerError, match=r"1 of 8 tiles failed.*HTTP 503 after 4 attempts"):
            fetch(icfg, tiles, 256, tmp_path / "images", tmp_path / "scratch")
        assert srv.requests[bad] == 4
        kept = {str(p.relative_to(tmp_path / "images")) for p in (tmp_path / "images").rglob("*.png")}
        assert kept == {f"{t.z}/{t.x}/{t.y}.png" for t in tiles if t != bad}


def test_retry_after_and_backoff(served: dict[Tile, bytes]) -> None:
    t = sorted(served)[0]
    with TileServer(served, faults={t: ["429", "500", "500"]}, retry_after="7") as srv:
        opts = FetchOptions(size=256, retries=5, backoff_s=0.5, max_backoff_s=60, timeout_s=2, seed=3)
        dl = Downloader(lambda x: xyz_url(srv.url + "/xyz/{z}/{x}/{y}.png", x), opts)
        waits: list[float] = []
        dl.sleep = waits.append
        kind, data, ext = dl.fetch(t)
    assert kind == TileStatus.OK and data == served[t] and ext == "png"
    assert waits[0] == pytest.approx(7.0)  # Retry-After honoured (it also pauses the other workers)
    backoffs = [w for w in waits[1:] if w < 6.9]
    assert len(backoffs) == 2
    assert 0.5 <= backoffs[0] <= 1.0 and 1.0 <= backoffs[1] <= 2.0  # exponential, with jitter
    # an absurd Retry-After is capped
    with TileServer(served, faults={t: ["429"]}, retry_after="100000") as srv:
        dl = Downloader(lambda x: xyz_url(srv.url + "/xyz/{z}/{x}/{y}.png", x),
                        FetchOptions(size=256, max_backoff_s=30, seed=1))
        waits = []
        dl.sleep = waits.append
        assert dl.fetch(t)[0] == TileStatus.OK
    assert max(waits) == 30


def test_no_key_in_logs_errors_or_manifests(served: dict[Tile, bytes], tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.DEBUG)
    tiles = sorted(served)[:6]
    key = "S3CRET-KEY-0042"
    monkeypatch.setenv("OSMSAT_TEST_KEY", key)
    with TileServer(served, key=key, faults={tiles[0]: ["500", "500"], tiles[1]: ["503"] * 10}) as srv:
        # the key comes from the environment, under a parameter name that does not look secret
        icfg = server_config(srv.url + "/xyz/{z}/{x}/{y}.png?key=${OSMSAT_TEST_KEY}", retries=2)
        with pytest.raises(TileServerError) as err:
            fetch(icfg, tiles, 256, tmp_path / "a", tmp_path / "s")
        assert key not in str(err.value) and "REDACTED" in str(err.value)
        # a refused key fails at once, without retries, and is not echoed either
        icfg_bad = server_config(srv.url + "/xyz/{z}/{x}/{y}.png?api_key=WRONG-KEY-77&key=WRONG-KEY-77")
        before = sum(srv.requests.values()) + len(srv.paths)
        with pytest.raises(TileServerError, match="HTTP 403") as err2:
            fetch(icfg_bad, tiles[:1], 256, tmp_path / "b", tmp_path / "s")
        assert "WRONG-KEY-77" not in str(err2.value)
        assert len(srv.paths) + sum(srv.requests.values()) - before == 1
        # a good run: the manifest names the source without the key
        icfg_ok = server_config(srv.url + "/xyz/{z}/{x}/{y}.png?key=" + key)
        records, stats = fetch(icfg_ok, tiles[2:], 256, tmp_path / "c", tmp_path / "s")
        body = manifest_body(icfg_ok.icfg, "q", ShardResult(records, stats.as_dict()), tmp_path / "c")
    assert all(r.status == TileStatus.OK for r in records)
    blob = json.dumps(body) + caplog.text + json.dumps(body["requests"])
    assert key not in blob and "WRONG-KEY-77" not in caplog.text
    assert "retry" in caplog.text  # the retries were logged, redacted


def test_missing_env_key_is_a_clear_error(served: dict[Tile, bytes], tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OSMSAT_UNSET_KEY", raising=False)
    icfg = server_config("http://127.0.0.1:9/{z}/{x}/{y}.png?key=${OSMSAT_UNSET_KEY}")
    with pytest.raises(ConfigError, match="OSMSAT_UNSET_KEY"):
        fetch(icfg, sorted(served)[:1], 256, tmp_path / "a", tmp_path / "s")


@pytest.mark.parametrize("scheme,template", [
    ("tms", "/tms/{z}/{x}/{-y}.png"),
    ("quadkey", "/qk/{quadkey}.png"),
    ("wms", "/wms?SERVICE=WMS&REQUEST=GetMap&LAYERS=ortho&CRS=EPSG:3857&BBOX={bbox}&WIDTH={width}&HEIGHT={height}"),
])
def test_url_schemes_fetch_the_right_tile(served: dict[Tile, bytes], tmp_path: Path, scheme: str,
                                          template: str) -> None:
    tiles = sorted(served)[:5]
    with TileServer(served) as srv:
        icfg = server_config(srv.url + template, source="wms" if scheme == "wms" else "xyz")
        records, _ = fetch(icfg, tiles, 256, tmp_path / "images", tmp_path / "scratch")
    assert all(r.status == TileStatus.OK for r in records)
    check_tree(tmp_path / "images", records, {t: served[t] for t in tiles})


def test_retina_tiles(served: dict[Tile, bytes], tmp_path: Path) -> None:
    import io

    import numpy as np
    from PIL import Image

    tiles = sorted(served)[:3]
    big = {}
    for t in tiles:
        buf = io.BytesIO()
        Image.fromarray(np.full((512, 512, 3), t.x % 256, np.uint8)).save(buf, format="JPEG")
        big[t] = buf.getvalue()
    with TileServer(served, retina_tiles=big) as srv:
        icfg = server_config(srv.url + "/xyz/{z}/{x}/{y}{r}.png", retina=True)
        records, _ = fetch(icfg, tiles, 512, tmp_path / "images", tmp_path / "scratch")
        assert all(p.endswith("@2x.png") for p in srv.paths)
    assert {r.ext for r in records} == {"jpg"}  # the server's format is kept
    for r in records:
        assert (tmp_path / "images" / r.rel_path).read_bytes() == big[r.tile]
    # a 256-px server for a 512-px region is an error, not a silent resize
    with TileServer(served) as srv, pytest.raises(TileServerError, match="expected 512x512"):
        fetch(server_config(srv.url + "/xyz/{z}/{x}/{y}.png", retries=1), tiles[:1], 512,
                    tmp_path / "x", tmp_path / "scratch")


def test_concurrency_is_bounded(served: dict[Tile, bytes], tmp_path: Path) -> None:
    tiles = sorted(served)[:12]
    with TileServer(served, delay_s=0.05) as srv:
        fetch(server_config(srv.url + "/xyz/{z}/{x}/{y}.png", max_connections=3), tiles, 256,
                    tmp_path / "images", tmp_path / "scratch")
        assert 2 <= srv.max_inflight <= 3


def test_url_function_rejects_missing_url() -> None:
    with pytest.raises(ConfigError):
        url_function(ImageryConfig(source="xyz"), 256)


@pytest.mark.parametrize("damage", ["flip", "truncate", "html", "crc"])
def test_verify_image_rejects_damaged_pngs(served: dict[Tile, bytes], damage: str) -> None:
    good = served[sorted(served)[0]]
    assert verify_image(good, 256).ext == "png"
    bad = bytearray(good)
    if damage == "flip":
        bad[len(bad) // 2] ^= 0xFF
    elif damage == "truncate":
        bad = bad[: len(bad) - 40]
    elif damage == "html":
        bad = bytearray(b"<html><body>502 Bad Gateway</body></html>")
    else:  # a CRC byte of the first IDAT chunk
        pos = bytes(bad).index(b"IDAT")
        n = int.from_bytes(bad[pos - 4 : pos], "big")
        bad[pos + 4 + n] ^= 0x01
    with pytest.raises(InputDataError, match="not a decodable image"):
        verify_image(bytes(bad), 256)


def test_unusual_key_names_are_redacted_and_failed_tiles_show_no_url(served: dict[Tile, bytes],
                                                                     tmp_path: Path) -> None:
    """A literal key under a name that does not look secret (``?k=``) never shows; a failed
    tile is named by z/x/y, the server only by its redacted template."""
    url = "https://tiles.example.com/{z}/{x}/{y}.png?k=LITERAL-SECRET-9&style=dark&LAYERS=ortho"
    red = redact_url(url)
    assert "LITERAL-SECRET-9" not in red and "k=REDACTED" in red and "style=dark" in red and "LAYERS=ortho" in red
    tiles = sorted(served)[:2]
    with TileServer(served, faults={tiles[0]: ["503"] * 9}) as srv:
        cfg = server_config(srv.url + "/xyz/{z}/{x}/{y}.png?k=LITERAL-SECRET-9", retries=1)
        with pytest.raises(TileServerError) as err:
            fetch(cfg, tiles, 256, tmp_path / "i", tmp_path / "s")
    msg = str(err.value)
    assert "LITERAL-SECRET-9" not in msg and f"tile {tiles[0]}: HTTP 503" in msg
    assert f"/xyz/{tiles[0].z}/{tiles[0].x}/{tiles[0].y}.png" not in msg  # no tile URL
    assert "/xyz/{z}/{x}/{y}.png?k=REDACTED" in msg  # the server, as a redacted template


# ---------------------------------------------------------------------------------------------
# Words: what went wrong, and permanent failures at once


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_refused_connection_is_called_refused(served: dict[Tile, bytes], tmp_path: Path) -> None:
    """Nothing listens on the port: 'connection refused' and check the URL, not 'timed out ...
    lower max_connections'."""
    port = _closed_port()
    cfg = server_config(f"http://127.0.0.1:{port}/xyz/{{z}}/{{x}}/{{y}}.png?k=SECRET-77", retries=1)
    with pytest.raises(TileServerError) as err:
        fetch(cfg, sorted(served)[:2], 256, tmp_path / "i", tmp_path / "s")
    msg = str(err.value)
    assert "connection refused" in msg and "timed out" not in msg and "max_connections" not in msg
    assert f"127.0.0.1:{port}" in msg and "check [imagery] url" in msg and "SECRET-77" not in msg


def test_cut_short_body_gives_the_real_byte_counts(served: dict[Tile, bytes], tmp_path: Path) -> None:
    t = sorted(served)[0]
    n = len(served[t])
    with TileServer(served, faults={t: ["truncate"] * 10}) as srv, pytest.raises(TileServerError) as err:
        fetch(server_config(srv.url + "/xyz/{z}/{x}/{y}.png", retries=1), [t], 256, tmp_path / "i", tmp_path / "s")
    assert f"body cut short: {n // 2} of {n} bytes" in str(err.value)


def test_wrong_size_tile_is_a_permanent_failure_at_once(served: dict[Tile, bytes], tmp_path: Path) -> None:
    """A server that sends 64 px tiles for a 256 px region sends them on every try: one request
    per tile, no backoff, and the fix in the message."""
    tiles = sorted(served)[:3]
    with TileServer(served, faults={t: ["small"] * 10 for t in tiles}) as srv:
        with pytest.raises(TileServerError) as err:
            fetch(server_config(srv.url + "/xyz/{z}/{x}/{y}.png", retries=5, backoff_s=5.0), tiles, 256,
                  tmp_path / "i", tmp_path / "s")
        assert all(srv.requests[t] == 1 for t in tiles)
    msg = str(err.value)
    assert "image is 64x64 px, expected 256x256" in msg and "region.tile_size" in msg
    assert "attempts" not in msg and "max_connections" not in msg


def test_a_shard_without_any_tile_is_a_failure_naming_the_server(served: dict[Tile, bytes],
                                                                 tmp_path: Path) -> None:
    """Every tile 404: no silent empty shard. The server (redacted) and its answer are named."""
    tiles = sorted(served)[:4]
    with TileServer({}, holes=tiles) as srv:
        cfg = server_config(srv.url + "/xyz/{z}/{x}/{y}.png?k=SECRET-KEY-5", retries=3)
        with pytest.raises(TileServerError) as err:
            fetch(cfg, tiles, 256, tmp_path / "i", tmp_path / "s", shard="0312")
        assert sum(srv.requests.values()) == 4  # a 404 is an answer: not retried
        msg = str(err.value)
        assert msg.startswith("shard 0312: none of its 4 tiles could be fetched")
        assert "HTTP 404 for every tile" in msg and "'no tile here'" in msg
        assert f"{srv.url}/xyz/{{z}}/{{x}}/{{y}}.png?k=REDACTED" in msg and "SECRET-KEY-5" not in msg
        assert "check [imagery] url" in msg and "allow_empty_shards" in msg
        # a server that covers only part of the region: allowed, recorded missing
        records, _ = fetch(server_config(cfg.icfg.url, allow_empty_shards=True), tiles, 256, tmp_path / "i",
                           tmp_path / "s")
    assert {r.status for r in records} == {TileStatus.MISSING}
    # one tile served is enough: the others are missing, as before
    with TileServer({tiles[0]: served[tiles[0]]}, holes=tiles[1:]) as srv:
        records, _ = fetch(server_config(srv.url + "/xyz/{z}/{x}/{y}.png"), tiles, 256, tmp_path / "j",
                           tmp_path / "s")
    assert [r.status for r in records] == [TileStatus.OK, TileStatus.MISSING, TileStatus.MISSING, TileStatus.MISSING]
