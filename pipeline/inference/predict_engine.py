"""What every prediction engine shares, below :mod:`pipeline.inference.predict` and the engines
(:mod:`pipeline.inference.predict_onnx`, :mod:`pipeline.inference.predict_torch`), which import it and not each other:
a checkpoint's meta (:class:`ModelInfo`), the :class:`Engine` protocol, the input scale, flip
test-time augmentation and the checkpoint's content key. numpy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.core.outputs import file_identity, file_sha256

#: the 4 flips of flip TTA as numpy axes of (N, C, H, W): none, left-right, up-down, both
FLIP_AXES: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


class MetaView:
    """What a checkpoint's meta says about the model (mixin of :class:`ModelInfo` and the
    PyTorch predictor)."""

    meta: Mapping[str, Any]

    @property
    def bands(self) -> int:
        return int(self.meta["spec"]["in_channels"])

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.meta["classes"])

    @property
    def edges(self) -> tuple[int, ...]:
        """Class ids with an edge output (:mod:`pipeline.vectors.instances`); () for older checkpoints."""
        return tuple(int(e) for e in self.meta.get("edges") or ())


@dataclass(frozen=True)
class ModelInfo(MetaView):
    """A model's checkpoint meta, where it came from (for messages) and its output stride
    (input pixels per step of its deepest feature map)."""

    meta: Mapping[str, Any]
    source: str = "model"
    stride: int = 32


class Engine(Protocol):
    """Runs a model: ``probs(windows, tile_size)`` takes pixel windows (N, C, H, W; uint8, or
    uint16 for 16-bit imagery) around image tiles of ``tile_size`` px and gives float32
    foreground probabilities (N, K - 1, H, W)."""

    @property
    def info(self) -> ModelInfo: ...

    def probs(self, windows: np.ndarray, tile_size: int) -> np.ndarray: ...


def model_scale(meta: Mapping[str, Any], tile_size: int) -> float:
    """Input resampling factor: the checkpoint's ``scale`` (``[train] scale``, e.g. 0.5 for
    half-resolution training), or for checkpoints without one its ``tile_size`` (model input
    side) over the image tile side ``tile_size`` (px)."""
    if meta.get("scale"):
        return float(meta["scale"])
    model_side = int(meta.get("tile_size") or tile_size)
    return model_side / tile_size


def engine_probs(engine: Engine, windows: np.ndarray, tile_size: int, tta: str = "none") -> np.ndarray:
    """The engine's probabilities of ``windows``; with ``tta='flip'`` the mean over the 4 flips
    (each flipped back)."""
    if tta != "flip":
        return engine.probs(windows, tile_size)
    out: np.ndarray | None = None
    for axes in FLIP_AXES:
        win = np.ascontiguousarray(np.flip(windows, axes)) if axes else windows
        p = engine.probs(win, tile_size)
        p = np.flip(p, axes) if axes else p
        out = p.copy() if out is None else out + p
    assert out is not None
    return out / len(FLIP_AXES)


#: keys computed by this process, or by the process it was forked from (a scheduling process
#: hashes the model once for every prediction shard: ``tasks.predict.Predict.prepare``), by the
#: file's (path, size, mtime)
_KEYS: dict[tuple[str, int, int], str] = {}


def checkpoint_key(path: Path) -> str:
    """The first 16 hex digits of the checkpoint file's sha256 (names its cached ONNX graph)."""
    known = file_identity(path)
    if known not in _KEYS:
        _KEYS[known] = file_sha256(path)[:16]
    return _KEYS[known]
