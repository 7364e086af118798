"""The one device choice of training and prediction (call it inside a task's ``run()``: CUDA is
touched only there)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import ModelError

if TYPE_CHECKING:
    import torch


def cuda_may_exist() -> bool:
    """Whether this machine may have a usable NVIDIA GPU, without importing torch: the driver
    is loaded (``/proc/driver/nvidia/version`` or a ``/dev/nvidia<N>``) and
    ``CUDA_VISIBLE_DEVICES`` does not hide every device. False means :func:`pick_device` would
    pick the CPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or any(Path("/dev").glob("nvidia[0-9]*"))


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: this process's CUDA device (``LOCAL_RANK`` under torchrun, else 0) when torch
    sees a GPU, else the CPU; or an explicit torch device name (``cpu``, ``cuda``, ``cuda:1``),
    refused with one clear line when it is no device or asks for CUDA that is not there."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ModelError(f"device {name!r} is not a torch device; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {name!r} asked for, but torch sees no CUDA GPU; use device=auto or cpu")
    return dev
