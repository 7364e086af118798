"""The PyTorch side of prediction: a checkpoint loaded as a :class:`Predictor`, its input recipe
(normalise, resample to the model's scale), softmax probabilities, and the prediction graph
exported to ONNX for :mod:`pipeline.inference.predict_onnx`.

Probabilities: softmax over the model's outputs (channel 0 background, channel k >= 1 the k-th
class by ascending id) and a sigmoid per edge channel (:mod:`pipeline.vectors.instances`). Images are
pixel (N, C, H, W) windows (:mod:`pipeline.inference.windows`); probabilities come back at the image's
scale (resampled back when the model runs at ``[train] scale``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as nnf

from pipeline.core.atomic import atomic_path
from pipeline.inference.predict_engine import MetaView, ModelInfo, engine_probs, model_scale
from pipeline.model.network import normalise


@dataclass(frozen=True)
class Predictor(MetaView):
    """A model ready to predict: the network (eval mode, on ``device``), its checkpoint meta and
    where it came from (for messages)."""

    model: torch.nn.Module
    meta: Mapping[str, Any]
    device: torch.device
    source: str = "model"

    @property
    def stride(self) -> int:
        """Output stride of the encoder (input pixels per step of its deepest feature map)."""
        enc = getattr(self.model, "encoder", None)
        return int(getattr(enc, "output_stride", 32) or 32) if enc is not None else 32

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(meta=self.meta, source=self.source, stride=self.stride)

    def probs(self, windows: np.ndarray, tile_size: int) -> np.ndarray:
        """The :class:`pipeline.inference.predict_engine.Engine` call: pixel windows (N, C, H, W) around image
        tiles of ``tile_size`` px -> float32 foreground probabilities (N, K - 1, H, W) at the
        image's scale."""
        h, w = windows.shape[-2:]
        p = forward_probs(self, model_input(self, windows, tile_size))
        if p.shape[-2:] != (h, w):
            p = nnf.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)
        return p[:, 1:].float().cpu().numpy()


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> Predictor:
    """Load a checkpoint (:func:`pipeline.model.network.load_checkpoint`) onto ``device``."""
    from pipeline.model.network import load_checkpoint

    dev = torch.device(device)
    model, meta = load_checkpoint(path, map_location="cpu")
    model.to(dev).eval()
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return Predictor(model=model, meta=meta, device=dev, source=str(path))


def forward_probs(pred: Predictor, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, K, H, W) float32 of a normalised batch (N, C, H, W) on the
    predictor's device (flip TTA: :func:`pipeline.inference.predict_engine.engine_probs`)."""
    amp = pred.device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(pred.device.type, dtype=dtype, enabled=amp):
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        return output_probs(pred.model(x).float(), len(pred.edges))


def output_probs(logits: torch.Tensor, n_edges: int) -> torch.Tensor:
    """Logits (N, K, H, W) -> probabilities: softmax over background and the classes, and a
    sigmoid per edge channel (the last ``n_edges``; :mod:`pipeline.vectors.instances`)."""
    if n_edges == 0:
        return torch.softmax(logits, dim=1)
    k = logits.shape[1] - n_edges
    return torch.cat([torch.softmax(logits[:, :k], dim=1), torch.sigmoid(logits[:, k:])], dim=1)


def model_input(pred: Predictor, windows: np.ndarray, tile_size: int) -> torch.Tensor:
    """Pixel windows (N, C, H, W) around tiles of ``tile_size`` px -> the model's float32 input on
    its device: normalised with the checkpoint's band statistics and resampled to the model's
    scale (:func:`pipeline.inference.predict_engine.model_scale`) when that is not 1."""
    n, c, h, w = windows.shape
    x = torch.from_numpy(np.ascontiguousarray(windows))
    if pred.device.type == "cuda":
        x = x.pin_memory()
    x = x.to(pred.device, non_blocking=True)
    # normalise() takes one (C, H, W) image: stack the batch along the rows
    x = normalise(x.permute(1, 0, 2, 3).reshape(c, n * h, w), pred.meta["band_stats"])
    x = x.reshape(c, n, h, w).permute(1, 0, 2, 3).contiguous()
    scale = model_scale(pred.meta, tile_size)
    if scale != 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = nnf.interpolate(x, size=size, mode="area" if scale < 1 else "bilinear",
                            align_corners=None if scale < 1 else False)
    return x


