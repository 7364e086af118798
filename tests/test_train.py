"""pipeline.model.train: a few steps lower the loss, SIGKILL + resume == uninterrupted, DDP with two
gloo processes, and the clear errors (NaN loss, empty split, no positive pixel, OOM, another
config). Tiny: 64 px generated tiles, ResNet-18 U-Net, a handful of steps, one CPU thread."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.config.train import SplitSpec, TrainSpec
from pipeline.core.errors import TrainingError
from pipeline.model.dataset import TileDataset, build_augment
from pipeline.model.network import ModelSpec, load_checkpoint, read_checkpoint
from pipeline.model.split import make_split
from pipeline.model.train import FitOptions, RunInfo, fit
from tests.conftest import ROOT
from tests.train_fixtures import Z, write_region

SPEC = TrainSpec(encoder="resnet18", epochs=2, batch_size=4, lr=3e-3, schedule="onecycle", warmup=0.2,
                 losses=(("ce", 1.0), ("dice", 1.0)), scale_jitter=0.1, color_jitter=0.1, seed=5)
MODEL = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=2)
CLASSES = ({"name": "building", "id": 1},)


def datasets(data: Path, spec: TrainSpec = SPEC, stats: dict | None = None) -> tuple[TileDataset, TileDataset, dict]:
    rows, st = make_split(data, SplitSpec(block_zoom=Z, val_fraction=0.2, test_fraction=0.0, seed=1), Z)
    band = stats or st["band_stats"]
    train = TileDataset(data, [r for r in rows if r.split == "train"], band, spec.scale, build_augment(spec, 3))
    val = TileDataset(data, [r for r in rows if r.split == "val"], band, spec.scale)
    return train, val, band


def run(data: Path, out: Path, spec: TrainSpec = SPEC, digest: str = "d1", stats: dict | None = None,
        **kw: object) -> object:
    train, val, band = datasets(data, spec, stats)
    info = RunInfo(CLASSES, band, 64, digest)
    return fit(spec, MODEL, train, val, out, info,
               FitOptions(device=torch.device("cpu"), progress=False, **kw))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("tiles")
    write_region(data, n=3, seed=3)
    return data


def test_a_few_steps_lower_the_loss(region, tmp_path):
    torch.set_num_threads(1)
    spec = replace(SPEC, epochs=4, schedule="constant", augment=False, lr=2e-3)
    hist = run(region, tmp_path / "m", spec)
    losses = [r["train_loss"] for r in hist.rows]  # type: ignore[attr-defined]
    assert losses[-1] < 0.8 * losses[0], losses
    _, meta = load_checkpoint(tmp_path / "m" / "best.pt")
    assert meta["classes"] == [{"name": "building", "id": 1}] and meta["tile_size"] == 64
    assert set(meta["metrics"]["iou"]) == {"background", "building"}
    for name in ("last.pt", "metrics.csv", "training.png"):
        assert (tmp_path / "m" / name).stat().st_size > 0
    assert list((tmp_path / "m" / "tb").iterdir())
    csv_rows = (tmp_path / "m" / "metrics.csv").read_text().splitlines()
    assert len(csv_rows) == 5 and "iou_building" in csv_rows[0]


SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from pathlib import Path
from tests.test_train import run, SPEC
{imports}
kill = {kill!r}
def hook(epoch, step):
    if kill is not None and (epoch, step) == tuple(kill):
        os.kill(os.getpid(), signal.SIGKILL)
run(Path({data!r}), Path({out!r}), {spec}, on_step=hook)
"""


def _run_script(data: Path, out: Path, kill: tuple[int, int] | None, spec: str = "SPEC", imports: str = "") -> int:
    """Train in a fresh process (``spec``: a TrainSpec expression, after ``imports``), killed by
    SIGKILL after step ``kill = (epoch, step)`` when given; its exit status."""
    code = SCRIPT.format(root=str(ROOT), data=str(data), out=str(out), kill=kill, spec=spec, imports=imports)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=False, timeout=600).returncode


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(region, tmp_path):
    assert _run_script(region, tmp_path / "a", None) == 0
    assert _run_script(region, tmp_path / "b", (1, 0)) == -9  # killed in the 2nd epoch, after its first step
    assert read_checkpoint(tmp_path / "b" / "last.pt")["train_state"]["epoch"] == 0
    assert _run_script(region, tmp_path / "b", None) == 0
    a, b = read_checkpoint(tmp_path / "a" / "last.pt"), read_checkpoint(tmp_path / "b" / "last.pt")
    assert a["train_state"]["epoch"] == b["train_state"]["epoch"] == SPEC.epochs - 1
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert a["train_state"]["history"][-1]["train_loss"] == b["train_state"]["history"][-1]["train_loss"]


