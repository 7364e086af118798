"""The ONNX Runtime prediction engine: the prediction graph of a checkpoint
(:class:`pipeline.inference.predict_torch.PredictGraph`, uint8 windows in, probabilities out) run on the
CPU without torch. Its meta (classes, bands, band statistics, stride) sits beside the graph as
JSON, with the graph's sha256 so a damaged cache file is found and exported again."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.inference.predict_engine import ModelInfo, checkpoint_key


def load_graph_meta(meta_path: Path, onnx_path: Path) -> ModelInfo | None:
    """The cached graph's :class:`ModelInfo`, or None when the graph or its meta is missing,
    unreadable or does not match (it is exported again)."""
    try:
        doc = json.loads(meta_path.read_text())
        if checkpoint_key(onnx_path) != doc["onnx_sha256"]:
            return None
        return ModelInfo(meta=doc["meta"], source=str(doc["source"]), stride=int(doc["stride"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


class OnnxEngine:
    """:class:`pipeline.inference.predict_engine.Engine` on ONNX Runtime's CPU provider, on ``threads`` threads
    (0: ONNX Runtime's default, one per physical core)."""

    def __init__(self, path: Path, info: ModelInfo, threads: int = 0) -> None:
        import onnxruntime as ort

        self._info = info
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3  # warnings about shape inference are not the user's business
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @property
    def info(self) -> ModelInfo:
        return self._info

    def probs(self, windows: np.ndarray, tile_size: int) -> np.ndarray:
        """Pixel windows (N, C, H, W; uint8 or uint16) -> float32 foreground probabilities
        (N, K - 1, H, W); the graph was exported for ``tile_size`` (its scale factor)."""
        out = self.session.run(["probs"], {"image": np.ascontiguousarray(windows, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)
