"""Luigi: ExtractFeatures -> CoverTiles -> RasterizeMasks/MasksAll, end to end on a generated town.

Completeness, determinism, config digests, a SIGKILL in the middle of MasksAll, and bad input
through the command line (``python -m tasks``).
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
import numpy as np
import pytest

from pipeline.tiles.cover import read_tiles_csv
from pipeline.tiles.masks import decode_mask_png
from tasks.masks import MasksAll
from tests.conftest import ROOT
from tests.town import write_town_config


def build(config: Path) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build([MasksAll(config=str(config))], local_scheduler=True, detailed_summary=True,
                       log_level="WARNING")


def cli(config: Path, *args: str, task: str = "MasksAll", timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tasks", task, "--config", str(config), "--workers", "1", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)


def check_masks(data: Path) -> dict[str, str]:
    """Every tile of tiles.csv has a valid mask listed in its shard manifest; returns sha256 per file."""
    df = read_tiles_csv(data / "tiles.csv")
    sums: dict[str, str] = {}
    for shard in sorted(df.shard.unique()):
        m = json.loads((data / "masks" / "_shards" / f"{shard}.json").read_text())
        for rel, info in m["files"].items():
            raw = (data / "masks" / rel).read_bytes()
            assert hashlib.sha256(raw).hexdigest() == info["sha256"], rel
            assert decode_mask_png(raw).shape == (256, 256)
            sums[rel] = info["sha256"]
    expect = {f"{z}/{x}/{y}.png" for z, x, y in zip(df.z, df.x, df.y)}
    assert set(sums) == expect
    on_disk = {str(p.relative_to(data / "masks")) for p in (data / "masks").rglob("*.png")}
    assert on_disk == expect
    assert not list((data / "masks").rglob("*.tmp"))
    return sums


def test_masks_all_end_to_end(town_config: Path, tmp_path: Path) -> None:
    res = build(town_config)
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text
    data = tmp_path / "data"
    sums = check_masks(data)
    df = read_tiles_csv(data / "tiles.csv")
    assert len(df) == len(sums) > 50 and df.shard.nunique() > 3
    assert (df.z == 19).all() and df.shard.str.len().eq(17).all()
    # buildings and roads really are in the masks
    ids = np.concatenate([np.unique(decode_mask_png((data / "masks" / r).read_bytes())) for r in sums])
    assert {1, 2, 3} <= set(ids.tolist())
    summary = json.loads((data / "masks" / "_manifest.json").read_text())
    assert summary["tiles"] == len(df)


def test_deterministic_and_incremental(tmp_path: Path, town_pbf: Path) -> None:
    a = write_town_config(tmp_path / "a.toml", town_pbf, tmp_path / "a")
    b = write_town_config(tmp_path / "b.toml", town_pbf, tmp_path / "b")
    assert build(a).status.name == "SUCCESS" and build(b).status.name == "SUCCESS"
    assert (tmp_path / "a" / "tiles.csv").read_bytes() == (tmp_path / "b" / "tiles.csv").read_bytes()
    assert check_masks(tmp_path / "a") == check_masks(tmp_path / "b")

    feats = tmp_path / "a" / "features.parquet"
    tiles = tmp_path / "a" / "tiles.csv"
    before = (feats.stat().st_mtime_ns, tiles.stat().st_mtime_ns)
    res = build(a)  # nothing to do
    parts = luigi.execution_summary._partition_tasks(res.worker)
    assert not parts["completed"] and parts["already_done"], res.summary_text

    # a mask setting changes only the masks: features and tiles are kept
    sums = check_masks(tmp_path / "a")
    write_town_config(a, town_pbf, tmp_path / "a", ignore_ring_px=2)
    assert build(a).status.name == "SUCCESS"
    assert (feats.stat().st_mtime_ns, tiles.stat().st_mtime_ns) == before
    assert check_masks(tmp_path / "a") != sums


def _manifests(data: Path) -> list[Path]:
    return list((data / "masks" / "_shards").glob("*.json")) if (data / "masks" / "_shards").exists() else []


def test_sigkill_mid_masks_then_rerun_completes(tmp_path: Path, town_pbf: Path) -> None:
    data = tmp_path / "data"
    cfg = write_town_config(tmp_path / "k.toml", town_pbf, data, zoom=20, shard_zoom=19)
    cmd = [sys.executable, "-m", "tasks", "MasksAll", "--config", str(cfg), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(_manifests(data)) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    nshards = read_tiles_csv(data / "tiles.csv").shard.nunique()
    done = len(_manifests(data))
    assert 3 <= done < nshards, "the kill must land in the middle of MasksAll"
    for png in (data / "masks").rglob("*.png"):  # whatever exists is whole
        decode_mask_png(png.read_bytes())
    r = cli(cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    check_masks(data)
    assert len(_manifests(data)) == nshards
    assert not (data / "masks" / "_tmp").exists() or not any((data / "masks" / "_tmp").rglob("*"))


def test_cli_bad_inputs(tmp_path: Path, town_pbf: Path) -> None:
    data = tmp_path / "data"
    # a truncated PBF: clear error naming the file, non-zero exit, no features file
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(town_pbf.read_bytes()[: town_pbf.stat().st_size // 2])
    cfg = write_town_config(tmp_path / "bad.toml", bad, data)
    r = cli(cfg)
    assert r.returncode != 0
    assert str(bad) in r.stderr + r.stdout
    assert not (data / "features.parquet").exists() and not list(data.rglob("*.png"))
    # a missing PBF with no download URL
    cfg = write_town_config(tmp_path / "missing.toml", tmp_path / "nope.osm.pbf", data)
    r = cli(cfg)
    assert r.returncode != 0 and "nope.osm.pbf" in r.stderr + r.stdout
    # a config typo and a zoom out of range stop before Luigi starts, naming file and key
    text = (tmp_path / "missing.toml").read_text()
    (tmp_path / "typo.toml").write_text(text.replace("tile_size", "tile_sise"))
    r = cli(tmp_path / "typo.toml")
    assert r.returncode == 2 and "typo.toml" in r.stderr and "tile_sise" in r.stderr
    (tmp_path / "zoom.toml").write_text(text.replace("zoom = 19", "zoom = 40"))
    r = cli(tmp_path / "zoom.toml")
    assert r.returncode == 2 and "region.zoom = 40 is out of range" in r.stderr
    assert not data.exists() or not list(data.rglob("*.png"))


@pytest.mark.parametrize("args", [["--help"], []])
def test_cli_help(args: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "tasks", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "MasksAll" in r.stdout and "--config" in r.stdout


def test_progress_reports_and_terminal_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """``RegionTask.progress`` tells the scheduler (message, percentage) and draws one bar on a
    terminal that follows the count and the latest description."""
    import io

    from tasks.masks import RasterizeMasks

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    task = RasterizeMasks(config="configs/demo.toml", shard="0")
    seen: list[object] = []
    task.set_status_message = seen.append
    task.set_progress_percentage = seen.append
    task.progress(0, 4, "masks 0")
    task.progress(2, 4, "masks 0 (half)")
    bar = task.__dict__["_tqdm"]
    assert (bar.n, bar.total, bar.desc) == (2, 4, "masks 0 (half)")
    task.progress(4, 4, "masks 0 (all)")
    assert seen == ["masks 0: 0/4", 0, "masks 0 (half): 2/4", 50, "masks 0 (all): 4/4", 100]
    assert "masks 0:   0%" in err.getvalue()
    assert "_tqdm" not in task.__dict__ and bar.disable  # closed when done