def predict_windows(pred: Predictor, windows: np.ndarray, border: int, tta: str = "none") -> np.ndarray:
    """uint8 windows (N, C, T + 2b, T + 2b) -> float32 foreground probabilities (N, K - 1, T, T)
    of their centres (:meth:`Predictor.probs`, with flip TTA by :func:`pipeline.inference.predict_engine.engine_probs`).
    With edge outputs, the edge bands follow the classes."""
    t = windows.shape[-1] - 2 * border
    return engine_probs(pred, windows, t, tta)[:, :, border:border + t, border:border + t]


# ---------------------------------------------------------------------------------------------
# The prediction graph (for ONNX Runtime)


class PredictGraph(nn.Module):
    """Pixel windows (N, C, H, W, float32 pixel values) -> foreground probabilities
    (N, K - 1, H, W) float32 at the image's scale, in one graph: the recipe of
    :meth:`Predictor.probs` (:func:`pipeline.model.network.normalise`: ``(min(pixel / max, 1) - mean) /
    std``; shrink by an integer factor ``k = 1 / scale`` with a k x k mean — what ``area``
    interpolation is for an integer factor — the model, softmax/sigmoid, bilinear enlargement by ``k``)."""

    def __init__(self, pred: Predictor, factor: int) -> None:
        super().__init__()
        stats = pred.meta["band_stats"]
        n = len(stats["mean"])
        self.model = pred.model
        self.factor = factor
        self.n_edges = len(pred.edges)
        self.vmax = float(stats.get("max", 255))
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor([float(v) for v in stats["mean"]]).view(1, n, 1, 1))
        self.register_buffer("std", torch.tensor([float(v) for v in stats["std"]]).view(1, n, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = ((image / self.vmax).clamp(max=1.0) - self.mean) / self.std
        if self.factor > 1:
            x = nnf.avg_pool2d(x, self.factor)
        p = output_probs(self.model(x), self.n_edges)
        if self.factor > 1:
            p = nnf.interpolate(p, scale_factor=float(self.factor), mode="bilinear", align_corners=False)
        return p[:, 1:]


def graph_factor(pred: Predictor, tile_size: int) -> int | None:
    """The integer shrink factor ``1 / scale`` the graph supports (1 at full scale), or None when
    the model's scale is not 1 / k for an integer k (then prediction stays in PyTorch)."""
    scale = model_scale(pred.meta, tile_size)
    k = 1.0 / scale
    return round(k) if scale <= 1 and math.isclose(k, round(k), rel_tol=1e-6) else None


def export_predict_graph(pred: Predictor, tile_size: int, factor: int, path: Path, side: int) -> float:
    """Write :class:`PredictGraph` of a CPU predictor as ONNX to ``path`` (atomically; batch,
    height and width dynamic, traced at ``side`` px) and return the largest difference of its
    probabilities from :meth:`Predictor.probs` (tiles of ``tile_size`` px) on a random window of
    ``side + 2 * stride * factor`` by ``side`` px run with ONNX Runtime (CPU)."""
    import onnxruntime as ort

    graph = PredictGraph(pred, factor).to("cpu").float().eval()
    example = torch.zeros((1, pred.bands, side, side), dtype=torch.float32)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of dynamo
        torch.onnx.export(graph, (example,), str(tmp), input_names=["image"], output_names=["probs"],
                          dynamic_axes={"image": axes, "probs": axes}, opset_version=17, dynamo=False)
        probe_side = side + 2 * pred.stride * factor
        top = int(float(pred.meta["band_stats"].get("max", 255)) * 1.1) + 1
        probe = np.random.default_rng(0).integers(0, top, (1, pred.bands, probe_side, side)).astype(np.uint16)
        got = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"]).run(
            None, {"image": probe.astype(np.float32)})[0]
    return float(np.abs(got - pred.probs(probe, tile_size)).max())
