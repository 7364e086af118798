"""Training: losses, optimiser and schedule, the epoch loop with checkpoints, resume and DDP.

``fit`` trains a model on a train and a validation :class:`~pipeline.dataset.TileDataset` and
writes into ``out_dir``: ``last.pt`` (every epoch, with the full training state), ``best.pt``
(best validation mean IoU over the foreground classes), ``metrics.csv``, ``training.png`` and
TensorBoard events under ``tb/``. Importable with torch, smp, numpy and Pillow alone.

Multi-GPU / multi-node: start :mod:`pipeline.train_run` with ``torchrun``; ``fit`` joins the
process group that ``torchrun``'s environment describes (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from pipeline.dataset import EpochSampler, TileDataset, collate, sample_weights
from pipeline.device import pick_device
from pipeline.errors import ModelError, TrainingError
from pipeline.metrics import IGNORE, confusion, scores
from pipeline.model import ModelSpec, build_model, make_meta, read_checkpoint, save_checkpoint, unwrap
from pipeline.specs import TrainSpec

StepHook = Callable[[int, int], None]
EpochHook = Callable[[Mapping[str, Any]], None]


@dataclass
class History:
    """Per-epoch rows (``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``images_per_s``,
    ``seconds``, ``iou``/``precision``/``recall``/``f1`` per class, ``miou``) and the best epoch."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_miou: float = -1.0


