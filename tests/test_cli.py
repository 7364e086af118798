"""``python -m tasks``: a failed run ends with ONE clear line ``error: <file/key/tile>: <what> —
<how to fix>`` and a non-zero exit; tracebacks go to ``<data_dir>/logs`` (or the terminal with
``--debug``). Cases: a corrupt PBF, a full disk (a small tmpfs), a raster outside the region, a
``data_dir`` that is a file, Ctrl-C, an unknown task, a missing ``--config``, a ``[predict]
model`` that is no checkpoint, more tiles than ``[region] max_tiles``; and ``make clean-tmp``
(refuses during a run; cleans the errors files runs leave in the temp folder)."""

from __future__ import annotations

import fcntl
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_masks_task import check_masks
from tests.tileserver import write_test_geotiff
from tests.town import write_town_config


def cli_env(tmpdir: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMSAT_")}
    if tmpdir is not None:  # the system temp folder of the run (its errors file goes there)
        tmpdir.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmpdir)
    return env


def cli(*args: str, tmpdir: Path | None = None) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "tasks", *args], check=False, cwd=ROOT, env=cli_env(tmpdir),
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_corrupt_pbf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(random.Random(1).randbytes(3000))
    cfg = write_town_config(tmp_path / "r.toml", bad, tmp_path / "data")
    code, out, err = cli("MasksAll", "--config", str(cfg), "--workers", "2")
    assert code != 0
    assert last_line(err).startswith(f"error: {bad}: truncated, corrupt or not an OSM file")
    assert f"delete {bad} and rerun" in last_line(err)
    assert "Traceback" not in out + err and "Luigi Execution Summary" not in out + err
    logs = list((tmp_path / "data" / "logs").glob("MasksAll-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()  # the details are in the log
    # --debug: Luigi's own log with the traceback on the terminal, the clear line still last
    code, out, err = cli("MasksAll", "--config", str(cfg), "--debug")
    assert code != 0 and "Traceback" in err and last_line(err).startswith(f"error: {bad}: ")


def test_raster_outside_the_region(tmp_path: Path, town_pbf: Path) -> None:
    tif = write_test_geotiff(tmp_path / "far.tif", size_px=200)  # near Helsinki; the town is elsewhere
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data",
                            extra=f'\n[imagery]\nsource = "raster"\npaths = ["{tif}"]\n')
    code, _, err = cli("ImageryAll", "--config", str(cfg))
    assert code != 0
    assert last_line(err).startswith(f"error: {cfg}: [imagery] paths: no raster overlaps the region's ")
    assert "check region.bbox" in last_line(err) and "Traceback" not in err
    assert not list((tmp_path / "data").glob("images/**/*.png"))


def test_data_dir_that_is_a_file(tmp_path: Path, town_pbf: Path) -> None:
    afile = tmp_path / "notadir"
    afile.write_text("x")
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, afile)
    code, _, err = cli("MasksAll", "--config", str(cfg))
    assert code != 0 and last_line(err) == (f"error: {afile}: a file stands where a folder must go (Not a directory) "
                                            "— remove or rename that file (or change region.data_dir) and rerun")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=False,
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk(small_disk: Path, tmp_path: Path, town_pbf: Path) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, small_disk / "data")
    code, out, err = cli("MasksAll", "--config", str(cfg), "--workers", "2")
    assert code != 0
    assert last_line(err).startswith(f"error: {small_disk / 'data'}")
    assert "no space left on the disk" in last_line(err) and "region.data_dir" in last_line(err)
    assert "Traceback" not in out + err and "Logging error" not in err