DDP_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from pathlib import Path
from tests.test_train import run
run(Path({data!r}), Path({out!r}))
"""


def _torchrun_two(template: str, region: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``template`` (a script with {root}, {data}, {out}) as 2 gloo processes under torchrun
    writing into ``tmp_path/m``; asserts it succeeded."""
    script = tmp_path / "ddp.py"
    script.write_text(template.format(root=str(ROOT), data=str(region), out=str(tmp_path / "m")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    res = subprocess.run(cmd, cwd=ROOT, env=env, check=False, timeout=600, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def test_ddp_two_gloo_processes(region, tmp_path):
    _torchrun_two(DDP_SCRIPT, region, tmp_path)
    model, meta = load_checkpoint(tmp_path / "m" / "best.pt")  # loads in one process
    assert meta["config_digest"] == "d1" and 0 <= meta["metrics"]["iou"]["building"] <= 1
    hist = read_checkpoint(tmp_path / "m" / "last.pt")["train_state"]["history"]
    assert len(hist) == SPEC.epochs
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_nan_loss_keeps_the_last_good_checkpoint(region, tmp_path):
    torch.set_num_threads(1)
    run(region, tmp_path / "m", replace(SPEC, epochs=1))
    before = (tmp_path / "m" / "last.pt").read_bytes()
    bad = {"mean": [0.5, 0.5, 0.5], "std": [0.0, 0.0, 0.0]}  # division by zero: inf inputs, NaN loss
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 2.*last\.pt keeps the last good epoch"):
        run(region, tmp_path / "m", replace(SPEC, epochs=2), stats=bad)
    assert (tmp_path / "m" / "last.pt").read_bytes() == before
    # a checkpoint from another config is kept and named
    with pytest.raises(TrainingError, match=r"checkpoint of another config.*it is kept"):
        run(region, tmp_path / "m", replace(SPEC, epochs=2), digest="other")
    assert (tmp_path / "m" / "last.pt").read_bytes() == before


def test_empty_split_and_no_positive_pixel(tmp_path):
    write_region(tmp_path / "empty", n=2, empty=True)
    with pytest.raises(TrainingError, match="no training tile has a pixel of any class"):
        run(tmp_path / "empty", tmp_path / "m")
    train, val, band = datasets(tmp_path / "empty")
    train.rows = []
    with pytest.raises(TrainingError, match="training split is empty"):
        fit(SPEC, MODEL, train, val, tmp_path / "m", RunInfo(CLASSES, band, 64, "d"),
            FitOptions(device=torch.device("cpu")))


def test_out_of_memory_suggests_a_batch_size(region, tmp_path, monkeypatch):
    import pipeline.model.train as train_mod

    class Oom(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_mod, "build_model", lambda spec: Oom())
    with pytest.raises(TrainingError, match=r"batch_size = 4; set batch_size = 2"):
        run(region, tmp_path / "m")
    assert not (tmp_path / "m" / "last.pt").exists()


def test_luigi_split_and_train(tmp_path, town_pbf, monkeypatch):
    import luigi

    from pipeline.core.manifests import read_manifest
    from tasks.train import TrainModel
    cfg = _town_config(tmp_path, town_pbf, epochs=1, batch_size=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    reports: list[tuple[int, int, str]] = []
    monkeypatch.setattr(TrainModel, "progress", lambda self, done, total, what: reports.append((done, total, what)))
    res = luigi.build([TrainModel(config=str(cfg))], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    # the scheduler hears of every epoch, with its loss and validation mIoU
    assert reports[0][:2] == (0, 1) and reports[-1][:2] == (1, 1), reports
    assert re.fullmatch(r"training \(loss \d\.\d{4}, val mIoU \d\.\d{3}\), epoch", reports[-1][2]), reports
    data = tmp_path / "data"
    assert (data / "split.csv").read_text().startswith("z,x,y,split,image,mask,labelled")
    m = read_manifest(data / "_manifests" / "train.json")
    assert m["epochs"] == 1 and set(m["files"]) == {"best.pt", "last.pt", "metrics.csv"}
    _, meta = load_checkpoint(data / "model" / "best.pt")
    assert meta["tile_size"] == 64 and meta["scale"] == 0.25
    assert [c["name"] for c in meta["classes"]] == ["building", "road", "park"]
    assert TrainModel(config=str(cfg)).complete()


def test_luigi_train_with_torchrun(tmp_path, town_pbf, monkeypatch):
    """``[train_run] processes = 2``: TrainModel trains through torchrun (gloo on CPU) and reports
    the epochs its trainers finish; the model is the one the single-process path would load."""
    import luigi

    from pipeline.core.manifests import read_manifest
    from tasks.train import TrainModel
    from tests.luigi_settings import luigi_settings
    cfg = _town_config(tmp_path, town_pbf, epochs=2, batch_size=2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(TrainModel, "poll_s", 0.2)
    reports: list[tuple[int, int, str]] = []
    monkeypatch.setattr(TrainModel, "progress", lambda self, done, total, what: reports.append((done, total, what)))
    with luigi_settings("train_run", processes=2, device="cpu", workers=0):
        res = luigi.build([TrainModel(config=str(cfg))], local_scheduler=True, detailed_summary=True,
                          log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    assert ("training (2 processes), epoch" in {r[2] for r in reports}) and (2, 2) in {r[:2] for r in reports}
    hist = read_checkpoint(tmp_path / "data" / "model" / "last.pt")["train_state"]["history"]
    assert len(hist) == 2 and read_manifest(tmp_path / "data" / "_manifests" / "train.json")["epochs"] == 2


def test_cross_fit_predicts_the_training_tiles_with_a_model_that_never_saw_them(tmp_path, town_pbf, monkeypatch):
    """``[train] cross_fit``: a second model (model/cross/) trains on the validation tiles and
    predicts the training tiles; every tile then counts as held out for the review queue."""
    import csv

    import luigi

    from pipeline.config.region import load_config
    from pipeline.core.manifests import read_manifest
    from pipeline.model.split import read_split_csv
    from pipeline.model.train_run import part_rows
    from pipeline.review.review import held_out_tiles
    from tasks.predict import PredictAll
    from tasks.train import TrainModel

    cfg = _town_config(tmp_path, town_pbf, epochs=1, batch_size=4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    res = luigi.build([TrainModel(config=str(cfg))], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    data = tmp_path / "data"
    main = (data / "model" / "best.pt").read_bytes()
    # turned on later: only the second model trains (cross_fit is no part of the main model's digest)
    cfg.write_text(cfg.read_text() + "cross_fit = true\n")
    assert not TrainModel(config=str(cfg)).complete()
    res = luigi.build([PredictAll(config=str(cfg))], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    assert (data / "model" / "best.pt").read_bytes() == main
    m = read_manifest(data / "_manifests" / "train.json")
    assert {"cross/best.pt", "cross/last.pt", "best.pt"} <= set(m["files"]) and m["cross"]["epochs"] == 1
    _, meta = load_checkpoint(data / "model" / "cross" / "best.pt")
    assert meta["tile_size"] == 64
    rows = read_split_csv(data / "split.csv")
    trained, validated = part_rows(rows, "cross")
    assert {r.split for r in trained} == {"val"} and {r.split for r in validated} == {"train"}
    with open(data / "split.csv", newline="") as fh:
        train_tiles = {(int(r["x"]), int(r["y"])) for r in csv.DictReader(fh) if r["split"] == "train"}
    shards = [read_manifest(p) for p in sorted((data / "predictions" / "_shards").glob("*.json"))]
    assert sum(s.get("cross_tiles", 0) for s in shards) == len(train_tiles) > 0
    region = load_config(cfg)
    tiles = {(int(r.x), int(r.y)) for r in rows}
    assert held_out_tiles(region, tiles) == tiles  # every tile predicted by a model that never trained on it


def _town_config(tmp_path: Path, town_pbf: Path, epochs: int, batch_size: int, more: str = "",
                 name: str = "town", data: str = "data", seed: int = 5) -> Path:
    """The test town's config (``tmp_path/<name>.toml``, data in ``tmp_path/<data>``) with a raster
    orthophoto (noise ``seed``), a val split and a tiny [train] section (``more`` appended to it)."""
    from tests.tileserver import write_test_geotiff
    from tests.town import write_town_config

    tif = write_test_geotiff(tmp_path / f"{name}-ortho.tif", seed=seed, size_px=600, res_m=1.2, crs="EPSG:3857",
                             origin=_town_origin())
    return write_town_config(tmp_path / f"{name}.toml", town_pbf, tmp_path / data, zoom=17, shard_zoom=15,
                             extra=textwrap.dedent(f"""
        [imagery]
        source = "raster"
        paths = ["{tif}"]
        [split]
        block_zoom = 17
        val_fraction = 0.3
        test_fraction = 0.0
        [train]
        encoder = "resnet18"
        epochs = {epochs}
        batch_size = {batch_size}
        scale = 0.25
        """) + more)


def _town_origin() -> tuple[float, float]:
    import math

    from tests.pbf_fixtures import ORIGIN

    r = 6378137.0
    ox = math.radians(ORIGIN[0]) * r
    oy = math.log(math.tan(math.pi / 4 + math.radians(ORIGIN[1]) / 2)) * r
    return ox - 40, oy + 760


def test_schedule_is_torch_one_cycle_and_can_be_laid_out_again():
    from pipeline.model.schedule import Schedule

    for total, warm in ((100, 0.1), (37, 0.15)):
        o1 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        o2 = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        ref = torch.optim.lr_scheduler.OneCycleLR(o1, max_lr=3e-3, total_steps=total, pct_start=warm,
                                                  div_factor=25.0, final_div_factor=1e3)
        ours = Schedule(o2, replace(SPEC, lr=3e-3, warmup=warm), total)
        for _ in range(total - 1):
            assert o1.param_groups[0]["lr"] == pytest.approx(o2.param_groups[0]["lr"], rel=1e-12)
            assert o1.param_groups[0]["betas"] == pytest.approx(o2.param_groups[0]["betas"], rel=1e-12)
            o1.step()
            ref.step()
            ours.step()
    # laid out for fewer steps half way: it anneals to the end of the new layout
    o = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    s = Schedule(o, replace(SPEC, lr=1e-3, warmup=0.1), 1000)
    for _ in range(20):
        s.step()
    s.relayout(40)
    for _ in range(20):
        s.step()
    assert o.param_groups[0]["lr"] == pytest.approx(1e-3 / 25e3)
    assert s.state_dict() == {"n": 40, "total": 40, "kind": "onecycle"}


def test_budget_steps():
    from pipeline.model.schedule import budget_steps

    spec = replace(SPEC, epochs=50, max_minutes=10.0)
    assert budget_steps(spec, 10, 0, 0.0, 6.0, 0.0) == 100  # 100 steps of 6 s fill 600 s
    assert budget_steps(spec, 10, 0, 0.0, 7.0, 0.0) == 85  # part way through the 9th epoch
    assert budget_steps(spec, 10, 0, 0.0, 5.0, 50.0) == 55  # 275 s, 5 validations of 50 s on the way, the last
    assert budget_steps(spec, 1000, 0, 0.0, 1.0, 0.0) == 600  # an epoch longer than the budget is cut
    assert budget_steps(spec, 10, 30, 300.0, 10.0, 0.0) == 60
    assert budget_steps(spec, 10, 70, 700.0, 10.0, 0.0) == 70  # spent: no more
    assert budget_steps(spec, 10, 0, 0.0, 0.01, 0.0) == 500  # never more than [train] epochs
    assert budget_steps(replace(spec, max_minutes=0.0), 10, 30, 1e9, 1.0, 0.0) == 500  # no budget


def _count_writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """(file name, epoch) of every checkpoint written, and ("training.png", rows) of each plot."""
    import pipeline.model.network as model_mod
    import pipeline.model.trainlog as trainlog_mod

    writes: list[tuple[str, int]] = []
    write, plot = model_mod.write_checkpoint, trainlog_mod.write_plot

    def counted_write(path, blob):
        writes.append((Path(path).name, blob["meta"]["metrics"]["epoch"]))
        write(path, blob)

    def counted_plot(path, rows):
        writes.append((Path(path).name, len(rows)))
        return plot(path, rows)

    monkeypatch.setattr(model_mod, "write_checkpoint", counted_write)
    monkeypatch.setattr(trainlog_mod, "write_plot", counted_plot)
    return writes


def test_last_pt_every_n_epochs_best_pt_on_improvement_plot_at_the_end(region, tmp_path, monkeypatch):
    """last.pt after the first epoch, every checkpoint_epochs and at the end (not each epoch);
    best.pt only with a better epoch since the last write; one plot; validation every val_every
    epochs and on the last; a kill still resumes (from the last write) to the same weights."""
    torch.set_num_threads(1)
    writes = _count_writes(monkeypatch)
    spec = replace(SPEC, epochs=5, checkpoint_minutes=1e6, checkpoint_epochs=3, val_every=2)
    hist = run(region, tmp_path / "m", spec)
    rows = hist.rows  # type: ignore[attr-defined]
    lasts = [e for n, e in writes if n == "last.pt"]
    assert lasts == [1, 3, 5], writes
    assert [n for n, _ in writes].count("training.png") == 1 and ("training.png", 5) in writes
    validated = [r["epoch"] for r in rows if "miou" in r]
    assert validated == [2, 4, 5] and all(r["val_seconds"] > 0 for r in rows if "miou" in r)
    bests = [e for n, e in writes if n == "best.pt"]
    assert set(bests) <= set(validated) and len(bests) <= 2  # at most one per write of last.pt after epoch 1
    _, best_meta = load_checkpoint(tmp_path / "m" / "best.pt")
    assert best_meta["metrics"]["epoch"] == hist.best_epoch  # type: ignore[attr-defined]
    state = read_checkpoint(tmp_path / "m" / "last.pt")["train_state"]
    assert state["best_epoch"] == hist.best_epoch and state["elapsed_s"] > 0  # type: ignore[attr-defined]
    assert len((tmp_path / "m" / "metrics.csv").read_text().splitlines()) == 6
    # checkpoint_* are operational: no part of the digest
    from pipeline.core.stages import normalise

    assert "checkpoint_minutes" not in normalise(spec) and normalise(spec)["val_every"] == 2


def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A fake training clock (each look at it is one second); returns the learning rates stepped."""
    import itertools

    import pipeline.model.train as train_mod
    from pipeline.model.schedule import Schedule

    ticks = itertools.count()
    monkeypatch.setattr(train_mod, "_clock", lambda: float(next(ticks)))
    lrs: list[float] = []
    step = Schedule.step

    def logged(self: Schedule) -> None:
        step(self)
        lrs.append(self.at(self.n)[0])

    monkeypatch.setattr(Schedule, "step", logged)
    return lrs


def test_time_budget_stops_on_time_and_anneals(region, tmp_path, monkeypatch):
    """``max_minutes``: the schedule is laid out for the steps that fit (a fake clock: each look
    at it is one second), the run stops when they are done, within the budget, with an annealed
    learning rate, keeps best.pt, and a rerun trains no more."""
    torch.set_num_threads(1)
    lrs = _fake_clock(monkeypatch)
    slow_step = _slow_steps(10)  # a step takes 10 s, more than the rest of an epoch
    spec = replace(SPEC, epochs=100, max_minutes=2, checkpoint_minutes=1e6)
    hist = run(region, tmp_path / "m", spec, on_step=slow_step)
    rows = hist.rows  # type: ignore[attr-defined]
    assert 2 <= len(rows) < 20, [r["elapsed_s"] for r in rows]
    assert 100 <= rows[-1]["elapsed_s"] <= 125, [r["elapsed_s"] for r in rows]  # on time (a look or two over)
    assert rows[-1]["lr"] < spec.lr / 1000  # annealed, although 100 epochs were allowed
    assert max(lrs) > 0.5 * spec.lr  # and it came near its peak on the way (2 steps an epoch here)
    assert "miou" in rows[-1] and (tmp_path / "m" / "best.pt").is_file()
    again = run(region, tmp_path / "m", spec, on_step=slow_step)
    assert len(again.rows) == len(rows)  # type: ignore[attr-defined]


def _slow_steps(seconds: int) -> Callable[[int, int], None]:
    """A step hook that makes each step of the fake clock (:func:`_fake_clock`) take ``seconds``."""
    import pipeline.model.train as train_mod

    def hook(epoch: int, step: int) -> None:
        for _ in range(seconds - 1):
            train_mod._clock()
    return hook


def test_time_budget_shorter_than_an_epoch_cuts_it(region, tmp_path, monkeypatch):
    """One epoch longer than the whole budget (a 25 km² region): the epoch is cut when the steps
    that fit are done, annealed, validated and saved; before, the run went on to the epoch's end."""
    torch.set_num_threads(1)
    lrs = _fake_clock(monkeypatch)
    plain = run(region, tmp_path / "p", replace(SPEC, epochs=1, batch_size=1, augment=False),
                on_step=_slow_steps(3))
    steps = len(lrs)
    lrs.clear()
    spec = replace(SPEC, epochs=1, batch_size=1, augment=False, max_minutes=0.25, checkpoint_minutes=1e6)
    hist = run(region, tmp_path / "m", spec, on_step=_slow_steps(3))
    rows = hist.rows  # type: ignore[attr-defined]
    assert len(rows) == 1 and "miou" in rows[0] and (tmp_path / "m" / "best.pt").is_file()
    assert 2 <= len(lrs) < steps, (len(lrs), steps)  # cut part way
    assert plain.rows[0]["elapsed_s"] >= 20, plain.rows[0]["elapsed_s"]  # type: ignore[attr-defined]
    assert rows[0]["elapsed_s"] <= 17, rows[0]["elapsed_s"]  # on time: 15 s and the looks of validating
    assert lrs[-1] < spec.lr / 1000  # annealed by the cut


def test_validation_share_hint():
    from tasks.train import _validation_hint

    hint = _validation_hint({"val_seconds": 5.0, "seconds": 5.0, "epoch": 1}, 1)
    assert hint == ("validation takes 50% of the training time (5.0 s against 5.0 s an epoch); [train] val_every = 3 "
                    "would bound it to about 25%")
    assert _validation_hint({"val_seconds": 5.0, "seconds": 5.0, "epoch": 3}, 3) is None  # 5 s in 20 s
    assert _validation_hint({"val_seconds": 1.0, "seconds": 9.0, "epoch": 1}, 1) is None
    assert _validation_hint({"seconds": 9.0, "epoch": 2}, 2) is None  # not validated


def test_few_steps_hint():
    """4 tiles at batch 4 for 30 epochs: 30 steps (the fine-tune that did not move, philippines)."""
    from tasks.train import _steps_hint

    row = {"epoch": 1, "images_per_s": 20.0, "seconds": 0.2}
    assert _steps_hint(row, 4, 30) == ("only 30 optimiser steps in all (4 training tiles at batch_size = 4, 30 "
                                       "epochs): too few to move a model far; [train] epochs = 150 gives 150 "
                                       "(measured: docs/notes/i19-travel.md)")
    assert _steps_hint(row, 4, 150) is None
    assert _steps_hint({"epoch": 1, "images_per_s": 20.0, "seconds": 2.85}, 4, 30) is None  # 57 tiles: 450 steps
    assert _steps_hint({"epoch": 1, "seconds": 0.2}, 4, 30) is None


DDP_BUDGET_SCRIPT = """
import itertools, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from dataclasses import replace
from pathlib import Path
import pipeline.model.train as train_mod
from tests.test_train import SPEC, run
ticks = itertools.count()  # a fake clock, one second a look: rank 0 looks more often (it writes)
train_mod._clock = lambda: float(next(ticks))
spec = replace(SPEC, epochs=50, max_minutes=0.5, freeze_encoder_epochs=1, checkpoint_epochs=1)
hist = run(Path({data!r}), Path({out!r}), spec)
print("epochs", len(hist.rows))
"""


def test_ddp_time_budget_and_frozen_encoder_agree_across_ranks(region, tmp_path):
    """Under DDP rank 0's clock decides the schedule's layout and the stop (the ranks would
    otherwise part ways and hang); the frozen encoder's gradients are dropped on every rank."""
    res = _torchrun_two(DDP_BUDGET_SCRIPT, region, tmp_path)
    counts = re.findall(r"epochs (\d+)", res.stdout)
    assert len(counts) == 2 and counts[0] == counts[1] and 1 < int(counts[0]) < 50, res.stdout
    blob = read_checkpoint(tmp_path / "m" / "last.pt")
    assert 20 <= blob["train_state"]["elapsed_s"] <= 34  # on time (rank 0: a look or two over)
    assert blob["train_state"]["history"][-1]["lr"] < SPEC.lr / 1000
