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
from pipeline.model.schedule import Schedule, budget_steps


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

    The schedule is laid out in steps, for the steps that fit the time left: every ``k`` steps
    of an epoch from the measured step time (validation estimated at a third of a training step
    per tile until one is measured), and after every epoch from the measured epoch times. The run
    stops when the schedule's steps are done (:meth:`spent`), within an epoch if one epoch is
    longer than the budget (a 25 km² region), so a budgeted run ends annealed and on time, then
    validates and saves as after any last epoch. Under DDP rank 0's clock decides for every rank
    (:func:`agree`). ``clock`` is the training clock (:data:`pipeline.model.train._clock`)."""

    def __init__(self, spec: TrainSpec, sched: Schedule, steps_per_epoch: int, val_share: float,
                 device: torch.device, clock: Callable[[], float]) -> None:
        self.spec, self.sched, self.steps, self.val_share, self.device = spec, sched, steps_per_epoch, val_share, device
        self.clock = clock
        self.budget_s = spec.max_minutes * 60.0
        self.k = max(1, min(max(3, steps_per_epoch // 10), steps_per_epoch - 1))
        self.t0 = 0.0
        self.val_s: float | None = None  # seconds of the last validation
        self.epoch_times: list[float] = []

    @property
    def on(self) -> bool:
        return self.budget_s > 0

    def step_hook(self, elapsed: Callable[[], float]) -> Callable[[int, int], None]:
        """A step hook for every epoch: lays the schedule out again from this epoch's step time
        after steps 1, 2, 4, ... and every ``k`` steps (a budget shorter than the first ``k``
        steps still anneals); ``elapsed()`` is the training time so far (seconds, across resumes)."""
        def hook(epoch: int, step: int) -> None:
            if step == 0:
                self.t0 = self.clock()  # (step 0 carries the loader's start: not timed)
            elif step % self.k == 0 or (step < self.k and step & (step - 1) == 0):  # (and at 1, 2, 4, ...)
                per_step = (self.clock() - self.t0) / step
                self._relayout(elapsed(), per_step)
        return hook

    def _val_seconds(self, per_step: float) -> float:
        if self.val_s is not None:
            return self.val_s
        return per_step * self.steps * self.val_share

    def _relayout(self, elapsed_s: float, per_step: float) -> None:
        """Lay the schedule out for the steps that fit the budget (:func:`budget_steps`)."""
        total = budget_steps(self.spec, self.steps, self.sched.n, elapsed_s, per_step, self._val_seconds(per_step))
        agreed, = agree([float(total)], self.device)
        self.sched.relayout(int(agreed))

    def spent(self) -> bool:
        """Whether the schedule laid out for the budget is done (the run stops now)."""
        return self.on and self.sched.n >= self.sched.total

    def crossed(self, elapsed_s: float) -> bool:
        """Whether the budget is spent (by the clock or by the schedule)."""
        if not self.on:
            return False
        return self.spent() or bool(agree([float(elapsed_s >= self.budget_s)], self.device)[0])

    def epoch_done(self, elapsed_s: float, epoch_s: float, val_s: float | None) -> None:
        """After an epoch that was not the last: ``epoch_s`` seconds, ``val_s`` of them validating."""
        if not self.on:
            return
        if val_s is not None:
            self.val_s = val_s
        train_s = epoch_s - (val_s or 0.0)
        self.epoch_times.append(train_s)
        times = self.epoch_times[1:] or self.epoch_times  # (the first one carries the start-up)
        self._relayout(elapsed_s, sum(times) / len(times) / self.steps)
