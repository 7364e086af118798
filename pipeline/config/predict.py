"""The ``[predict]`` config section (prediction and evaluation settings); torch-free.

Keys (all optional)::

    [predict]
    model = "data/other/model/best.pt"  # checkpoint; default data/<region>/model/best.pt (trained here);
                          # or a region config ("configs/other.toml"): its model, trained first if needed
    context_px = 64       # border of context read from the 8 neighbour tiles, pixels (rounded up to
                          # a multiple of the model's output stride so strided layers line up)
    block = 4             # tiles a side predicted as one window (the context border once around
                          # the block: 1.27x the pixels instead of 2.25x for 256-px tiles); 1: tile by tile
    batch_size = 8        # tiles per forward pass when block = 1
    engine = "auto"       # "onnx" (ONNX Runtime, CPU), "torch" (PyTorch); auto: onnx on CPU, torch on CUDA
    tta = "none"          # "flip": average over the 4 flips (identity, left-right, up-down, both)
    png_level = 1         # zlib level of the prediction PNGs (0-9)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section

TTA_MODES = ("none", "flip")
#: prediction engines (:func:`pipeline.inference.predict.make_engine`)
ENGINES = ("auto", "onnx", "torch")


@dataclass(frozen=True)
class PredictSpec:
    """Parsed ``[predict]``: ``model`` None means the region's own ``model/best.pt``."""

    model: Path | None = None
    context_px: int = 64
    batch_size: int = field(default=8, metadata={"operational": True})
    block: int = field(default=4, metadata={"operational": True})
    engine: str = field(default="auto", metadata={"operational": True})
    tta: str = "none"
    png_level: int = 1


def parse_predict(path: Path, table: dict[str, Any]) -> PredictSpec:
    """``[predict]`` of config ``path`` -> :class:`PredictSpec` (errors name the file and key)."""
    sec = Section(path, "predict", table)
    d = PredictSpec()
    model = sec.take("model", str, None)
    spec = PredictSpec(
        model=Path(model) if model else None,
        context_px=sec.integer("context_px", d.context_px, lo=0, hi=1024),
        batch_size=sec.integer("batch_size", d.batch_size, lo=1, hi=4096),
        block=sec.integer("block", d.block, lo=1, hi=64),
        engine=sec.choice("engine", ENGINES, d.engine),
        tta=sec.choice("tta", TTA_MODES, d.tta),
        png_level=sec.integer("png_level", d.png_level, lo=0, hi=9),
    )
    sec.done()
    return spec