def _start_masks(cfg: Path, workers: int, tmpdir: Path) -> subprocess.Popen[str]:
    """MasksAll in its own process group (as a terminal runs it), once some shards are done."""
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "MasksAll", "--config", str(cfg), "--workers",
                             str(workers)], cwd=ROOT, env=cli_env(tmpdir), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    shards = cfg.parent / "data" / "masks" / "_shards"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and len(list(shards.glob("*.json"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the run must still be going on"
    return proc


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_ends_in_one_line_and_a_rerun_resumes(tmp_path: Path, town_pbf: Path, workers: int) -> None:
    """Ctrl-C (SIGINT to the process group) mid-MasksAll, in-process (1 worker) and with forked
    workers: one line, exit 130, no traceback, no errors file left in the temp folder."""
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data", zoom=20, shard_zoom=19)
    proc = _start_masks(cfg, workers, tmp_path / "tmp")
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert last_line(err) == "error: interrupted; rerun to resume"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert not list((tmp_path / "tmp").glob("osmsat-*"))
    code, _, err = cli("MasksAll", "--config", str(cfg), tmpdir=tmp_path / "tmp")
    assert code == 0 and last_line(err).startswith("done: MasksAll"), err[-3000:]


def test_ctrl_c_mid_training_with_dataloader_workers_is_one_line(tmp_path: Path, town_pbf: Path) -> None:
    """Ctrl-C while TrainModel runs in the command's process with 2 DataLoader worker processes:
    no traceback from the workers nor from the loader's shutdown (torch's SIGCHLD handler)."""
    from tests.pbf_fixtures import ORIGIN

    r = 6378137.0
    ox, oy = math.radians(ORIGIN[0]) * r, math.log(math.tan(math.pi / 4 + math.radians(ORIGIN[1]) / 2)) * r
    tif = write_test_geotiff(tmp_path / "ortho.tif", seed=5, size_px=500, res_m=1.2, origin=(ox - 40, oy + 560),
                             crs="EPSG:3857")
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data", zoom=18, shard_zoom=15,
                            extra=f'\n[imagery]\nsource = "raster"\npaths = ["{tif}"]\n\n[split]\nblock_zoom = 18\n'
                                  "\n[train]\nepochs = 1000\nbatch_size = 2\n")
    luigi_cfg = tmp_path / "luigi.toml"
    luigi_cfg.write_text(re.sub(r"(?m)^workers = -1 ", "workers = 2 ", (ROOT / "configs" / "luigi.toml").read_text()))
    env = {**cli_env(tmp_path / "tmp"), "LUIGI_CONFIG_PATH": str(luigi_cfg)}
    proc = subprocess.Popen([sys.executable, "-m", "tasks", "TrainModel", "--config", str(cfg)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    last = tmp_path / "data" / "model" / "last.pt"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not last.exists():
        time.sleep(0.05)
    assert proc.poll() is None and last.exists(), "training must be going on"
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and last_line(err) == "error: interrupted; rerun to resume", err[-3000:]
    assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]


def test_unknown_task_and_missing_config_are_one_line_and_create_nothing(tmp_path: Path, town_pbf: Path) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data")
    code, _, err = cli("TrainModle", "--config", str(cfg), tmpdir=tmp_path / "tmp")
    assert code == 2 and err.strip() == ("error: unknown task 'TrainModle' — did you mean TrainModel? "
                                         "python -m tasks --help lists the tasks")
    assert not (tmp_path / "data").exists() and not list((tmp_path / "tmp").glob("osmsat-*"))
    code, _, err = cli("TrainModel", tmpdir=tmp_path / "tmp")
    assert code == 2 and err.strip() == ("error: TrainModel: --config is missing — name the region config: "
                                         "python -m tasks TrainModel --config configs/<region>.toml")
    code, _, err = cli("ExtractFeatures", f"--config={cfg}", tmpdir=tmp_path / "tmp")  # the = form is checked too
    assert code == 0 and last_line(err).startswith("done: ExtractFeatures")
    assert not list((tmp_path / "tmp").glob("osmsat-*"))  # the run's errors file went with it


def test_predict_model_that_is_no_checkpoint(tmp_path: Path, town_pbf: Path) -> None:
    """``[predict] model`` naming a text file: one line naming it (torch's own text runs to lines)."""
    from tests.pbf_fixtures import ORIGIN

    r = 6378137.0
    ox, oy = math.radians(ORIGIN[0]) * r, math.log(math.tan(math.pi / 4 + math.radians(ORIGIN[1]) / 2)) * r
    tif = write_test_geotiff(tmp_path / "ortho.tif", seed=5, size_px=300, res_m=1.2, origin=(ox - 40, oy + 360),
                             crs="EPSG:3857")
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a model\n")
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data", zoom=17, shard_zoom=15,
                            extra=f'\n[imagery]\nsource = "raster"\npaths = ["{tif}"]\n'
                                  f'\n[predict]\nmodel = "{notes}"\n')
    code, out, err = cli("PredictAll", "--config", str(cfg))
    assert code != 0 and "Traceback" not in out + err
    assert last_line(err).startswith(f"error: {notes}: not a readable checkpoint (")
    assert "set [predict] model to a model/best.pt written by TrainModel" in last_line(err)


def test_cover_states_the_plan_and_refuses_past_max_tiles(tmp_path: Path, town_pbf: Path) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data")
    cfg.write_text(cfg.read_text().replace("shard_zoom = 17\n", "shard_zoom = 17\nmax_tiles = 10\n", 1))
    code, _, err = cli("MasksAll", "--config", str(cfg))
    lines = err.strip().splitlines()
    plan = [ln for ln in lines if ln.startswith("note: town: ")]
    assert len(plan) == 1 and re.search(r"\d+ tiles at zoom 19 in \d+ shards \(zoom 17\); estimated disk about "
                                        r"\d+ [KMG]?B \(masks ", plan[0]), err
    assert code != 0 and last_line(err).startswith(f"error: {cfg}: region.max_tiles = 10, but zoom 19 over this "
                                                   "region is ")
    assert "raise max_tiles in [region]" in last_line(err) and "Traceback" not in err
    assert not (tmp_path / "data" / "tiles.csv").exists() and not (tmp_path / "data" / "masks").exists()
    cfg.write_text(cfg.read_text().replace("max_tiles = 10", "max_tiles = 100000"))
    code, _, err = cli("CoverTiles", "--config", str(cfg))
    assert code == 0 and (tmp_path / "data" / "tiles.csv").is_file(), err


def _corner_of_town(cfg: Path, data: Path, side_m: float = 300.0) -> Path:
    """``cfg`` cut to a ``side_m`` square of the town (z20: 25 shards of z19 instead of 111, so a
    run the test waits for takes a quarter of the time), written back."""
    import mercantile

    from tests.test_train import _town_origin

    ox, oy = _town_origin()
    w, n = mercantile.lnglat(ox + 100, oy - 100)
    e, s = mercantile.lnglat(ox + 100 + side_m, oy - 100 - side_m)
    line = f'data_dir = "{data}"'
    cfg.write_text(cfg.read_text().replace(line, f"{line}\nbbox = [{w}, {s}, {e}, {n}]", 1))
    return cfg


def clean_tmp(root: Path, tmpdir: Path) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "pipeline.core.upkeep", "clean-tmp", str(root)], check=False, cwd=ROOT,
                          env=cli_env(tmpdir), capture_output=True, text=True, timeout=120)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def test_clean_tmp_refuses_during_a_run_and_cleans_errors_files(tmp_path: Path, town_pbf: Path) -> None:
    """``make clean-tmp`` (``python -m pipeline.core.upkeep clean-tmp data``) during a run: one line,
    nothing deleted, the run finishes; afterwards it deletes leftovers and the errors files of
    ended runs in the temp folder (a live run's stays)."""
    data, tmpdir = tmp_path / "data", tmp_path / "tmp"
    cfg = _corner_of_town(write_town_config(tmp_path / "r.toml", town_pbf, data, zoom=20, shard_zoom=19), data)
    proc = _start_masks(cfg, 2, tmpdir)
    code, out = clean_tmp(tmp_path, tmpdir)
    assert code == 1 and out == (f"error: {data}: a run on this region is going on (it holds "
                                 f"{data / '_manifests' / 'runs.flock'}); let it finish or stop it (Ctrl-C), "
                                 "then run make clean-tmp again — nothing was deleted")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and last_line(err).startswith("done: MasksAll"), err[-3000:]
    # what killed runs leave: scratch, a temporary file, a task lock, errors files in the temp folder
    (data / "masks" / "_tmp" / "0123").mkdir(parents=True)
    (data / "masks" / "_tmp" / "0123.lock").touch()
    (data / "_manifests" / "MasksAll.lock").touch()
    (data / ".tiles.csv.abc.tmp").touch()
    dead = tmpdir / "osmsat-MasksAll-dead.errors.jsonl"
    dead.touch()
    live = tmpdir / "osmsat-MasksAll-live.errors.jsonl"
    with open(live, "w") as fh:  # a run going on elsewhere holds its errors file
        fcntl.flock(fh, fcntl.LOCK_EX)
        with open(data / "_manifests" / "MasksAll.lock") as task_lock:  # a task holds its lock: refused
            fcntl.flock(task_lock, fcntl.LOCK_EX)
            code, out = clean_tmp(tmp_path, tmpdir)
            assert code == 1 and "MasksAll.lock: a task of a running run holds this lock" in out
            assert dead.exists() and (data / ".tiles.csv.abc.tmp").exists()
        code, out = clean_tmp(tmp_path, tmpdir)
        assert code == 0 and out.startswith("clean-tmp: deleted 1 scratch folders, 1 temporary files, 2 lock files, "
                                            "1 errors files"), out
        assert live.exists() and not dead.exists()
    assert not (data / "masks" / "_tmp").exists() and not (data / ".tiles.csv.abc.tmp").exists()
    assert not (data / "_manifests" / "MasksAll.lock").exists() and (data / "_manifests" / "runs.flock").exists()
    check_masks(data)  # the finished run's outputs are whole


