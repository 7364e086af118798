"""Training: the epoch loop, with losses, optimiser, schedule, validation and DDP.

``fit`` trains a model on a train and a validation :class:`~pipeline.model.dataset.TileDataset` and
writes into ``out_dir``: ``last.pt`` (every epoch, with the full training state), ``best.pt``
(best validation mean IoU over the foreground classes), ``metrics.csv``, ``training.png`` and
TensorBoard events under ``tb/``. Importable with torch, smp, numpy and Pillow alone.

What it writes and how a run resumes is :mod:`pipeline.model.train_checkpoints`; the time budget
(``[train] max_minutes``) and the DDP process group are :mod:`pipeline.model.train_budget`.

Multi-GPU / multi-node: start :mod:`pipeline.model.train_run` with ``torchrun``; ``fit`` joins the
process group that ``torchrun``'s environment describes (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from pipeline.config.train import TrainSpec
from pipeline.core.errors import ModelError, TrainingError
from pipeline.model.dataset import EpochSampler, TileDataset, collate, sample_weights
from pipeline.model.device import pick_device
from pipeline.model.ema import build_ema, ema_state, eval_model, load_ema
from pipeline.model.losses import build_loss
from pipeline.model.metrics import confusion, scores
from pipeline.model.network import ModelSpec, build_model, make_meta, unwrap
from pipeline.model.schedule import build_scheduler
from pipeline.model.train_budget import Plan, dist_setup
from pipeline.model.train_checkpoints import (
    EpochHook,
    History,
    Saver,
    Writers,
    read_last,
    restore,
    rng_state,
    seed_everything,
)

StepHook = Callable[[int, int], None]
#: the training clock (seconds; tests replace it to make a time budget deterministic): fit hands
#: it to the budget's Plan and the checkpoints' Saver, so one replacement here times them all
_clock: Callable[[], float] = time.perf_counter


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
    edges: tuple[int, ...] = ()  # class ids with an edge output (pipeline.vectors.instances), after the classes
    band_px: int = 1  # the edge band's width in model pixels (not recorded: the contact loss reads it)


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


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` runs, beside what it trains: the ``device`` (None: :func:`pick_device`),
    the data loader ``workers``, a ``progress`` bar (rank 0), ``on_step(epoch, step)`` called
    after each optimiser step (tests use it to kill a run) and ``on_epoch(row)`` after each
    epoch, with its ``metrics.csv`` row (progress reports)."""

    device: torch.device | None = None
    workers: int = 0
    progress: bool = True
    on_step: StepHook | None = None
    on_epoch: EpochHook | None = None


@dataclass(frozen=True)
class _Trainer:
    """What every epoch of a run trains with: ``model`` is the model trained (under DDP and
    ``torch.compile`` when they are on), ``out`` the folder named in error messages."""

    spec: TrainSpec
    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    scaler: torch.amp.GradScaler
    amp: Any
    loss_fn: Callable[..., torch.Tensor]
    device: torch.device
    out: Path
    world: int = 1
    ema: AveragedModel | None = None  # the weights' moving average (pipeline.model.ema): validated, saved as best.pt


