"""The tile index, completeness by size, Verify, Prune, concurrent runs, and killed runs that
leave temporary files (tasks/upkeep.py, pipeline/core/upkeep.py, the tile writer in pipeline/tiles/writer.py)."""

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

from pipeline.core.upkeep import stale_tiles
from pipeline.labels.features import read_features
from pipeline.tiles.cover import read_tiles_csv
from pipeline.tiles.index import read_tile_index, tiles_on_disk
from tasks.masks import MasksAll
from tasks.upkeep import Prune, Verify
from tests.conftest import ROOT
from tests.test_masks_task import check_masks
from tests.town import write_town_config


def build(*tasks: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    res = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
    return res


def leftovers(data: Path) -> list[Path]:
    """Temporary files, scratch folders and locks under a region folder."""
    return sorted(p for p in data.rglob("*") if p.name == "_tmp" or p.suffix == ".lock"
                  or (p.name.startswith(".") and ".tmp" in p.name))


def test_shrunk_bbox_index_lists_today_and_prune_removes_the_rest(tmp_path: Path, town_pbf: Path) -> None:
    data = tmp_path / "data"
    cfg = write_town_config(tmp_path / "t.toml", town_pbf, data)
    build(MasksAll(config=str(cfg)))
    full = read_tile_index(data / "masks")
    w, s, e, n = read_features(data / "features.parquet").total_bounds
    west_half = f'data_dir = "{data}"\nbbox = [{w}, {s}, {(w + e) / 2}, {n}]'
    cfg.write_text(cfg.read_text().replace(f'data_dir = "{data}"', west_half))
    build(MasksAll(config=str(cfg)))

    idx = read_tile_index(data / "masks")
    tiles = read_tiles_csv(data / "tiles.csv")
    assert set(zip(idx.z, idx.x, idx.y, strict=True)) == set(zip(tiles.z, tiles.x, tiles.y, strict=True))
    assert 0 < len(idx) < len(full)
    stale = stale_tiles(data / "masks")
    assert stale and set(stale) == set(full.path) - set(idx.path)
    assert json.loads((data / "masks" / "_manifest.json").read_text())["stale_tiles"] == len(stale)

    build(Prune(config=str(cfg), run_id="prune-1"))
    assert tiles_on_disk(data / "masks") == sorted(idx.path)
    assert {p.stem for p in (data / "masks" / "_shards").glob("*.json")} == set(idx.shard)
    assert MasksAll(config=str(cfg)).complete()  # pruning took nothing of today's
    check_masks(data)
    report = json.loads((data / "_manifests" / "prune.json").read_text())
    assert report["removed"]["masks"]["tiles"] == len(stale)


def test_prune_refuses_an_index_that_is_not_todays(tmp_path: Path, town_pbf: Path) -> None:
    data = tmp_path / "data"
    cfg = write_town_config(tmp_path / "t.toml", town_pbf, data)
    build(MasksAll(config=str(cfg)))
    write_town_config(cfg, town_pbf, data, ignore_ring_px=3)  # masks config changed, not rerun
    res = luigi.build([Prune(config=str(cfg), run_id="prune-2")], local_scheduler=True, detailed_summary=True,
                      log_level="CRITICAL")
    assert res.status != luigi.execution_summary.LuigiStatusCode.SUCCESS
    assert tiles_on_disk(data / "masks")  # nothing deleted


def test_deleted_truncated_and_overwritten_tiles_are_redone(tmp_path: Path, town_pbf: Path) -> None:
    data = tmp_path / "data"
    cfg = write_town_config(tmp_path / "t.toml", town_pbf, data)
    build(MasksAll(config=str(cfg)))
    masks = data / "masks"
    idx = read_tile_index(masks)
    by_shard = idx[idx.status == "written"].groupby("shard").path.first()
    assert len(by_shard) >= 4
    deleted, truncated, overwritten, untouched = by_shard.iloc[:4].tolist()
    shard_of = dict(zip(idx.path, idx.shard, strict=True))
    orig = {p: (masks / p).read_bytes() for p in (deleted, truncated, overwritten)}
    keep = masks / "_shards" / f"{shard_of[untouched]}.json"
    keep_mtime = keep.stat().st_mtime_ns

    (masks / deleted).unlink()
    (masks / truncated).write_bytes(orig[truncated][:20])
    assert not MasksAll(config=str(cfg)).complete()
    build(MasksAll(config=str(cfg)))
    assert (masks / deleted).read_bytes() == orig[deleted]
    assert (masks / truncated).read_bytes() == orig[truncated]
    assert keep.stat().st_mtime_ns == keep_mtime  # only the damaged shards were redone

    # same size, other bytes: the cheap size check cannot see it; Verify (sha256) does
    (masks / overwritten).write_bytes(bytes(len(orig[overwritten])))
    assert MasksAll(config=str(cfg)).complete()
    build(Verify(config=str(cfg), run_id="verify-1"))
    assert (masks / overwritten).read_bytes() == orig[overwritten]
    report = json.loads((data / "_manifests" / "verify.json").read_text())
    assert report["redone"]["masks"] == {shard_of[overwritten]: [overwritten]}
    assert report["checked"]["masks"] == len(idx[idx.status == "written"])
    assert keep.stat().st_mtime_ns == keep_mtime
    assert not leftovers(data)


def _cli(cfg: Path, workers: int, task: str = "MasksAll") -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tasks", task, "--config", str(cfg), "--workers", str(workers)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_concurrent_runs_with_other_worker_counts_both_finish(tmp_path: Path, town_pbf: Path) -> None:
    ref = write_town_config(tmp_path / "ref.toml", town_pbf, tmp_path / "ref", zoom=20, shard_zoom=18)
    build(MasksAll(config=str(ref)))
    cfg = write_town_config(tmp_path / "c.toml", town_pbf, tmp_path / "data", zoom=20, shard_zoom=18)
    procs = [_cli(cfg, 1), _cli(cfg, 3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    assert check_masks(tmp_path / "data") == check_masks(tmp_path / "ref")
    assert (tmp_path / "data" / "tiles.csv").read_bytes() == (tmp_path / "ref" / "tiles.csv").read_bytes()
    assert not leftovers(tmp_path / "data")


SAMPLE = """
[region]
name = "mini"
zoom = 18
shard_zoom = 16
data_dir = "{data}"

[osm]
path = "{data}/mini.osm.pbf"

[[classes]]
name = "building"
id = 1
kind = "area"
tags = ["building"]

[imagery]
source = "raster"
paths = ["{data}/orthophoto.tif"]

[synthetic]
seed = 3
size_m = {size}
centre = [24.94, 60.17]
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_during_make_sample_region_leaves_nothing_after_rerun(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cfg = tmp_path / "mini.toml"
    cfg.write_text(SAMPLE.format(data=data, size=600))
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "MakeSampleRegion", "--config", str(cfg),
                             "--workers", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not list(data.glob(".orthophoto.tif.*.tmp*")):
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = sorted(p.name for p in data.glob(".*.tmp*"))
    # the orthophoto's temporary file lives for the whole COG write (most of the run): the kill lands in it
    assert killed, "the generator finished before the kill landed"
    assert not (data / "orthophoto.tif").exists()

    r = _cli(cfg, 1, "MakeSampleRegion")
    out = r.communicate(timeout=300)[0]
    assert r.returncode == 0, out[-2000:]
    assert not leftovers(data), killed
    ref_cfg = tmp_path / "ref.toml"
    ref_cfg.write_text(SAMPLE.format(data=tmp_path / "ref", size=600))
    r = _cli(ref_cfg, 1, "MakeSampleRegion")
    assert r.communicate(timeout=300)[0] is not None and r.returncode == 0
    for name in ("mini.osm.pbf", "orthophoto.tif", "truth.geojson"):
        assert _sha(data / name) == _sha(tmp_path / "ref" / name), name
