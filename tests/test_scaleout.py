"""Scale-out through Luigi's central scheduler: ``luigid`` on 127.0.0.1 with a temporary state
path, two worker processes standing for two machines (each its own host name and working folder,
one shared data folder) run the demo's stages; both run shards, and the outputs equal a
single-worker run's byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LUIGID = Path(sys.executable).with_name("luigid")


def _config(tmp: Path, name: str) -> Path:
    """The demo config, shrunk to a 400 m town in z17 shards and one epoch, writing under ``tmp/name``."""
    text = (ROOT / "configs" / "demo.toml").read_text()
    text = text.replace('data_dir = "data/demo"', f'data_dir = "{tmp / name}"')
    text = text.replace('path = "data/demo/demo.osm.pbf"', f'path = "{tmp / name}/demo.osm.pbf"')
    text = text.replace('paths = ["data/demo/orthophoto.tif"]', f'paths = ["{tmp / name}/orthophoto.tif"]')
    text = text.replace("shard_zoom = 16", "shard_zoom = 17").replace("size_m = 700.0", "size_m = 400.0")
    text = text.replace("epochs = 60", "epochs = 1")  # the tile stages are what spreads; a short training
    path = tmp / f"{name}.toml"
    path.write_text(text)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_workers(port: int, n: int, timeout: float = 60) -> None:
    """Wait until ``n`` workers have registered with the scheduler (luigid's worker list API)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/worker_list", timeout=5) as resp:
                if len(json.loads(resp.read())["response"]) >= n:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {n} workers registered with luigid on port {port}")


def _done_tasks(port: int) -> dict[str, dict]:
    """The scheduler's finished tasks, as its web page lists them (luigid's task list API)."""
    query = urllib.parse.quote(json.dumps({"status": "DONE", "upstream_status": "", "search": ""}))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/task_list?data={query}", timeout=10) as resp:
        return dict(json.loads(resp.read())["response"])


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def _tasks(task: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tasks", task, *args]


@pytest.mark.skipif(not LUIGID.exists(), reason="luigid is not installed beside this Python")
def test_two_workers_against_luigid(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    state = tmp_path / "luigid"
    state.mkdir()
    server = subprocess.Popen([str(LUIGID), "--address", "127.0.0.1", "--port", str(port),
                               "--state-path", str(state / "state.pickle"), "--logdir", str(state)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.2)
        cfg = _config(tmp_path, "central")
        sched = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(port), "--workers", "1"]
        logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # noqa: SIM115 - closed below
        # as on several machines: the tile list first, then one worker per machine
        first = subprocess.run(_tasks("CoverTiles", "--config", str(cfg), *sched), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600, check=False)
        assert first.returncode == 0, first.stdout + first.stderr
        # two machines as far as one allows: each worker its own host name (a sitecustomize that
        # answers socket.gethostname()) and its own working folder; the data folder is shared.
        # (--no-lock: Luigi refuses a second identical command on one machine; these stand for two)
        cmd = _tasks("RegionPipeline", "--config", str(cfg), *sched, "--no-lock")
        workers = []
        for i, log in enumerate(logs):
            home = tmp_path / f"machine-{i}"
            home.mkdir()
            (home / "sitecustomize.py").write_text(f"import socket\nsocket.gethostname = lambda: 'machine-{i}'\n")
            workers.append(subprocess.Popen(cmd, cwd=home, env={**env, "PYTHONPATH": f"{home}{os.pathsep}{ROOT}"},
                                            stdout=log, stderr=subprocess.STDOUT))
        try:
            codes = [w.wait(timeout=600) for w in workers]
        finally:
            for w in workers:
                w.kill()
            for log in logs:
                log.close()
        # a worker whose scheduled tasks the other one ran ends with Luigi's "not run" code (25)
        assert set(codes) <= {0, 25}, [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
        final = subprocess.run(_tasks("RegionPipeline", "--config", str(cfg), *sched), cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=600, check=False)
        assert final.returncode == 0 and "ran successfully" not in final.stderr, final.stderr[-3000:]
        # what the luigid page shows: each shard task's last status message and percentage
        shown = _done_tasks(port)
        reported = [t for t in shown.values() if t["status_message"]]
        assert {t["name"] for t in reported} >= {"MakeSampleRegion", "SplitDataset", "TrainModel", "MergeFeatures"}
        assert all(t["progress_percentage"] == 100 for t in reported), reported  # finished: 100 %
        for name in ("RasterizeMasks", "FetchImagery", "Predict"):
            shards = [t for t in shown.values() if t["name"] == name]
            assert shards and all(t["progress_percentage"] == 100 for t in shards), shards
            assert all(re.fullmatch(r"\w[\w ]*: (\d+)/\1", t["status_message"] or "") for t in shards), shards
    finally:
        server.terminate()
        server.wait(timeout=30)
    # both worker processes ran shard tasks
    recs = [json.loads(p.read_text()) for p in (tmp_path / "central" / "_runlog").glob("*.json")]
    shard_workers = {r["worker"] for r in recs if r["shard"]}
    assert len(shard_workers) == 2, recs
    assert {w.split(":")[0] for w in shard_workers} == {"machine-0", "machine-1"}, shard_workers
    # the same outputs as one worker with the local scheduler
    single = _config(tmp_path, "single")
    done = subprocess.run(_tasks("RegionPipeline", "--config", str(single), "--workers", "1"), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for product in ("masks", "images"):
        a, b = _tree_digest(tmp_path / "central" / product), _tree_digest(tmp_path / "single" / product)
        assert a and a == b
    assert (tmp_path / "central" / "tiles.csv").read_bytes() == (tmp_path / "single" / "tiles.csv").read_bytes()
    shutil.rmtree(state, ignore_errors=True)