def build_loss(losses: Sequence[tuple[str, float]], ignore_index: int = IGNORE,
               fold: torch.Tensor | None = None, n_main: int = 0) -> Callable[..., torch.Tensor]:
    """Weighted sum of ``ce``, ``dice``, ``lovasz``, ``focal`` (smp.losses, multiclass, logits in)
    with label ``ignore_index`` left out.

    With edge outputs (``fold``: target index -> class index, ``n_main``: background + classes),
    the multiclass loss sees the first ``n_main`` logits and the folded target (a building's
    edge is building), and each further logit is an independent edge channel (sigmoid) trained
    with binary cross-entropy + Dice on ``target == n_main + j``, so learning the thin edge never
    takes probability away from the footprint."""
    from segmentation_models_pytorch import losses as smp_losses

    makers: dict[str, Callable[[], torch.nn.Module]] = {
        "ce": lambda: torch.nn.CrossEntropyLoss(ignore_index=ignore_index),
        "dice": lambda: smp_losses.DiceLoss("multiclass", ignore_index=ignore_index),
        "lovasz": lambda: smp_losses.LovaszLoss("multiclass", ignore_index=ignore_index),
        "focal": lambda: smp_losses.FocalLoss("multiclass", ignore_index=ignore_index),
    }
    parts = [(makers[name](), w) for name, w in losses]

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum((w * fn(logits, target) for fn, w in parts), torch.zeros((), device=logits.device))

    if fold is None:
        return loss
    bce = smp_losses.SoftBCEWithLogitsLoss(ignore_index=ignore_index)
    dice = smp_losses.DiceLoss("binary", from_logits=True, ignore_index=ignore_index)

    def with_edges(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        main = loss(logits[:, :n_main], fold.to(target.device)[target])
        ignore = target == ignore_index
        for j in range(logits.shape[1] - n_main):
            t = torch.where(ignore, torch.full_like(target, ignore_index), (target == n_main + j).long())
            e = logits[:, n_main + j]
            main = main + bce(e, t.to(e.dtype)) + dice(e[:, None], t[:, None])
        return main

    return with_edges


def build_scheduler(opt: torch.optim.Optimizer, spec: TrainSpec, total_steps: int) -> Any:
    """Per-step LR schedule: one-cycle (warm-up share ``spec.warmup``), linear warm-up + cosine, or constant."""
    total_steps = max(1, total_steps)
    if spec.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=total_steps,
                                                   pct_start=max(spec.warmup, 1e-3), div_factor=25.0,
                                                   final_div_factor=1e3)
    warm = int(spec.warmup * total_steps)

    def factor(step: int) -> float:
        if spec.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total_steps - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size): joins torchrun's process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rng_state() -> dict[str, Any]:
    """Every RNG state, as tensors and plain values (``weights_only`` loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # type: ignore[misc,unused-ignore]
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                                       int(has_gauss), float(cached)]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class RunInfo:
    """What the checkpoint records besides weights: classes [{name, id}], band stats (pixel / 255
    units), tile size (pixels at the model input), the train stage's config digest and the input
    resampling factor ``scale`` (model pixels per image pixel)."""

    classes: tuple[Mapping[str, Any], ...]
    band_stats: Mapping[str, Sequence[float]]
    tile_size: int
    config_digest: str
    scale: float = 1.0
    edges: tuple[int, ...] = ()  # class ids with an edge output (pipeline.instances), after the classes


def _loader(ds: TileDataset, sampler: EpochSampler, batch: int, workers: int, pin: bool) -> DataLoader[Any]:
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin, persistent_workers=workers > 0, drop_last=False,
                      prefetch_factor=4 if workers > 0 else None)


def _check_inputs(train_ds: TileDataset) -> None:
    if len(train_ds) == 0:
        raise TrainingError(f"{train_ds.data_dir}: the training split is empty; lower [split] val_fraction and "
                            "test_fraction, or cover a larger region")
    if not any(r.labelled > 0 for r in train_ds.rows):
        raise TrainingError(f"{train_ds.data_dir}: no training tile has a pixel of any class (all background or "
                            "ignored); check the [[classes]] tags against the OSM data, or the region's bbox")


def _resume(path: Path, digest: str, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any,
            scaler: torch.amp.GradScaler, device: torch.device) -> tuple[int, History]:
    if not path.is_file():
        return 0, History()
    blob = read_checkpoint(path, map_location="cpu")
    got = blob["meta"].get("config_digest")
    if got != digest or "train_state" not in blob:
        raise TrainingError(f"{path}: checkpoint of another config (digest {got}, today's {digest}); it is kept. "
                            "Move or delete it to train afresh with today's config, or restore the old config "
                            "to resume it")
    unwrap(model).load_state_dict(blob["model"])
    ts = blob["train_state"]
    opt.load_state_dict(ts["optimizer"])
    sched.load_state_dict(ts["scheduler"])
    scaler.load_state_dict(ts["scaler"])
    set_rng_state(ts["rng"])
    hist = History([dict(r) for r in ts["history"]], int(ts["best_epoch"]), float(ts["best_miou"]))
    return int(ts["epoch"]) + 1, hist


def evaluate(model: torch.nn.Module, loader: DataLoader[Any], n_classes: int, device: torch.device,
             loss_fn: Callable[..., torch.Tensor] | None = None, amp: Any = None,
             fold: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(confusion matrix, mean loss) of ``model`` over ``loader`` (summed over DDP ranks). With
    ``fold`` (target index -> class index, 255 kept) an edge target counts as its class: the
    matrix is over the ``n_classes`` footprints (the softmax channels)."""
    model.eval()
    cm = torch.zeros(n_classes, n_classes, dtype=torch.int64)
    loss_sum, n = torch.zeros(()), torch.zeros(())
    with torch.no_grad():
        for batch in loader:
            x = batch["image"].to(device, non_blocking=True)
            y = batch["mask"].to(device, non_blocking=True)
            with amp if amp is not None else _NoAmp():
                logits = model(x)
            logits = logits.float()
            if loss_fn is not None:
                loss_sum += float(loss_fn(logits, y)) * len(x)
                n += len(x)
            pred = logits[:, :n_classes].argmax(1)  # edge channels (sigmoid) are not classes
            if fold is not None:
                y = fold.to(y.device)[y]
            cm += confusion(pred, y, n_classes)
    if dist.is_initialized():
        t = torch.cat([cm.flatten().double(), loss_sum.view(1).double(), n.view(1).double()]).to(device)
        dist.all_reduce(t)
        t = t.cpu()
        cm = t[:-2].round().to(torch.int64).reshape(n_classes, n_classes)
        loss_sum, n = t[-2], t[-1]
    return cm, float(loss_sum / n) if float(n) > 0 else math.nan


