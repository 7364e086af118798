"""The learning-rate schedule of training, per step, and its length under a time budget
(``[train] max_minutes``): :class:`Schedule` can be laid out again while training runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from pipeline.config.train import TrainSpec


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


class Schedule:
    """Per-step learning rate as a function of (step, total steps), with a ``total`` that may be
    laid out again while training (a time budget: :func:`budget_steps`).

    ``onecycle`` is torch's ``OneCycleLR`` (cosine; peak ``lr``, from ``lr / 25`` to ``lr / 25e3``,
    warm-up share ``warmup``; AdamW beta1 0.95 -> 0.85 -> 0.95); ``cosine`` a linear warm-up then
    cosine decay to 0; ``constant`` ``lr``. Past ``total`` the last value holds."""

    def __init__(self, opt: torch.optim.Optimizer, spec: TrainSpec, total_steps: int) -> None:
        self.opt, self.kind, self.peak, self.warmup = opt, spec.schedule, spec.lr, spec.warmup
        self.total, self.n = max(1, int(total_steps)), 0
        self._apply()

    def at(self, n: int) -> tuple[float, float | None]:
        """(learning rate, AdamW beta1 or None) at step ``n``."""
        total = self.total
        if self.kind == "onecycle":
            low = self.peak / 25.0
            end1, end2 = max(self.warmup, 1e-3) * total - 1, total - 1
            if n <= end1:
                p = n / end1 if end1 > 0 else 1.0
                return _cos(low, self.peak, p), _cos(0.95, 0.85, p)
            p = min(1.0, (n - end1) / (end2 - end1)) if end2 > end1 else 1.0
            return _cos(self.peak, low / 1e3, p), _cos(0.85, 0.95, p)
        if self.kind == "constant":
            return self.peak, None
        warm = int(self.warmup * total)
        if n < warm:
            return self.peak * (n + 1) / warm, None
        return self.peak * 0.5 * (1 + math.cos(math.pi * min(1.0, (n - warm) / max(1, total - warm)))), None

    def _apply(self) -> None:
        lr, beta1 = self.at(self.n)
        for g in self.opt.param_groups:
            g["lr"] = lr
            if beta1 is not None and "betas" in g:
                g["betas"] = (beta1, g["betas"][1])

    def step(self) -> None:
        self.n += 1
        self._apply()

    def relayout(self, total_steps: int) -> None:
        """Lay the schedule out for ``total_steps`` steps from now on (never fewer than taken)."""
        self.total = max(1, self.n, int(total_steps))
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {"n": self.n, "total": self.total, "kind": self.kind}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.n, self.total = int(state["n"]), int(state["total"])
        self._apply()


def build_scheduler(opt: torch.optim.Optimizer, spec: TrainSpec, total_steps: int) -> Schedule:
    """Per-step LR schedule: one-cycle (warm-up share ``spec.warmup``), linear warm-up + cosine, or constant."""
    return Schedule(opt, spec, total_steps)


def budget_steps(spec: TrainSpec, steps_per_epoch: int, done: int, elapsed_s: float, per_step_s: float,
                 val_s: float) -> int:
    """Optimiser steps a run will have taken when it stops: ``spec.epochs`` epochs, or with ``[train]
    max_minutes`` the steps that fit the time left after ``done`` steps in ``elapsed_s`` seconds, at
    ``per_step_s`` seconds a step and ``val_s`` seconds a validation (one every ``spec.val_every``
    epochs on the way, and the last one); between ``done`` and ``spec.epochs`` epochs' steps. The last
    epoch may end part way: a budget shorter than one epoch still anneals."""
    full = spec.epochs * steps_per_epoch
    if spec.max_minutes <= 0:
        return full
    left = spec.max_minutes * 60.0 - elapsed_s - val_s
    per = per_step_s + val_s / (steps_per_epoch * max(1, spec.val_every))
    more = math.floor(left / per) if left > 0 and per > 0 else 0
    return max(done, min(full, done + more))
