"""Training's time budget (``[train] max_minutes``) and the DDP process group.

:class:`Plan` says when a run stops and lays the learning-rate schedule out for the epochs that
fit the budget; under DDP rank 0's clock decides for every rank (:func:`agree`), so the ranks
never part ways. :func:`dist_setup` joins the process group that ``torchrun`` describes.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist

from pipeline.config.train import TrainSpec
from pipeline.model.schedule import Schedule, budget_epochs


def dist_setup(device: torch.device) -> tuple[int, int]:
    """(rank, world size): joins torchrun's process group when ``WORLD_SIZE`` > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (time-based decisions must be the same on all of them)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return [float(v) for v in t.cpu()]


class Plan:
    """The time budget (``[train] max_minutes``): when to stop and how long the schedule is.

    The schedule starts laid out for ``epochs``; a few steps into the first epoch it is laid
    out again for the epochs the measured step time fits into the budget (validation estimated
    at a third of a training step per tile), and after every epoch for the measured epoch times.
    ``clock`` is the training clock (:data:`pipeline.model.train._clock`)."""

    def __init__(self, spec: TrainSpec, sched: Schedule, steps_per_epoch: int, val_share: float,
                 device: torch.device, clock: Callable[[], float]) -> None:
        self.spec, self.sched, self.steps, self.val_share, self.device = spec, sched, steps_per_epoch, val_share, device
        self.clock = clock
        self.budget_s = spec.max_minutes * 60.0
        self.k = min(max(3, steps_per_epoch // 10), steps_per_epoch - 1)
        self.t0 = 0.0
        self.epoch_times: list[float] = []

    @property
    def on(self) -> bool:
        return self.budget_s > 0

    def first_steps(self, elapsed_s: float) -> Callable[[int, int], None]:
        """A step hook for the first epoch of a fresh run: lays the schedule out after ``k`` steps."""
        def hook(epoch: int, step: int) -> None:
            if step == 0:
                self.t0 = self.clock()
            elif step == self.k:
                per_step = (self.clock() - self.t0) / self.k
                epoch_s = per_step * self.steps * (1.0 + self.val_share / max(1, self.spec.val_every))
                self._relayout(epoch, elapsed_s, epoch_s)  # (elapsed_s: at the start of this epoch)
        return hook

    def _relayout(self, done: int, elapsed_s: float, epoch_s: float) -> None:
        epochs = budget_epochs(self.spec, done, elapsed_s, epoch_s)
        total, = agree([float(epochs * self.steps)], self.device)
        self.sched.relayout(int(total))

    def crossed(self, elapsed_s: float) -> bool:
        """Whether the budget is spent (the epoch that crossed it is the last)."""
        if not self.on:
            return False
        return bool(agree([float(elapsed_s >= self.budget_s)], self.device)[0])

    def epoch_done(self, done: int, elapsed_s: float, epoch_s: float) -> None:
        if not self.on:
            return
        self.epoch_times.append(epoch_s)
        times = self.epoch_times[1:] or self.epoch_times  # (the first one carries the start-up)
        self._relayout(done, elapsed_s, sum(times) / len(times))
