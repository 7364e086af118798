"""Whole-region outputs (model, vectors, comparison, report, run.json) are checked like tiles.

Unit tests of :mod:`pipeline.core.outputs` and :mod:`pipeline.model.repair`, then damage probes on a
finished sample region (the demo shrunk to a 300 m town, one epoch): each damages one output, runs
the command a user would (a plain rerun, ``Verify``, ``PredictAll``, ``TrainModel``) and asserts the
exit code, the last line, that the output is whole again and that nothing else was redone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.outputs import damaged_files, file_entries, file_sha256, restore_mtime, seal, seal_intact
from tests.test_e2e_resume import ROOT, _config, _env

# --- pipeline.core.outputs ---------------------------------------------------------------------


def test_entries_find_missing_truncated_and_same_size_damage(tmp_path: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text(f"content of {name}\n")
    manifest = {"root": str(tmp_path), "files": file_entries(tmp_path, {n: {} for n in ("a.txt", "b.txt", "c.txt")})}
    assert damaged_files(manifest, tmp_path) == []
    (tmp_path / "a.txt").unlink()
    (tmp_path / "b.txt").write_text("short")
    (tmp_path / "c.txt").write_text("CONTENT of c.txt\n")  # same size, other bytes
    assert damaged_files(manifest, tmp_path) == ["a.txt", "b.txt", "c.txt"]


def test_restore_mtime_only_for_the_recorded_bytes(tmp_path: Path) -> None:
    f = tmp_path / "f.bin"
    f.write_bytes(b"x" * 10)
    entry = file_entries(tmp_path, {"f.bin": {}})["f.bin"]
    f.write_bytes(b"x" * 10)  # rewritten: same bytes, new mtime
    os.utime(f, ns=(1, entry["mtime_ns"] + 10**9))
    assert restore_mtime(f, entry) and f.stat().st_mtime_ns == entry["mtime_ns"]
    f.write_bytes(b"y" * 10)
    assert not restore_mtime(f, entry)


def test_a_sealed_manifest_knows_same_size_damage(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps(seal({"region": "demo", "seconds": 12})))
    assert seal_intact(path)
    path.write_text(path.read_text().replace('"seconds": 12', '"seconds": 99'))
    assert not seal_intact(path)
    path.write_text('{"region": "demo"')
    assert not seal_intact(path)


# --- pipeline.model.repair ----------------------------------------------------------------


def _checkpoints(out: Path, epochs: int, best_epoch: int, digest: str = "d1") -> dict[str, Any]:
    """A model folder as training leaves it (tiny weights): best.pt, last.pt, metrics.csv; returns
    the manifest's ``files``."""
    import torch

    from pipeline.model.network import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, write_checkpoint
    from pipeline.model.trainlog import write_csv

    out.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": e + 1, "train_loss": 1.0 / (e + 1), "miou": 0.1 * (e + 1)} for e in range(epochs)]
    weights = {e: {"w": torch.full((3,), float(e))} for e in range(1, epochs + 1)}
    meta = {e: {"config_digest": digest, "metrics": {"epoch": e}} for e in range(1, epochs + 1)}
    base = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION}
    write_checkpoint(out / "best.pt", {**base, "model": weights[best_epoch], "meta": meta[best_epoch]})
    state = {"epoch": epochs - 1, "history": history, "best_epoch": best_epoch, "best_miou": 0.1 * best_epoch}
    write_checkpoint(out / "last.pt", {**base, "model": weights[epochs], "meta": meta[epochs], "train_state": state})
    write_csv(out / "metrics.csv", history)
    return file_entries(out, {n: {} for n in ("best.pt", "last.pt", "metrics.csv")})


def test_best_pt_is_rebuilt_from_last_pt_byte_for_byte(tmp_path: Path) -> None:
    from pipeline.model.repair import repair_model_dir

    files = _checkpoints(tmp_path, epochs=2, best_epoch=2)
    (tmp_path / "best.pt").unlink()
    (tmp_path / "metrics.csv").write_text("epoch\n")
    done = repair_model_dir(tmp_path, "d1", files)
    assert (done.action, done.files) == ("rebuilt", ("best.pt", "metrics.csv"))
    assert damaged_files({"files": files}, tmp_path) == []  # same bytes
    assert (tmp_path / "best.pt").stat().st_mtime_ns == files["best.pt"]["mtime_ns"]  # same identity
    assert repair_model_dir(tmp_path, "d1", files).action == "none"