def test_make_help_readme_and_clean_tmp_target() -> None:
    """``make help`` and the README say clean-tmp refuses during a run; the README's commands use
    the venv's python (plain ``python`` has no Luigi); the target runs the guarded cleaner."""
    helptext = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "osmsat-*.errors.jsonl in the temp folder" in helptext and "refuses while a run holds a lock" in helptext
    readme = (ROOT / "README.md").read_text()
    assert "refuses while a run holds its region's lock" in readme
    assert not re.findall(r"(?<![/\w])python -m tasks", readme)
    dry = subprocess.run(["make", "-n", "clean-tmp"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m pipeline.core.upkeep clean-tmp data" in dry


def test_usage_and_make_targets_follow_the_stage_table() -> None:
    """``--help`` lists every stage's task (and shard task) and the command knows each one's
    module; each ``make <stage>`` target runs the task of that stage in the stage table (``make
    predict``: predictions and their evaluation, the evaluate stage's task), the others a task
    of no stage (``verify``, ``prune``)."""
    import tasks.__main__ as cli
    from pipeline.core.stages import STAGES

    for stage in STAGES.values():
        for name in (stage.task, stage.shard_task):
            if name:
                module, cls = name.rsplit(".", 1)
                assert cls in cli.TASK_HELP and f"  {cls} " in cli.USAGE, cls
                assert cli.TASK_MODULES[cls] == module
    assert set(cli.TASK_HELP) <= set(cli.TASK_MODULES)
    make = (ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^TASK_(\w+)\s*:=\s*(\w+)\s*$", make, flags=re.M))
    listed = re.search(r"^STAGES := (.*)$", make, flags=re.M)
    assert listed is not None and listed.group(1).split() == list(targets)
    stage_of = {name.rsplit(".", 1)[1]: s.name for s in STAGES.values() for name in (s.task, s.shard_task) if name}
    for target, task in targets.items():
        assert task in cli.TASK_HELP, (target, task)
        if target == "predict":
            assert stage_of[task] == "evaluate"
        elif target in STAGES:
            assert STAGES[target].task.endswith(f".{task}"), (target, task)
        else:
            assert task not in stage_of, (target, task)


def test_help_lists_every_registered_imagery_source(capsys: pytest.CaptureFixture[str]) -> None:
    import tasks.__main__ as cli
    from pipeline.imagery.registry import SOURCES

    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Imagery sources" in out and len(SOURCES) >= 4
    for name, src in SOURCES.items():
        assert f"  {name:<17} {src.description}" in out, name
