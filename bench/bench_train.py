"""Training benchmarks (``make bench``): images/s of training and of the data loader alone.

* CPU, 256-px generated tiles (PNG on disk, read, augmented with flips/rotations/scale and
  colour jitter, normalised): the data loader alone (images/s, 0 and 2 workers) and training
  steps of the default model (U-Net / ResNet-34, batch 8, CE + Dice, AdamW), torch on 1 thread
  and on all cores; peak resident memory of each phase.
* CUDA when present: the default model at 512 px with AMP (bf16/fp16), channels-last, 8 loader
  workers: images/s, peak GPU memory and GPU utilisation sampled with nvidia-smi.

* ``--compare``: ``pipeline.model.train.fit`` against the plain loop a competent user would write with
  the same libraries (smp U-Net, AdamW + one-cycle, CE + Dice, the same albumentations recipe,
  Pillow reads, a validation pass with a confusion matrix every epoch, ``last.pt`` = weights +
  optimiser every epoch), each a fresh process on the same generated tiles, interleaved
  (``--runs`` pairs; ``--before DIR`` adds a third job: ``fit`` of another checkout, e.g. a
  ``git worktree`` of an older commit; ``--plain-end`` one more: the plain loop writing
  ``last.pt`` only after its last epoch, the loop alone). Printed per job: the median seconds per epoch (epochs
  2.., validation and checkpoints included), the start-up (ready to train -> first step done;
  imports of torch and smp excluded, the same for both) and the whole process; and the ratios to
  the plain loop (each run against the plain run beside it, then the median), of wall time and of
  CPU time per epoch (steadier where other work shares the machine). The machine may be shared:
  only the ratios of one invocation count.

Run: ``python -m bench.bench_train [--quick]`` or ``python -m bench.bench_train --compare [--runs 3]``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import report, run_phase


def make_region(folder: Path, n: int, size: int) -> None:
    """An n x n grid of generated tiles (images, masks, manifests) under ``folder``."""
    from tests.train_fixtures import write_region

    write_region(folder, n=n, size=size, seed=0)


def _datasets(folder: Path, aug: bool, size: int) -> Any:
    from pipeline.config.train import SplitSpec, TrainSpec
    from pipeline.model.dataset import TileDataset, build_augment
    from pipeline.model.split import make_split

    rows, stats = make_split(folder, SplitSpec(val_fraction=0.0, test_fraction=0.0), 18)
    return TileDataset(folder, rows, stats["band_stats"], 1.0, build_augment(TrainSpec(), 3) if aug else None)


def loader_rate(folder: str, workers: int, batches: int) -> float:
    """Images/s of the DataLoader alone (read + augment + normalise + collate)."""
    from torch.utils.data import DataLoader

    from pipeline.model.dataset import EpochSampler, collate

    ds = _datasets(Path(folder), True, 256)
    dl = DataLoader(ds, batch_size=8, sampler=EpochSampler(len(ds), 0), num_workers=workers, collate_fn=collate)
    seen, t0 = 0, 0.0
    for epoch in range(100):
        dl.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        for i, b in enumerate(dl):
            if epoch == 0 and i == 0:
                t0 = time.perf_counter()
                continue
            seen += len(b["image"])
            if seen >= batches * 8:
                return seen / (time.perf_counter() - t0)
    return seen / (time.perf_counter() - t0)


def train_rate(threads: int, size: int, steps: int, device: str = "cpu", amp: bool = False) -> dict[str, float]:
    """Images/s of training steps of the default model on random batches (data excluded)."""
    import torch

    from pipeline.model.losses import build_loss
    from pipeline.model.network import ModelSpec, build_model

    torch.set_num_threads(threads)
    dev = torch.device(device)
    model = build_model(ModelSpec(classes=3)).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = build_loss((("ce", 1.0), ("dice", 1.0)))
    bs = 8 if dev.type == "cpu" else 32
    x = torch.randn(bs, 3, size, size, device=dev)
    y = torch.randint(0, 3, (bs, size, size), device=dev)
    dtype = torch.bfloat16 if dev.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16

    def step() -> None:
        with torch.autocast(dev.type, dtype=dtype, enabled=amp):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    out = {"images_per_s": steps * bs / (time.perf_counter() - t0)}
    if dev.type == "cuda":
        out["gpu_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def gpu_utilisation(stop: threading.Event, samples: list[float]) -> None:
    """Sample nvidia-smi utilisation.gpu (%) every 0.2 s until ``stop``."""
    while not stop.is_set():
        res = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, check=False)
        if res.returncode == 0 and res.stdout.strip():
            samples.append(float(res.stdout.split()[0]))
        time.sleep(0.2)


def _split(folder: Path) -> tuple[list[Any], dict[str, Any]]:
    from pipeline.config.train import SplitSpec
    from pipeline.model.split import make_split
    from tests.train_fixtures import Z

    return make_split(folder, SplitSpec(block_zoom=Z, val_fraction=0.15, test_fraction=0.0, seed=1), Z)


def job_osmsat(folder: Path, out: Path, epochs: int) -> dict[str, Any]:
    """``pipeline.model.train.fit`` with its defaults (U-Net / ResNet-34, batch 8, one-cycle, CE + Dice)."""
    import torch

    from pipeline.config.train import TrainSpec
    from pipeline.model.dataset import TileDataset, build_augment
    from pipeline.model.train import FitOptions, RunInfo, fit
    from pipeline.model.train_run import ModelSpec

    rows, stats = _split(folder)
    spec = TrainSpec(epochs=epochs, scale_jitter=0.15, color_jitter=0.2)
    band = stats["band_stats"]
    train = TileDataset(folder, [r for r in rows if r.split == "train"], band, 1.0, build_augment(spec, 3))
    val = TileDataset(folder, [r for r in rows if r.split == "val"], band, 1.0)
    marks: dict[str, Any] = {"epochs": []}

    def step(epoch: int, i: int) -> None:
        marks.setdefault("first_step", time.perf_counter())

    marks["ready"] = time.perf_counter()
    fit(spec, ModelSpec(classes=2), train, val, out, RunInfo(({"name": "building", "id": 1},), band, 0, "bench"),
        FitOptions(device=torch.device("cpu"), progress=False, on_step=step,
                   on_epoch=lambda row: marks["epochs"].append((time.perf_counter(), time.process_time()))))
    marks["end"] = (time.perf_counter(), time.process_time())
    return marks


def job_plain(folder: Path, out: Path, epochs: int, save_every_epoch: bool = True) -> dict[str, Any]:
    """The plain loop: what a user writes with torch, smp, albumentations and Pillow (``last.pt``
    every epoch, or with ``save_every_epoch`` False only after the last: the loop alone)."""
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from pipeline.config.train import TrainSpec
    from pipeline.model.dataset import build_augment

    rows, stats = _split(folder)
    mean = np.asarray(stats["band_stats"]["mean"], np.float32)
    std = np.asarray(stats["band_stats"]["std"], np.float32)
    aug = build_augment(TrainSpec(scale_jitter=0.15, color_jitter=0.2), 3)

    class Tiles(Dataset[tuple[Any, Any]]):
        def __init__(self, split: str, train: bool) -> None:
            self.items = [(folder / r.image, folder / r.mask) for r in rows if r.split == split]
            self.train = train

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            img = np.asarray(Image.open(self.items[i][0]).convert("RGB"))
            mask = np.asarray(Image.open(self.items[i][1]))
            if self.train:
                o = aug(image=img, mask=mask)
                img, mask = o["image"], o["mask"]
            x = ((img.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)
            return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(mask.astype(np.int64))

    marks: dict[str, Any] = {"epochs": [], "ready": time.perf_counter()}
    torch.manual_seed(0)
    train_dl = DataLoader(Tiles("train", True), batch_size=8, shuffle=True)
    val_dl = DataLoader(Tiles("val", False), batch_size=8)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=3, classes=2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=epochs * len(train_dl), pct_start=0.1)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    dice = smp.losses.DiceLoss("multiclass", ignore_index=255)
    out.mkdir(parents=True, exist_ok=True)
    for _ in range(epochs):
        model.train()
        for x, y in train_dl:
            logits = model(x)
            loss = ce(logits, y) + dice(logits, y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            marks.setdefault("first_step", time.perf_counter())
        model.eval()
        cm = torch.zeros(4, dtype=torch.int64)
        with torch.no_grad():
            for x, y in val_dl:
                pred = model(x).argmax(1)
                ok = y != 255
                cm += torch.bincount(y[ok] * 2 + pred[ok], minlength=4)
        iou = float(cm[3]) / max(1, int(cm[3] + cm[1] + cm[2]))
        print(f"iou {iou:.3f}", file=sys.stderr)
        if save_every_epoch or len(marks["epochs"]) == epochs - 1:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, out / "last.pt")
        marks["epochs"].append((time.perf_counter(), time.process_time()))
    marks["end"] = (time.perf_counter(), time.process_time())
    return marks


def _job_main(job: str, folder: str, out: str, epochs: int) -> None:
    import segmentation_models_pytorch  # noqa: F401 - imported by both jobs: outside the timings
    import torch

    torch.set_num_threads(1)
    jobs = {"osmsat": job_osmsat, "plain": job_plain,
            "plain_end": lambda f, o, e: job_plain(f, o, e, save_every_epoch=False)}
    marks = jobs[job](Path(folder), Path(out), epochs)
    ends = marks["epochs"]
    print(json.dumps({"startup_s": marks["first_step"] - marks["ready"],
                      "epoch_s": [b[0] - a[0] for a, b in itertools.pairwise(ends)],
                      "epoch_cpu_s": [b[1] - a[1] for a, b in itertools.pairwise(ends)],
                      "loop_s": marks["end"][0] - marks["ready"]}))


def compare(runs: int, epochs: int, grid: int, size: int, before: str | None, plain_end: bool = False) -> None:
    """Interleaved fresh processes of each job; medians and ratios to the plain loop."""
    root = Path(__file__).resolve().parents[1]
    jobs = [("plain", root), ("osmsat", root)] + ([("before", Path(before))] if before else []) \
        + ([("plain_end", root)] if plain_end else [])
    got: dict[str, list[dict[str, float]]] = {name: [] for name, _ in jobs}
    with tempfile.TemporaryDirectory() as tmp:
        make_region(Path(tmp) / "tiles", grid, size)
        for r in range(runs):
            for name, where in jobs if r % 2 == 0 else jobs[::-1]:
                out = Path(tmp) / f"{name}{r}"
                cmd = [sys.executable, str(root / "bench" / "bench_train.py"), "--job",
                       "osmsat" if name == "before" else name,
                       str(Path(tmp) / "tiles"), str(out), str(epochs)]
                env = {**os.environ, "PYTHONPATH": str(where), "OMP_NUM_THREADS": "1"}
                t0 = time.perf_counter()
                res = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, check=False)
                if res.returncode:
                    raise RuntimeError(f"{name}: {res.stderr[-2000:]}")
                rec = json.loads(res.stdout.strip().splitlines()[-1])
                rec["process_s"] = time.perf_counter() - t0
                rec["epoch_median_s"] = statistics.median(rec["epoch_s"])
                rec["epoch_cpu_median_s"] = statistics.median(rec["epoch_cpu_s"])
                got[name].append(rec)
                print(f"  run {r + 1} {name}: epoch {rec['epoch_median_s']:.2f} s "
                      f"(CPU {rec['epoch_cpu_median_s']:.2f} s),"
                      f" start-up {rec['startup_s']:.2f} s, training {rec['loop_s']:.1f} s,"
                      f" process {rec['process_s']:.1f} s", flush=True)
    keys = ("epoch_median_s", "epoch_cpu_median_s", "startup_s", "loop_s", "process_s")
    med = {n: {k: statistics.median(x[k] for x in recs) for k in keys} for n, recs in got.items()}
    # the ratio of each run to the plain run next to it (load drifts), then the median
    pair = {n: {k: statistics.median(a[k] / b[k] for a, b in zip(recs, got["plain"])) for k in keys}
            for n, recs in got.items()}
    for n, m in med.items():
        report(f"train {n} vs plain loop, {grid * grid} tiles at {size} px, {epochs} epochs, {runs} runs",
               pair[n]["epoch_median_s"], "x per epoch (wall)", per_epoch_ratio=f"{pair[n]['epoch_median_s']:.3f}",
               per_epoch_cpu_ratio=f"{pair[n]['epoch_cpu_median_s']:.3f}",
               training_ratio=f"{pair[n]['loop_s']:.3f}", process_ratio=f"{pair[n]['process_s']:.3f}",
               epoch_s=f"{m['epoch_median_s']:.2f}", startup_s=f"{m['startup_s']:.2f}",
               process_s=f"{m['process_s']:.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--compare", action="store_true", help="fit against the plain loop, whole processes")
    ap.add_argument("--runs", type=int, default=3, help="--compare: runs of each job (interleaved)")
    ap.add_argument("--epochs", type=int, default=4, help="--compare: epochs of each run")
    ap.add_argument("--grid", type=int, default=6, help="--compare: tiles = grid x grid")
    ap.add_argument("--size", type=int, default=128, help="--compare: tile side in pixels")
    ap.add_argument("--before", default=None, help="--compare: another checkout whose fit runs as a third job")
    ap.add_argument("--plain-end", action="store_true",
                    help="--compare: also the plain loop writing last.pt only after its last epoch")
    ap.add_argument("--job", nargs=4, metavar=("JOB", "TILES", "OUT", "EPOCHS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.job:
        _job_main(args.job[0], args.job[1], args.job[2], int(args.job[3]))
        return
    if args.compare:
        compare(args.runs, args.epochs, args.grid, args.size, args.before, args.plain_end)
        return
    steps = 3 if args.quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        make_region(Path(tmp), 6, 256)
        for workers in (0, 2):
            rate, _, peak = run_phase(loader_rate, tmp, workers, 8 if args.quick else 30)
            report(f"train data loader, 256 px, augmented, {workers} workers", rate, "images/s", peak_mb=f"{peak:.0f}")
    for threads in sorted({1, os.cpu_count() or 1}):
        res, _, peak = run_phase(train_rate, threads, 256, steps)
        report(f"train step CPU U-Net/ResNet-34 256 px batch 8, {threads} thread(s)", res["images_per_s"],
               "images/s", peak_mb=f"{peak:.0f}")
    import torch

    if torch.cuda.is_available():
        samples: list[float] = []
        stop = threading.Event()
        th = threading.Thread(target=gpu_utilisation, args=(stop, samples), daemon=True)
        th.start()
        res, _, _ = run_phase(train_rate, 8, 512, 50, "cuda", True)
        stop.set()
        th.join()
        busy = sum(samples) / len(samples) if samples else float("nan")
        report("train step CUDA U-Net/ResNet-34 512 px batch 32 AMP", res["images_per_s"], "images/s",
               gpu_mem_gb=f"{res['gpu_mem_gb']:.1f}", gpu_util_pct=f"{busy:.0f}")


if __name__ == "__main__":
    main()