def test_an_earlier_best_epoch_or_a_damaged_last_pt_retrains(tmp_path: Path) -> None:
    from pipeline.model.repair import repair_model_dir

    files = _checkpoints(tmp_path / "a", epochs=3, best_epoch=1)
    (tmp_path / "a" / "best.pt").unlink()
    done = repair_model_dir(tmp_path / "a", "d1", files)
    assert done.action == "retrain" and "epoch (1) is not the last" in done.why
    assert not list((tmp_path / "a").iterdir())  # nothing half left: training starts afresh
    files = _checkpoints(tmp_path / "b", epochs=2, best_epoch=2)
    with open(tmp_path / "b" / "last.pt", "r+b") as fh:
        fh.truncate(1000)
    assert repair_model_dir(tmp_path / "b", "d1", files).why == "last.pt is damaged"
    assert not list((tmp_path / "b").iterdir())
    # no manifest (a killed first run): a readable last.pt of today's digest still rebuilds best.pt
    _checkpoints(tmp_path / "c", epochs=2, best_epoch=2)
    (tmp_path / "c" / "best.pt").unlink()
    assert repair_model_dir(tmp_path / "c", "d1", {}).files == ("best.pt",)


def test_a_finished_run_of_another_config_is_retired_an_unfinished_one_kept(tmp_path: Path) -> None:
    from pipeline.model.repair import retire_finished_run

    files = _checkpoints(tmp_path / "a", epochs=2, best_epoch=1, digest="old")
    (tmp_path / "a" / "training.png").write_bytes(b"png")
    (tmp_path / "a" / "tb").mkdir()
    best = (tmp_path / "a" / "best.pt").read_bytes()
    manifest = {"config_digest": "old", "files": files}
    assert retire_finished_run(tmp_path / "a", "old", manifest) is None  # today's config: nothing to retire
    assert retire_finished_run(tmp_path / "a", "new", manifest) == "old"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["previous"]  # out of training's way
    assert sorted(p.name for p in (tmp_path / "a" / "previous").iterdir()) == ["best.pt", "metrics.csv", "training.png"]
    assert (tmp_path / "a" / "previous" / "best.pt").read_bytes() == best  # the finished model is kept
    # a last.pt the manifest did not record (an unfinished run of another config) stays for training to refuse
    files = _checkpoints(tmp_path / "b", epochs=2, best_epoch=2, digest="old")
    _checkpoints(tmp_path / "b", epochs=3, best_epoch=2, digest="old")  # it trained on after the manifest
    assert retire_finished_run(tmp_path / "b", "new", {"config_digest": "old", "files": files}) is None
    assert retire_finished_run(tmp_path / "b", "new", None) is None
    assert (tmp_path / "b" / "last.pt").is_file() and not (tmp_path / "b" / "previous").exists()
    # the cross-fit model's keys carry its folder's name
    files = _checkpoints(tmp_path / "cross", epochs=1, best_epoch=1, digest="old")
    crossed = {"config_digest": "old", "files": {f"cross/{k}": v for k, v in files.items()}}
    assert retire_finished_run(tmp_path / "cross", "new", crossed) is None
    assert retire_finished_run(tmp_path / "cross", "new", crossed, "cross/") == "old"


# --- damage probes on a finished region ---------------------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(config, data folder, pristine copy of the finished data folder)."""
    tmp = tmp_path_factory.mktemp("outputs")
    cfg = _config(tmp, "region")
    cfg.write_text(re.sub(r"(?m)^epochs = \d+$", "epochs = 1", cfg.read_text()))
    rc, _, out = _cli("RegionPipeline", cfg)
    assert rc == 0, out[-3000:]
    data, pristine = tmp / "region", tmp / "pristine"
    shutil.copytree(data, pristine, symlinks=True)
    return cfg, data, pristine


def _cli(task: str, cfg: Path) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "tasks", task, "--config", str(cfg), "--workers", "1"], cwd=ROOT,
                          env=_env(), capture_output=True, text=True, timeout=600, check=False)
    out = done.stdout + done.stderr
    return done.returncode, (out.strip().splitlines() or [""])[-1], out


def _fresh(region: tuple[Path, Path, Path]) -> tuple[Path, Path]:
    cfg, data, pristine = region
    shutil.rmtree(data)
    shutil.copytree(pristine, data, symlinks=True)
    return cfg, data


def _state(data: Path) -> dict[str, tuple[int, str]]:
    """(mtime, sha256) of the outputs a probe must not redo needlessly, and of prediction tiles."""
    names = ["model/best.pt", "model/last.pt", "model/metrics.csv", "predictions.geojson", "predictions.gpkg",
             "compare/summary.json", "report.html", "run.json"]
    names += [str(p.relative_to(data)) for p in sorted((data / "predictions").rglob("*.png"))]
    return {n: ((data / n).stat().st_mtime_ns, file_sha256(data / n)) for n in names}


def _all_whole(data: Path) -> None:
    """Every region manifest is sealed intact and every file it lists has its recorded sha256."""
    manifests = [*sorted((data / "_manifests").glob("*.json")), data / "run.json"]
    for m in manifests:
        if m.name.startswith("verify") or m.name.startswith("prune"):
            continue
        assert seal_intact(m), m
        assert damaged_files(json.loads(m.read_text()), m.parent) == [], m


