"""Training benchmarks (``make bench``): images/s of training and of the data loader alone.

* CPU, 256-px generated tiles (PNG on disk, read, augmented with flips/rotations/scale and
  colour jitter, normalised): the data loader alone (images/s, 0 and 2 workers) and training
  steps of the default model (U-Net / ResNet-34, batch 8, CE + Dice, AdamW), torch on 1 thread
  and on all cores; peak resident memory of each phase.
* CUDA when present: the default model at 512 px with AMP (bf16/fp16), channels-last, 8 loader
  workers: images/s, peak GPU memory and GPU utilisation sampled with nvidia-smi.

Run: ``python -m bench.bench_train [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
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
    from pipeline.dataset import TileDataset, build_augment
    from pipeline.specs import SplitSpec, TrainSpec
    from pipeline.split import make_split

    rows, stats = make_split(folder, SplitSpec(val_fraction=0.0, test_fraction=0.0), 18)
    return TileDataset(folder, rows, stats["band_stats"], 1.0, build_augment(TrainSpec(), 3) if aug else None)


def loader_rate(folder: str, workers: int, batches: int) -> float:
    """Images/s of the DataLoader alone (read + augment + normalise + collate)."""
    from torch.utils.data import DataLoader

    from pipeline.dataset import EpochSampler, collate

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

    from pipeline.model import ModelSpec, build_model
    from pipeline.train import build_loss

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    args = ap.parse_args()
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
