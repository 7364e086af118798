"""tasks.extract: ExtractFeatures and FetchOSM through Luigi, on tiny generated PBFs."""

from __future__ import annotations

import http.server
import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import geopandas as gpd
import luigi
import pytest

from pipeline.config.region import load_config
from pipeline.core.errors import InputDataError, MissingInputError
from pipeline.core.stages import stage_digest
from pipeline.imagery.download import DEFAULT_USER_AGENT
from tasks.extract import ExtractFeatures, FetchOSM
from tests.pbf_fixtures import Sample, write_sample

CONFIG = """\
[region]
name = "tiny"
zoom = 18
data_dir = "{data}"

[osm]
path = "{pbf}"
{url}

[[classes]]
name = "road"
id = 2
kind = "line"
tags = ["highway=motorway|residential|living_street|service|primary"]
exclude = ["area=yes", "tunnel=yes"]
buffer_m = 3.0
buffer_m_by_value = {{ motorway = 10.0 }}

[[classes]]
name = "building"
id = 1
kind = "area"
tags = [{building}]
exclude = ["building=no"]
"""


def write_config(path: Path, pbf: Path, data: Path, url: str | None = None,
                 building: str = '"building"') -> Path:
    path.write_text(CONFIG.format(data=data, pbf=pbf, url=f'url = "{url}"' if url else "", building=building))
    return path