def _truncate(path: Path, size: int = 10) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _flip(path: Path) -> None:
    """Same-size damage: one byte in the middle changed."""
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([b[0] ^ 0xFF]))


def _done(task: str, rc: int, last: str, out: str) -> None:
    assert rc == 0, out[-3000:]
    assert last.startswith(f"done: {task} (log: "), out[-3000:]


def _changed(before: dict[str, tuple[int, str]], after: dict[str, tuple[int, str]]) -> set[str]:
    return {n for n in before if before[n] != after.get(n)}


@pytest.mark.parametrize("task", ["RegionPipeline", "PredictAll", "TrainModel"])
def test_deleted_best_pt_is_rebuilt_from_last_pt(region: tuple[Path, Path, Path], task: str) -> None:
    cfg, data = _fresh(region)
    before = _state(data)
    (data / "model" / "best.pt").unlink()
    rc, last, out = _cli(task, cfg)
    _done(task, rc, last, out)
    assert "rebuilt best.pt from last.pt" in out
    assert _changed(before, _state(data)) == set()  # same bytes, same mtime: nothing downstream redone
    _all_whole(data)


def test_an_edited_train_section_retires_the_finished_model_and_trains_afresh(region: tuple[Path, Path, Path],
                                                                             tmp_path: Path) -> None:
    """A finished region, then a changed [train] key (or an osmsat update that changes a training
    default): the old model moves to model/previous/ and today's config trains, with no manual step."""
    cfg, data = _fresh(region)
    best = (data / "model" / "best.pt").read_bytes()
    edited = tmp_path / "edited.toml"
    edited.write_text(cfg.read_text().replace("lr = 3e-3", "lr = 2e-3"))
    assert edited.read_text() != cfg.read_text()
    rc, last, out = _cli("TrainModel", edited)
    _done("TrainModel", rc, last, out)
    assert "the finished model of another config" in out and "training afresh" in out
    assert (data / "model" / "previous" / "best.pt").read_bytes() == best
    assert (data / "model" / "best.pt").is_file() and (data / "model" / "last.pt").is_file()


def test_touched_inputs_rerun_nothing(region: tuple[Path, Path, Path]) -> None:
    """`touch` every input of a finished region (a checkout, a copy): the same bytes redo nothing."""
    cfg, data = _fresh(region)
    before = _state(data)
    manifests = {p: p.stat().st_mtime_ns for p in (data / "_manifests").glob("*.json")}
    later = time.time_ns() + 3_000_000_000
    for p in (cfg, data / "demo.osm.pbf", data / "orthophoto.tif", data / "truth.geojson"):
        assert p.is_file(), p
        os.utime(p, ns=(later, later))
    rc, last, out = _cli("RegionPipeline", cfg)
    _done("RegionPipeline", rc, last, out)
    assert _changed(before, _state(data)) == set()
    assert {p: p.stat().st_mtime_ns for p in (data / "_manifests").glob("*.json")} == manifests


#: what the task that owns a damaged file rewrites besides it
_SIBLINGS = {"predictions.geojson": {"predictions.gpkg"}, "compare/summary.json": set(), "report.html": set()}


@pytest.mark.parametrize("damaged", sorted(_SIBLINGS))
def test_truncated_output_is_redone_by_a_plain_rerun_and_only_it(region: tuple[Path, Path, Path],
                                                                  damaged: str) -> None:
    cfg, data = _fresh(region)
    before = _state(data)
    _truncate(data / damaged)
    rc, last, out = _cli("RegionPipeline", cfg)
    _done("RegionPipeline", rc, last, out)
    assert file_sha256(data / damaged) == before[damaged][1]  # whole again, the same bytes
    # only the task that owns it was redone: no training, no prediction tile, no other stage's file
    assert _changed(before, _state(data)) <= {damaged, *_SIBLINGS[damaged]}
    _all_whole(data)


@pytest.mark.parametrize("damaged", ["compare/summary.json", "model/best.pt", "run.json"])
def test_same_size_damage_is_found_and_redone_by_verify(region: tuple[Path, Path, Path], damaged: str) -> None:
    cfg, data = _fresh(region)
    before = _state(data)
    _flip(data / damaged)
    rc, last, out = _cli("Verify", cfg)
    _done("Verify", rc, last, out)
    assert f"warning: verify: {data / damaged} damaged (missing, another size or another sha256)" in out
    report = json.loads((data / "_manifests" / "verify.json").read_text())
    assert report["outputs"], report
    after = _state(data)
    assert before[damaged][1] == after[damaged][1] or damaged == "run.json"  # whole again (run.json: a new record)
    assert _changed(before, after) <= {damaged}
    _all_whole(data)


