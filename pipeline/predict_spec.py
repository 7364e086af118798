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

from pipeline.config import Section

TTA_MODES = ("none", "flip")
#: prediction engines (:func:`pipeline.predict.make_engine`)
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


def model_path(cfg: Any) -> Path:
    """The checkpoint that predicts region ``cfg`` (a RegionConfig): ``[predict] model`` (a
    checkpoint, or a region config: that region's ``model/best.pt``, see :mod:`pipeline.regions`),
    or the region's own ``data/<region>/model/best.pt``."""
    own = Path(cfg.data_dir) / "model" / "best.pt"
    spec: PredictSpec = cfg.section("predict")
    if spec.model is None:
        return own
    from pipeline.regions import region_model

    return region_model(spec.model, "[predict] model")


def is_own_model(cfg: Any) -> bool:
    """True when the region is predicted with the model trained on it (``model/best.pt``)."""
    own = Path(cfg.data_dir) / "model" / "best.pt"
    return model_path(cfg).resolve() == own.resolve()


def cross_fit_model(cfg: Any) -> Path | None:
    """``model/cross/best.pt`` when the region predicts with its own model and ``[train] cross_fit``
    is on (it predicts the training tiles); None otherwise."""
    if not is_own_model(cfg) or not cfg.section("train").cross_fit:
        return None
    return Path(cfg.data_dir) / "model" / "cross" / "best.pt"


def training_tiles(cfg: Any) -> set[tuple[int, int, int]]:
    """The (z, x, y) tiles of the train split (``split.csv``; empty without one)."""
    from pipeline.split import read_split_csv

    path = Path(cfg.data_dir) / "split.csv"
    if not path.is_file():
        return set()
    return {(r.z, r.x, r.y) for r in read_split_csv(path) if r.split == "train"}
