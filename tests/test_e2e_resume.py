"""End to end, killed and resumed: ``RegionPipeline`` on a small sample town is killed (SIGKILL of
its whole process group) during imagery, masks, training and prediction, rerun each time, and
its final outputs equal an uninterrupted run's: masks, imagery and the tile list byte for byte,
the model's test metrics within tolerance; no temporary or partial file is left."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp: Path, name: str) -> Path:
    """The demo config shrunk to a 300 m town, z17 shards, 3 training epochs."""
    data = tmp / name
    text = (ROOT / "configs" / "demo.toml").read_text()
    text = text.replace('data_dir = "data/demo"', f'data_dir = "{data}"').replace('"data/demo/', f'"{data}/')
    text = text.replace("size_m = 700.0", "size_m = 300.0").replace("seed = 7", "seed = 11")
    text = text.replace("shard_zoom = 16", "shard_zoom = 17").replace("epochs = 60", "epochs = 3")
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def _cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "tasks", "RegionPipeline", "--config", str(cfg), "--workers", "1"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _run_until(cfg: Path, cond: Callable[[], bool], timeout: float = 300) -> bool:
    """Start the pipeline in its own process group; SIGKILL the group once ``cond()`` holds.
    Returns True when it was killed, False when it finished first."""
    proc = subprocess.Popen(_cmd(cfg), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if cond():
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
                return True
            time.sleep(0.01)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)


def _shards(folder: Path) -> int:
    return len([p for p in (folder / "_shards").glob("*.json") if not p.name.endswith(".started.json")]) \
        if (folder / "_shards").is_dir() else 0


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".png", ".jpg")}


def test_killed_runs_resume_to_the_same_outputs(tmp_path: Path) -> None:
    ref_cfg, cfg = _config(tmp_path, "whole"), _config(tmp_path, "killed")
    done = subprocess.run(_cmd(ref_cfg), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ref, d = tmp_path / "whole", tmp_path / "killed"
    kills = {
        "imagery": lambda: _shards(d / "images") >= 1,
        "masks": lambda: _shards(d / "masks") >= 1,
        "training": (d / "model" / "last.pt").is_file,
        "prediction": lambda: _shards(d / "predictions") >= 1,
    }
    killed = [stage for stage, cond in kills.items() if _run_until(cfg, cond)]
    print("killed during:", killed)
    assert {"training", "prediction"} <= set(killed), killed
    done = subprocess.run(_cmd(cfg), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    # tile products and the tile list: byte for byte
    for product in ("masks", "images"):
        a, b = _digests(ref / product), _digests(d / product)
        assert a and a == b, product
    assert (ref / "tiles.csv").read_bytes() == (d / "tiles.csv").read_bytes()
    # the model: resumed training reaches the same test metrics
    m_ref = json.loads((ref / "model" / "metrics.json").read_text())
    m = json.loads((d / "model" / "metrics.json").read_text())
    for name, iou in m_ref["iou"].items():
        assert m["iou"][name] == pytest.approx(iou, abs=1e-3), name
    assert (d / "report.html").is_file() and (d / "run.json").is_file()
    stages = json.loads((d / "run.json").read_text())["stages"]  # each stage's peak memory, from its run records
    assert stages and all(s["peak_mib"] is None or 50 < s["peak_mib"] < 8192 for s in stages.values()), stages
    assert stages["TrainModel"]["peak_mib"] > 100
    # nothing temporary or partial is left
    leftovers = [p for p in d.rglob("*") if p.name.endswith((".tmp", ".lock", ".started.json")) or ".tmp" in p.name
                 or p.name == "_tmp"]
    assert leftovers == []