def build(*tasks: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")


def run_direct(task: luigi.Task) -> None:
    """``task.run()`` outside a Luigi worker (which would set the status callbacks), to see its error."""
    task.set_status_message = lambda *_: None
    task.set_progress_percentage = lambda *_: None
    task.run()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return write_sample(tmp_path_factory.mktemp("pbf") / "sample.osm.pbf")


def test_extract_writes_features_and_manifest_then_is_complete(sample: Sample, tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "tiny.toml", sample.path, tmp_path / "data")
    task = ExtractFeatures(config=str(cfg_path))
    assert not task.complete()
    res = build(task)
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
    out = tmp_path / "data" / "features.parquet"
    gdf = gpd.read_parquet(out)
    assert gdf.crs.to_epsg() == 4326
    assert set(gdf["class"]) == {"road", "building"}
    assert (gdf.osm_type == "relation").any()  # the courtyard multipolygon
    manifest = json.loads((tmp_path / "data" / "_manifests" / "extract.json").read_text())
    assert manifest["config_digest"] == stage_digest(load_config(cfg_path), "extract")
    import hashlib

    assert list(manifest["files"]) == ["features.parquet"]
    rec = manifest["files"]["features.parquet"]
    assert rec["size"] == out.stat().st_size and rec["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["root"] == str(tmp_path / "data")
    assert manifest["input"]["path"] == str(sample.path)
    assert manifest["classes"] == gdf["class"].value_counts().to_dict()
    assert manifest["stats"]["skipped_missing_nodes"] == 2
    assert not list((tmp_path / "data").glob("*.tmp"))

    # a rerun does nothing
    mtime = out.stat().st_mtime_ns
    assert ExtractFeatures(config=str(cfg_path)).complete()
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS"
    assert out.stat().st_mtime_ns == mtime

    # changing a class's tags makes it rerun, with the new filter
    write_config(cfg_path, sample.path, tmp_path / "data", building='"building=yes"')
    assert not ExtractFeatures(config=str(cfg_path)).complete()
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS"
    again = gpd.read_parquet(out)
    assert set(again[again["class"] == "building"].tags) == {'{"building": "yes"}'}
    assert len(again[again["class"] == "building"]) < len(gdf[gdf["class"] == "building"])


def test_a_deleted_features_file_reruns(sample: Sample, tmp_path: Path) -> None:
    cfg_path = write_config(tmp_path / "tiny.toml", sample.path, tmp_path / "data")
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS"
    (tmp_path / "data" / "features.parquet").unlink()
    assert not ExtractFeatures(config=str(cfg_path)).complete()


@pytest.mark.parametrize("damage", ["truncated", "random"])
def test_corrupt_pbf_fails_naming_the_file_and_writes_nothing(sample: Sample, tmp_path: Path, damage: str) -> None:
    bad = tmp_path / "broken.osm.pbf"
    raw = sample.path.read_bytes()
    bad.write_bytes(raw[: len(raw) * 2 // 3] if damage == "truncated" else random.Random(5).randbytes(3000))
    cfg_path = write_config(tmp_path / "tiny.toml", bad, tmp_path / "data")
    res = build(ExtractFeatures(config=str(cfg_path)))
    assert res.status == luigi.execution_summary.LuigiStatusCode.FAILED
    assert not (tmp_path / "data" / "features.parquet").exists()
    assert not (tmp_path / "data" / "_manifests" / "extract.json").exists()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(InputDataError, match=r"broken\.osm\.pbf.*(truncated|corrupt).*download"):
        run_direct(ExtractFeatures(config=str(cfg_path)))


def test_missing_pbf_without_url_names_the_path_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.osm.pbf"
    cfg_path = write_config(tmp_path / "tiny.toml", missing, tmp_path / "data")
    task = ExtractFeatures(config=str(cfg_path))
    assert task.requires() == []
    assert build(task).status == luigi.execution_summary.LuigiStatusCode.FAILED
    with pytest.raises(MissingInputError, match=r"nowhere\.osm\.pbf.*osm\.path"):
        run_direct(task)


MODE = {"serve": "ok"}  # what the server sends for /sample.osm.pbf: ok | html | short | garbage


@pytest.fixture
def server(sample: Sample) -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on localhost: /sample.osm.pbf is the sample (or, by ``MODE``, an HTML
    page, a cut-short body, or bytes that are no PBF), anything else a 404."""
    body = sample.path.read_bytes()
    agents: list[str] = []
    MODE["serve"] = "ok"

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            agents.append(self.headers.get("User-Agent", ""))
            if self.path != "/sample.osm.pbf":
                self.send_error(404)
                return
            mode = MODE["serve"]
            data = {"html": b"<!DOCTYPE html><html><body>Rate limited, try later</body></html>",
                    "garbage": random.Random(3).randbytes(len(body))}.get(mode, body)
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if mode == "html" else "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if mode == "short" else data)
            if mode == "short":
                self.close_connection = True

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.handle_error = lambda *args: None  # type: ignore[method-assign]  # the "short" fault hangs up
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", agents
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_missing_pbf_with_url_is_downloaded_then_extracted(server: tuple[str, list[str]], sample: Sample,
                                                          tmp_path: Path) -> None:
    base, agents = server
    dest = tmp_path / "osm" / "fetched.osm.pbf"
    cfg_path = write_config(tmp_path / "tiny.toml", dest, tmp_path / "data", url=f"{base}/sample.osm.pbf")
    task = ExtractFeatures(config=str(cfg_path))
    assert [type(t) for t in task.requires()] == [FetchOSM]
    assert build(task).status.name == "SUCCESS"
    assert dest.read_bytes() == sample.path.read_bytes()
    assert agents == [DEFAULT_USER_AGENT]
    assert (tmp_path / "data" / "features.parquet").is_file()
    # once the file is there, nothing is fetched
    assert all(t.complete() for t in ExtractFeatures(config=str(cfg_path)).requires())
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS" and len(agents) == 1


def test_failed_download_names_the_url_and_leaves_no_file(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = server
    dest = tmp_path / "osm" / "fetched.osm.pbf"
    url = f"{base}/gone.osm.pbf"
    cfg_path = write_config(tmp_path / "tiny.toml", dest, tmp_path / "data", url=url)
    assert build(ExtractFeatures(config=str(cfg_path))).status == luigi.execution_summary.LuigiStatusCode.FAILED
    assert not dest.exists()
    assert not dest.parent.exists() or not any(dest.parent.iterdir())  # no temporary file left
    with pytest.raises(InputDataError, match=rf"{url}.*404.*osm\.path"):
        run_direct(FetchOSM(config=str(cfg_path)))


@pytest.mark.parametrize("fault", ["html", "short", "garbage", "sha256"])
def test_poisoned_download_is_never_renamed_and_recovers_on_rerun(server: tuple[str, list[str]], sample: Sample,
                                                                   tmp_path: Path, fault: str) -> None:
    """An HTML page, a cut-short body, bytes that are no PBF, or a wrong sha256: nothing reaches
    [osm] path; once the server is good again, the rerun downloads and extracts."""
    import hashlib

    base, _ = server
    dest = tmp_path / "osm" / "fetched.osm.pbf"
    good = hashlib.sha256(sample.path.read_bytes()).hexdigest()
    cfg_path = write_config(tmp_path / "tiny.toml", dest, tmp_path / "data", url=f"{base}/sample.osm.pbf")
    if fault == "sha256":
        cfg_path.write_text(cfg_path.read_text().replace("url = ", f'sha256 = "{"0" * 64}"\nurl = '))
    MODE["serve"] = "ok" if fault == "sha256" else fault
    assert build(ExtractFeatures(config=str(cfg_path))).status == luigi.execution_summary.LuigiStatusCode.FAILED
    assert not dest.exists() and not list(dest.parent.glob("*"))  # nothing renamed, no temporary file
    n = sample.path.stat().st_size
    expect = {"html": "text/html", "short": rf"cut short: got {n // 2} of {n} bytes \(Content-Length\)",
              "garbage": "not a valid OSM PBF", "sha256": "sha256 is"}
    with pytest.raises(InputDataError, match=rf"{expect[fault]}.*nothing was written to .*fetched\.osm\.pbf"):
        run_direct(FetchOSM(config=str(cfg_path)))
    MODE["serve"] = "ok"
    if fault == "sha256":
        cfg_path.write_text(cfg_path.read_text().replace("0" * 64, good))
    luigi.task_register.Register.clear_instance_cache()
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS"
    assert dest.read_bytes() == sample.path.read_bytes()


def test_damaged_download_is_fetched_again_and_a_hand_placed_one_names_the_fix(
        server: tuple[str, list[str]], sample: Sample, tmp_path: Path) -> None:
    base, agents = server
    dest = tmp_path / "osm" / "fetched.osm.pbf"
    cfg_path = write_config(tmp_path / "tiny.toml", dest, tmp_path / "data", url=f"{base}/sample.osm.pbf")
    assert build(FetchOSM(config=str(cfg_path))).status.name == "SUCCESS"
    dest.write_bytes(dest.read_bytes()[:1000])  # damaged after the download: refetched
    assert not FetchOSM(config=str(cfg_path)).complete()
    assert build(ExtractFeatures(config=str(cfg_path))).status.name == "SUCCESS"
    assert dest.read_bytes() == sample.path.read_bytes() and len(agents) == 2
    # a bad file the user put there (no download record) is not overwritten: the error says what to do
    hand = tmp_path / "hand.osm.pbf"
    hand.write_bytes(b"<html>oops</html>")
    cfg2 = write_config(tmp_path / "hand.toml", hand, tmp_path / "data2", url=f"{base}/sample.osm.pbf")
    assert ExtractFeatures(config=str(cfg2)).requires() == []
    with pytest.raises(InputDataError, match=r"hand\.osm\.pbf.*delete .*hand\.osm\.pbf and rerun \(it will be "
                                             r"downloaded again"):
        run_direct(ExtractFeatures(config=str(cfg2)))
    assert hand.read_bytes() == b"<html>oops</html>"
