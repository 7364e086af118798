"""Training's checkpoints: resume and what rank 0 writes after each epoch.

:class:`History` is a run's per-epoch rows; ``last.pt`` keeps it with the full training state
(weights, optimiser, schedule, RNG: :func:`rng_state`), which :func:`read_last` and
:func:`restore` load to resume a run; :class:`Saver` decides when ``last.pt`` and ``best.pt`` are
written and :class:`Writers` adds ``metrics.csv``, TensorBoard scalars and ``training.png``.
The epoch loop that drives them is :func:`pipeline.model.train.fit`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.config.train import TrainSpec
from pipeline.core.errors import TrainingError
from pipeline.model.network import read_checkpoint, save_checkpoint, unwrap
from pipeline.model.schedule import Schedule

EpochHook = Callable[[Mapping[str, Any]], None]


@dataclass
class History:
    """Per-epoch rows (``epoch``, ``train_loss``, ``val_loss``, ``lr``, ``images_per_s``,
    ``seconds`` (training), ``elapsed_s`` (since the run began, resumes included) and, on the
    epochs that were validated, ``val_seconds``, ``iou``/``precision``/``recall``/``f1`` per
    class, ``miou``), the best epoch and the lineage of a fine-tuned model."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = -1
    best_miou: float = -1.0
    init: dict[str, Any] | None = None  # the lineage of a fine-tuned model (pipeline.model.finetune.lineage)

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

def read_last(path: Path, digest: str, spec: TrainSpec) -> dict[str, Any] | None:
    """last.pt's checkpoint when there is one (of today's config: another's is refused, and kept)."""
    if not path.is_file():
        return None
    blob = read_checkpoint(path, map_location="cpu")
    got = blob["meta"].get("config_digest")
    if got != digest or "train_state" not in blob:
        init = (f" ([train] init = '{spec.init}' is a change of config: move last.pt away to fine-tune from it)"
                if spec.init is not None else "")
        raise TrainingError(f"{path}: checkpoint of another config (digest {got}, today's {digest}: the [train] "
                            "or [[classes]] section, the split, or a training default of an updated osmsat changed "
                            "since it was written); it is kept. Move or delete it to train afresh with today's config, "
                            f"or restore the old config to resume it{init}")
    return blob


def restore(blob: Mapping[str, Any], model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Schedule,
             scaler: torch.amp.GradScaler) -> tuple[int, History, float]:
    """Load last.pt's training state; (next epoch, history, training seconds spent so far)."""
    unwrap(model).load_state_dict(blob["model"])
    ts = blob["train_state"]
    opt.load_state_dict(ts["optimizer"])
    sched.load_state_dict(ts["scheduler"])
    scaler.load_state_dict(ts["scaler"])
    set_rng_state(ts["rng"])
    hist = History([dict(r) for r in ts["history"]], int(ts["best_epoch"]), float(ts["best_miou"]))
    return int(ts["epoch"]) + 1, hist, float(ts.get("elapsed_s", 0.0))

class Saver:
    """Writes ``last.pt`` (the full training state: weights, optimiser, schedule, RNG, history)
    after the first epoch of a run, every ``checkpoint_epochs`` epochs, whenever
    ``checkpoint_minutes`` have passed since the last write, and at the end; ``best.pt`` with it
    when a better epoch came since the last write (kept in memory until then). So a killed run
    resumes from the last write, and ``best.pt`` never runs ahead of ``last.pt``'s history.
    ``clock`` is the training clock (:data:`pipeline.model.train._clock`); ``best_model`` the
    module written as ``best.pt`` (the weights' moving average, :mod:`pipeline.model.ema`), by
    default ``model`` (whose weights ``last.pt`` keeps)."""

    def __init__(self, out: Path, model: torch.nn.Module, meta_base: Mapping[str, Any], spec: TrainSpec,
                 has_val: bool, clock: Callable[[], float], best_model: torch.nn.Module | None = None) -> None:
        self.out, self.model, self.meta_base, self.spec, self.has_val = out, model, meta_base, spec, has_val
        self.best_model = best_model if best_model is not None else model
        self.clock = clock
        self.last_t = clock()
        self.first = True
        self.best: dict[str, Any] | None = None  # a best.pt blob not yet written

    def meta(self, row: Mapping[str, Any], epoch: int) -> dict[str, Any]:
        metrics = {k: row[k] for k in ("iou", "precision", "recall", "f1", "miou", "accuracy", "val_loss") if k in row}
        return {**self.meta_base, "metrics": {**metrics, "epoch": epoch + 1}}

    def due(self, epoch: int, last: bool) -> bool:
        s = self.spec
        return (last or self.first or (s.checkpoint_epochs > 0 and (epoch + 1) % s.checkpoint_epochs == 0)
                or self.clock() - self.last_t >= s.checkpoint_minutes * 60.0)

    def epoch_done(self, row: Mapping[str, Any], hist: History, epoch: int, last: bool,
                   state: Callable[[], Any]) -> bool:
        """Book this epoch (a better validation mIoU: the best); write when due. True when written."""
        from pipeline.model.network import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

        miou = float(row.get("miou", math.nan))
        save = self.due(epoch, last)
        if not self.has_val:
            hist.best_epoch, hist.best_miou = epoch + 1, -1.0
        elif not math.isnan(miou) and miou > hist.best_miou:
            hist.best_epoch, hist.best_miou = epoch + 1, miou
            self.best = None if save else {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                "model": {k: v.detach().to("cpu", copy=True) for k, v in unwrap(self.best_model).state_dict().items()},
                "meta": self.meta(row, epoch)}
            if save:
                save_checkpoint(self.out / "best.pt", self.best_model, self.meta(row, epoch))
        if not save:
            return False
        if not self.has_val:
            save_checkpoint(self.out / "best.pt", self.best_model, self.meta(row, epoch))
        elif self.best is not None:
            from pipeline.model.network import write_checkpoint

            write_checkpoint(self.out / "best.pt", self.best)
            self.best = None
        save_checkpoint(self.out / "last.pt", self.model, self.meta(row, epoch), state())
        self.last_t, self.first = self.clock(), False
        return True


class Writers:
    """What rank 0 writes after each epoch: checkpoints (:class:`Saver`), ``metrics.csv`` and
    TensorBoard scalars; it calls ``on_epoch`` with the epoch's row, and writes
    ``training.png`` at the end."""

    def __init__(self, saver: Saver, on_epoch: EpochHook | None) -> None:
        from pipeline.model.trainlog import Board

        self.saver, self.on_epoch = saver, on_epoch
        self.board = Board(saver.out / "tb")

    def epoch_done(self, row: Mapping[str, Any], hist: History, epoch: int, last: bool,
                   state: Callable[[], Any]) -> None:
        from pipeline.model.trainlog import write_csv

        self.saver.epoch_done(row, hist, epoch, last, state)
        write_csv(self.saver.out / "metrics.csv", hist.rows)
        self.board.epoch(row)
        if self.on_epoch is not None:
            self.on_epoch(row)

    def finish(self, hist: History) -> None:
        from pipeline.model.trainlog import write_plot

        write_plot(self.saver.out / "training.png", hist.rows)

    def close(self) -> None:
        self.board.close()