class _NoAmp:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: Any) -> None:
        return None


def _amp(spec: TrainSpec, device: torch.device) -> tuple[Any, torch.amp.GradScaler]:
    """(autocast context or None, grad scaler): bf16 where CUDA supports it, else fp16 with scaling."""
    if device.type != "cuda" or spec.amp == "off":
        return None, torch.amp.GradScaler("cpu", enabled=False)
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), torch.amp.GradScaler("cuda", enabled=False)
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda", enabled=True)


def fit(spec: TrainSpec, model_spec: ModelSpec, train_ds: TileDataset, val_ds: TileDataset, out_dir: str | Path,
        info: RunInfo, device: torch.device | None = None, workers: int = 0, progress: bool = True,
        on_step: StepHook | None = None, on_epoch: EpochHook | None = None) -> History:
    """Train (or resume from ``out_dir/last.pt``) for ``spec.epochs`` epochs; returns the history.

    Checkpoints are written atomically at the end of every epoch, so a killed run resumes from the
    last finished epoch and ends with the same weights as an uninterrupted one (CPU, same seed).
    ``on_step(epoch, step)`` is called after each optimiser step (tests use it to kill a run);
    ``on_epoch(row)`` after each epoch's checkpoint, with its ``metrics.csv`` row (progress reports)."""
    out = Path(out_dir)
    device = device or pick_device()
    rank, world = dist_setup(device)
    _check_inputs(train_ds)
    names = ["background"] + [str(c["name"]) for c in sorted(info.classes, key=lambda c: int(c["id"]))]
    n_classes = len(names)
    fold = _fold_table(info, n_classes)
    seed_everything(spec.seed)
    model = build_model(model_spec).to(device)
    if device.type == "cuda" and spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sampler = EpochSampler(len(train_ds), spec.seed, rank, world, weights=sample_weights(train_ds.rows,
                                                                                        spec.empty_tile_weight))
    steps_per_epoch = math.ceil(len(sampler) / spec.batch_size)
    sched = build_scheduler(opt, spec, steps_per_epoch * spec.epochs)
    amp, scaler = _amp(spec, device)
    start, hist = _resume(out / "last.pt", info.config_digest, model, opt, sched, scaler, device)
    if start >= spec.epochs:
        return hist
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if spec.compile and device.type == "cuda":
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    pin = device.type == "cuda"
    loader = _loader(train_ds, sampler, spec.batch_size, workers, pin)
    val_loader = _loader(val_ds, EpochSampler(len(val_ds), 0, rank, world, shuffle=False), spec.batch_size,
                         workers, pin)
    loss_fn = build_loss(spec.losses, fold=fold, n_main=n_classes)
    meta_base = make_meta(model_spec, info.classes, info.band_stats, info.tile_size, info.config_digest,
                          scale=info.scale, edges=info.edges)
    board = None
    if rank == 0:
        from pipeline.trainlog import Board

        board = Board(out / "tb")
    try:
        for epoch in range(start, spec.epochs):
            row = _train_epoch(train_model, loader, sampler, epoch, spec, opt, sched, scaler, amp, loss_fn,
                               device, out, progress and rank == 0, on_step)
            cm, val_loss = evaluate(train_model, val_loader, n_classes, device, loss_fn, amp, fold) if len(val_ds) \
                else (torch.zeros(n_classes, n_classes, dtype=torch.int64), math.nan)
            row.update(scores(cm, names) if len(val_ds) else {}, val_loss=val_loss)
            hist.rows.append(row)
            if rank == 0:
                _save_epoch(out, model, meta_base, row, hist, opt, sched, scaler, epoch, bool(len(val_ds)))
                if board is not None:
                    board.epoch(row)
                if on_epoch is not None:
                    on_epoch(row)
            if world > 1:
                dist.barrier()
    finally:
        if board is not None:
            board.close()
    return hist