def fit(spec: TrainSpec, model_spec: ModelSpec, train_ds: TileDataset, val_ds: TileDataset, out_dir: str | Path,
        info: RunInfo, options: FitOptions | None = None) -> History:
    """Train (or resume from ``out_dir/last.pt``) for ``spec.epochs`` epochs (or until ``spec.max_minutes``);
    returns the history.

    ``last.pt`` (the full training state) is written atomically after the first epoch, then every
    ``spec.checkpoint_epochs`` epochs or ``spec.checkpoint_minutes`` minutes, and at the end, so a
    killed run resumes from the last write and ends with the same weights as an uninterrupted one
    (CPU, same seed, no time budget). With ``spec.init`` a fresh run starts from that checkpoint's
    weights (:mod:`pipeline.model.finetune`); a resumed one from ``last.pt``. ``options``: device,
    loader workers, progress bar and the step and epoch hooks (:class:`FitOptions`)."""
    opts = options or FitOptions()
    out = Path(out_dir)
    device = opts.device or pick_device()
    rank, world = dist_setup(device)
    _check_inputs(train_ds)
    names = ["background"] + [str(c["name"]) for c in sorted(info.classes, key=lambda c: int(c["id"]))]
    n_classes = len(names)
    fold = _fold_table(info, n_classes)
    model, last_blob, lineage = _start_model(spec, model_spec, info, out, device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sampler = EpochSampler(len(train_ds), spec.seed, rank, world, weights=sample_weights(train_ds.rows,
                                                                                        spec.empty_tile_weight))
    steps_per_epoch = math.ceil(len(sampler) / spec.batch_size)
    sched = build_scheduler(opt, spec, steps_per_epoch * spec.epochs)
    amp, scaler = _amp(spec, device)
    start, hist, elapsed = 0, History(), 0.0
    ema = build_ema(model, spec.ema_epochs, steps_per_epoch)
    if last_blob is not None:
        start, hist, elapsed = restore(last_blob, model, opt, sched, scaler)
        load_ema(ema, last_blob["train_state"])
        del last_blob
    hist.init = dict(lineage) if lineage else None
    plan = Plan(spec, sched, steps_per_epoch, len(val_ds) / max(1, len(train_ds)) / 3.0, device, _clock)
    if start >= spec.epochs or (plan.on and (elapsed >= plan.budget_s or (start > 0 and plan.spent()))):
        return hist  # (done: all epochs, or the budget's schedule)
    train_model = _wrap_model(model, spec, device, world)
    pin = device.type == "cuda"
    loader = _loader(train_ds, sampler, spec.batch_size, opts.workers, pin)
    val_loader = _loader(val_ds, EpochSampler(len(val_ds), 0, rank, world, shuffle=False), spec.batch_size,
                         opts.workers, pin)
    loss_fn = build_loss(spec.losses, fold=fold, n_main=n_classes, contact_weight=spec.contact_weight,
                         band_px=info.band_px)
    t = _Trainer(spec, train_model, opt, sched, scaler, amp, loss_fn, device, out, world, ema)
    meta_base = _meta_base(model_spec, info, lineage)
    has_val = bool(len(val_ds))
    saver = Saver(out, model, meta_base, spec, has_val, _clock, best_model=eval_model(model, ema))
    writers = Writers(saver, opts.on_epoch) if rank == 0 else None
    clock = _clock() - elapsed  # training seconds count across resumes
    try:
        for epoch in range(start, spec.epochs):
            t_epoch = _clock()
            hooks = [h for h in (opts.on_step, plan.step_hook(lambda: _clock() - clock) if plan.on else None) if h]
            row = _train_epoch(t, loader, sampler, epoch, opts.progress and rank == 0, hooks,
                               frozen=epoch < spec.freeze_encoder_epochs, stop=plan.spent)
            last = epoch + 1 >= spec.epochs or plan.crossed(_clock() - clock)
            row["val_loss"] = math.nan
            if has_val and ((epoch + 1) % spec.val_every == 0 or last):
                _validate(t, val_loader, names, fold, row)
            elapsed = _clock() - clock
            row["elapsed_s"] = elapsed
            hist.rows.append(row)
            if not last:
                plan.epoch_done(elapsed, _clock() - t_epoch, row.get("val_seconds"))
            if writers is not None:
                writers.epoch_done(row, hist, epoch, last, functools.partial(_train_state, t, hist, epoch, elapsed))
            if world > 1:
                dist.barrier()
            if last:
                break
        if writers is not None:
            writers.finish(hist)
    finally:
        if writers is not None:
            writers.close()
    return hist


def _start_model(spec: TrainSpec, model_spec: ModelSpec, info: RunInfo, out: Path, device: torch.device,
                 ) -> tuple[torch.nn.Module, dict[str, Any] | None, Mapping[str, Any] | None]:
    """The model built after seeding every RNG, on ``device``; ``last.pt``'s checkpoint when
    there is one (a resumed run: :func:`~pipeline.model.train_checkpoints.restore` loads it); the
    lineage of a fine-tuned model (``spec.init``: a fresh run starts from that checkpoint's
    weights), or None."""
    seed_everything(spec.seed)
    model = build_model(model_spec)
    last_blob = read_last(out / "last.pt", info.config_digest, spec)
    lineage: Mapping[str, Any] | None = None
    if last_blob is not None:
        lineage = last_blob["meta"].get("init")
    elif spec.init is not None:
        from pipeline.model.finetune import init_weights, read_init
        from pipeline.model.finetune import lineage as init_lineage

        blob = read_init(spec.init)
        init_weights(model, blob, model_spec, info.classes, info.edges, spec.init)
        lineage = init_lineage(spec.init, blob)
        del blob
    model = model.to(device)
    if device.type == "cuda" and spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, last_blob, lineage


def _wrap_model(model: torch.nn.Module, spec: TrainSpec, device: torch.device, world: int) -> torch.nn.Module:
    """The model to train: under DDP when there are several processes, compiled when asked (CUDA)."""
    train_model: torch.nn.Module = model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if spec.compile and device.type == "cuda":
        train_model = torch.compile(train_model)  # type: ignore[assignment]
    return train_model


def _meta_base(model_spec: ModelSpec, info: RunInfo, lineage: Mapping[str, Any] | None) -> dict[str, Any]:
    """The checkpoint meta of the run (:func:`make_meta`), with the lineage of a fine-tuned model."""
    meta_base = make_meta(model_spec, info.classes, info.band_stats, info.tile_size, info.config_digest,
                          scale=info.scale, edges=info.edges)
    if lineage:
        meta_base["init"] = dict(lineage)
    return meta_base


def _validate(t: _Trainer, loader: DataLoader[Any], names: list[str], fold: torch.Tensor | None,
              row: dict[str, Any]) -> None:
    """Add the validation scores, loss and seconds of an epoch to its ``row``."""
    t_val = _clock()
    cm, val_loss = evaluate(eval_model(t.model, t.ema), loader, len(names), t.device, t.loss_fn, t.amp, fold)
    row.update(scores(cm, names), val_loss=val_loss, val_seconds=_clock() - t_val)


def _train_state(t: _Trainer, hist: History, epoch: int, elapsed: float) -> dict[str, Any]:
    """The full training state that ``last.pt`` keeps after ``epoch`` (to resume from)."""
    return {"optimizer": t.opt.state_dict(), "scheduler": t.sched.state_dict(),
            "scaler": t.scaler.state_dict(), "rng": rng_state(), "epoch": epoch,
            "history": [dict(r) for r in hist.rows], "best_epoch": hist.best_epoch,
            "best_miou": hist.best_miou, "elapsed_s": elapsed, **ema_state(t.ema)}


def _fold_table(info: RunInfo, n_classes: int) -> torch.Tensor | None:
    """Target index -> class index (edge targets -> their class; 255 kept), or None without edges."""
    if not info.edges:
        return None
    ids = sorted(int(c["id"]) for c in info.classes)
    table = torch.arange(256, dtype=torch.int64)
    for j, cid in enumerate(sorted(info.edges)):
        table[n_classes + j] = 1 + ids.index(cid)
    return table


def _train_epoch(t: _Trainer, loader: DataLoader[Any], sampler: EpochSampler, epoch: int, progress: bool,
                 hooks: Sequence[StepHook], frozen: bool = False,
                 stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """One epoch of training; ``stop()`` after a step ends it early (a time budget spent)."""
    model, spec, opt, sched, scaler, amp = t.model, t.spec, t.opt, t.sched, t.scaler, t.amp
    loss_fn, device, out, world = t.loss_fn, t.device, t.out, t.world
    sampler.set_epoch(epoch)
    model.train()
    if spec.freeze_encoder_epochs > 0:
        from pipeline.model.finetune import drop_encoder_grads, set_encoder_frozen

        # (under DDP the encoder keeps requires_grad, as its reducer wants; its gradients are dropped)
        set_encoder_frozen(unwrap(model), frozen, toggle_grad=world == 1)
    total, seen, t0 = 0.0, 0, _clock()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{spec.epochs}", unit="batch", leave=False,
                   disable=None)  # (no bar when stderr is not a terminal: logs stay readable)
    for step, batch in enumerate(loader):
        x = batch["image"].to(device, non_blocking=True)
        y = batch["mask"].to(device, non_blocking=True)
        wt = batch["weight"].to(device, non_blocking=True) if "weight" in batch else None  # hard negatives
        if device.type == "cuda" and spec.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with amp if amp is not None else _NoAmp():
                logits = model(x)
            loss = loss_fn(logits.float(), y, wt)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; "
                                    f"{out}/last.pt keeps the last good epoch it wrote. Lower [train] lr "
                                    f"(now {spec.lr}) or set grad_clip, then rerun to resume")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if frozen and world > 1:
                drop_encoder_grads(unwrap(model))
            if spec.grad_clip > 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            scaler.step(opt)
            scaler.update()
        except torch.OutOfMemoryError as exc:
            raise TrainingError(f"CUDA out of memory with [train] batch_size = {spec.batch_size}; set batch_size = "
                                f"{max(1, spec.batch_size // 2)} (or a smaller scale); {out}/last.pt keeps the "
                                "last good epoch it wrote") from exc
        sched.step()
        if t.ema is not None:
            t.ema.update_parameters(unwrap(model))
        total += float(loss.detach()) * len(x)
        seen += len(x)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}", img_s=f"{seen / (_clock() - t0):.1f}")
        for hook in hooks:
            hook(epoch, step)
        if stop is not None and stop():
            break
    if bar is not None:
        bar.close()
    secs = _clock() - t0
    return {"epoch": epoch + 1, "train_loss": total / max(1, seen), "lr": float(opt.param_groups[0]["lr"]),
            "images_per_s": seen / secs if secs > 0 else math.nan, "seconds": secs}


def check_spec_fits(model_spec: ModelSpec, bands: int) -> None:
    """Raise ModelError unless the model takes ``bands`` input channels."""
    if model_spec.in_channels != bands:
        raise ModelError(f"the model takes {model_spec.in_channels} bands, the images have {bands}")
