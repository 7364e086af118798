"""An exponential moving average (EMA) of the weights during training (``[train] ema_epochs``).

The model that is validated and written as ``best.pt`` is the average, not the last step's
weights: on a few dozen tiles the raw weights swing from epoch to epoch (validation IoU jumping
between 0.01 and 0.48 on nairobi), so the epoch ``best.pt`` picks is partly luck; the average
moves slowly and picks on a figure that holds (docs/notes/i19-travel.md). The averaging is
PyTorch's own (:class:`torch.optim.swa_utils.AveragedModel` with its EMA update), over the
parameters and the batch-norm statistics (``use_buffers``). Its state travels in ``last.pt`` so a
resumed run ends with the same average.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def ema_decay(ema_epochs: float, steps_per_epoch: int) -> float:
    """The per-step decay whose time constant is ``ema_epochs`` epochs of ``steps_per_epoch``
    optimiser steps (a weight update ``k`` steps back counts ``decay**k``)."""
    steps = max(1.0, ema_epochs * max(1, steps_per_epoch))
    return math.exp(-1.0 / steps)


def build_ema(model: torch.nn.Module, ema_epochs: float, steps_per_epoch: int) -> AveragedModel | None:
    """The average of ``model`` (a plain module, not DDP or compiled), or None when
    ``ema_epochs`` is 0 (off). Its first update copies the weights, so no start value biases it."""
    if ema_epochs <= 0:
        return None
    decay = ema_decay(ema_epochs, steps_per_epoch)
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def eval_model(model: torch.nn.Module, ema: AveragedModel | None) -> torch.nn.Module:
    """The module to validate and to save as ``best.pt``: the average when there is one."""
    return ema.module if ema is not None else model


def ema_state(ema: AveragedModel | None) -> dict[str, Any]:
    """The part of ``last.pt``'s training state that resumes the average ({} when off)."""
    if ema is None:
        return {}
    return {"ema": {k: v.detach().to("cpu", copy=True) for k, v in ema.state_dict().items()}}


def averaged_weights(train_state: Mapping[str, Any]) -> dict[str, Any] | None:
    """The averaged model's weights (a plain state dict, as ``best.pt`` holds them) from
    ``last.pt``'s training state; None for a run without the average."""
    state = train_state.get("ema")
    if state is None:
        return None
    return {k[len("module."):]: v for k, v in state.items() if k.startswith("module.")}


def load_ema(ema: AveragedModel | None, train_state: Mapping[str, Any]) -> None:
    """Resume the average from ``last.pt``'s training state (a state without one, from a run
    that had none, restarts it from the current weights at the next step)."""
    if ema is not None and "ema" in train_state:
        ema.load_state_dict(train_state["ema"])