@pytest.mark.parametrize("task", ["TrainModel", "RegionPipeline"])
def test_truncated_last_pt_retrains(region: tuple[Path, Path, Path], task: str) -> None:
    from pipeline.model.network import read_checkpoint

    cfg, data = _fresh(region)
    before = _state(data)
    _truncate(data / "model" / "last.pt", 1000)
    rc, last, out = _cli(task, cfg)
    _done(task, rc, last, out)
    assert "last.pt is damaged; training again from the start" in out
    assert read_checkpoint(data / "model" / "last.pt")["train_state"]["epoch"] == 0
    _all_whole(data)
    if task == "RegionPipeline":
        after = _state(data)
        pngs = [n for n in before if n.endswith(".png")]
        assert pngs
        if after["model/best.pt"][1] != before["model/best.pt"][1]:  # a new model: every tile predicted again
            assert all(after[n][0] != before[n][0] for n in pngs)
        else:  # the seeded retraining gave the same bytes: the model's fingerprint follows them, nothing is redone
            assert all(after[n] == before[n] for n in pngs)


# --- what a shard process imports ----------------------------------------------------------------

#: modules a shard's run() would otherwise import in every process Luigi forks (0.3-1.5 s of CPU each)
_RUN_HEAVY = ("numpy", "pandas", "pyarrow", "scipy", "skimage", "shapely", "geopandas", "rasterio", "pyproj",
              "onnxruntime", "torch", "PIL", "tqdm")

_PRELOAD_PROBE = """
import json, sys
from pathlib import Path
import luigi
from tasks.{module} import {cls} as T
heavy = {heavy!r}
if not {preload!r}:
    luigi.configuration.get_config().set("osmsat", "preload", "false")
task = T(config={cfg!r}, shard={shard!r})
assert task.complete()
finished = [m for m in heavy if m in sys.modules]
task.manifest_path().unlink()
seen = {{}}
def _keys():
    engine = sys.modules.get("pipeline.inference.predict_engine")
    return len(engine._KEYS) if engine else 0
@T.event_handler(luigi.Event.START)
def _start(t):
    seen["start"], seen["keys_start"] = [m for m in heavy if m in sys.modules], _keys()
@T.event_handler(luigi.Event.SUCCESS)
def _end(t):
    seen["end"], seen["keys_end"] = [m for m in heavy if m in sys.modules], _keys()
ok = luigi.build([task], local_scheduler=True, workers=1)
print(json.dumps({{"finished": finished, "ok": ok, "whole": task.output_whole(), **seen}}))
"""


@pytest.mark.parametrize("module, cls, product", [("imagery", "FetchImagery", "images"),
                                                  ("masks", "RasterizeMasks", "masks"),
                                                  ("predict", "Predict", "predictions"),
                                                  ("vectorize", "Vectorize", "vectors")])
def test_a_shard_runs_on_the_modules_its_scheduling_imported(region: tuple[Path, Path, Path], module: str, cls: str,
                                                             product: str) -> None:
    """With ``--workers N`` Luigi runs each shard in a process forked from the one that found it
    incomplete: finding it incomplete imports what its ``run()`` needs (``ShardTask.run_imports``),
    so ``run()`` imports no heavy module of its own (and prediction hashes no model file: that too
    was done when the shard was found incomplete); a finished shard's check imports none."""
    cfg, data = _fresh(region)
    got = _preload_probe(cfg, data, module, cls, product, preload=True)
    assert got["finished"] == []
    assert got["ok"] and got["whole"]
    assert "numpy" in got["start"]
    assert set(got["end"]) - set(got["start"]) == set()
    if cls == "Predict":  # the model and its cached graph were hashed before the run, once
        assert got["keys_start"] == got["keys_end"] == 2


def test_without_preloading_a_shard_imports_its_own_libraries(region: tuple[Path, Path, Path]) -> None:
    """``[osmsat] preload = false`` (``--osmsat-preload false``): the scheduling process imports
    nothing for the shard, whose ``run()`` imports scikit-image itself."""
    cfg, data = _fresh(region)
    got = _preload_probe(cfg, data, "vectorize", "Vectorize", "vectors", preload=False)
    assert got["ok"] and got["whole"]
    assert "skimage" not in got["start"] and "skimage" in got["end"]


def _preload_probe(cfg: Path, data: Path, module: str, cls: str, product: str, preload: bool) -> dict[str, Any]:
    """Run :data:`_PRELOAD_PROBE` on the first shard of ``product`` in a fresh interpreter."""
    shard = sorted((data / product / "_shards").glob("*.json"))[0].stem
    probe = _PRELOAD_PROBE.format(module=module, cls=cls, heavy=_RUN_HEAVY, cfg=str(cfg), shard=shard,
                                  preload=preload)
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