def _fold_table(info: RunInfo, n_classes: int) -> torch.Tensor | None:
    """Target index -> class index (edge targets -> their class; 255 kept), or None without edges."""
    if not info.edges:
        return None
    ids = sorted(int(c["id"]) for c in info.classes)
    table = torch.arange(256, dtype=torch.int64)
    for j, cid in enumerate(sorted(info.edges)):
        table[n_classes + j] = 1 + ids.index(cid)
    return table


def _train_epoch(model: torch.nn.Module, loader: DataLoader[Any], sampler: EpochSampler, epoch: int,
                 spec: TrainSpec, opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler, amp: Any,
                 loss_fn: Callable[..., torch.Tensor], device: torch.device, out: Path, progress: bool,
                 on_step: StepHook | None) -> dict[str, Any]:
    sampler.set_epoch(epoch)
    model.train()
    total, seen, t0 = 0.0, 0, time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{spec.epochs}", unit="batch", leave=False,
                   disable=None)  # (no bar when stderr is not a terminal: logs stay readable)
    for step, batch in enumerate(loader):
        x = batch["image"].to(device, non_blocking=True)
        y = batch["mask"].to(device, non_blocking=True)
        if device.type == "cuda" and spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with amp if amp is not None else _NoAmp():
                logits = model(x)
            loss = loss_fn(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {float(loss)} at epoch {epoch + 1}, step {step + 1}; {out}/last.pt "
                                    f"keeps the last good epoch. Lower [train] lr (now {spec.lr}) or set "
                                    "grad_clip, then rerun to resume")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if spec.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            scaler.step(opt)
            scaler.update()
        except torch.OutOfMemoryError as exc:
            raise TrainingError(f"CUDA out of memory with [train] batch_size = {spec.batch_size}; set batch_size = "
                                f"{max(1, spec.batch_size // 2)} (or a smaller scale); {out}/last.pt keeps the "
                                "last good epoch") from exc
        sched.step()
        total += float(loss.detach()) * len(x)
        seen += len(x)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (time.perf_counter() - t0):.1f}")
        if on_step is not None:
            on_step(epoch, step)
    if bar is not None:
        bar.close()
    secs = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": total / max(1, seen), "lr": float(opt.param_groups[0]["lr"]),
            "images_per_s": seen / secs if secs > 0 else math.nan, "seconds": secs}


def _save_epoch(out: Path, model: torch.nn.Module, meta_base: Mapping[str, Any], row: Mapping[str, Any],
                hist: History, opt: torch.optim.Optimizer, sched: Any, scaler: torch.amp.GradScaler,
                epoch: int, has_val: bool) -> None:
    from pipeline.trainlog import write_csv, write_plot

    metrics = {k: row[k] for k in ("iou", "precision", "recall", "f1", "miou", "accuracy", "val_loss") if k in row}
    meta = {**meta_base, "metrics": {**metrics, "epoch": epoch + 1}}
    miou = float(row.get("miou", math.nan))
    better = not has_val or (not math.isnan(miou) and miou > hist.best_miou)
    if better:
        hist.best_epoch, hist.best_miou = epoch + 1, miou if has_val else -1.0
        save_checkpoint(out / "best.pt", model, meta)
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
             "rng": rng_state(), "epoch": epoch, "history": [dict(r) for r in hist.rows],
             "best_epoch": hist.best_epoch, "best_miou": hist.best_miou}
    save_checkpoint(out / "last.pt", model, meta, state)
    write_csv(out / "metrics.csv", hist.rows)
    write_plot(out / "training.png", hist.rows)


def check_spec_fits(model_spec: ModelSpec, bands: int) -> None:
    """Raise ModelError unless the model takes ``bands`` input channels."""
    if model_spec.in_channels != bands:
        raise ModelError(f"the model takes {model_spec.in_channels} bands, the images have {bands}")
