"""Evaluation of prediction tiles against mask tiles: confusion matrix and per-class scores.

A prediction tile (:mod:`pipeline.inference.probs`) holds the foreground classes' probabilities; a pixel's
predicted label is the most probable of background (``255 - sum`` of the bands) and the classes
(ties go to the lower class id, background first). Mask pixels 255 are left out. Scores come from
:func:`pipeline.model.metrics.scores` (rows of the confusion matrix: true class; columns: predicted).
Importable with numpy, torch and Pillow alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.errors import InputDataError
from pipeline.inference.probs import decode_probs
from pipeline.model.metrics import IGNORE, confusion, scores
from pipeline.vectors.instances import edge_value


def labels_from_probs(q: np.ndarray) -> np.ndarray:
    """uint8 (K, H, W) foreground probabilities -> uint8 (H, W) label index: 0 background,
    k the k-th class (by ascending id)."""
    bg = 255 - q.astype(np.int16).sum(0, keepdims=True)
    return np.argmax(np.concatenate([bg, q.astype(np.int16)]), axis=0).astype(np.uint8)


def mask_to_index(mask: np.ndarray, class_ids: Sequence[int], where: str) -> np.ndarray:
    """Mask class ids -> label index (0 background, k the k-th id of ``class_ids``; a class's edge
    value ``255 - id`` counts as the class), 255 kept."""
    lut = np.full(256, 254, dtype=np.uint8)
    lut[0], lut[IGNORE] = 0, IGNORE
    for k, cid in enumerate(class_ids, start=1):
        lut[edge_value(cid)] = k
    for k, cid in enumerate(class_ids, start=1):
        lut[cid] = k
    out = lut[mask]
    if (out == 254).any():
        bad = sorted(set(np.unique(mask[out == 254]).tolist()))
        raise InputDataError(f"{where}: mask values {bad} are not class ids {list(class_ids)}; "
                             "the masks were made with another class table: rerun MasksAll")
    return out


def evaluate_tiles(pairs: Sequence[tuple[Path, ...]], classes: Sequence[tuple[str, int]],
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Confusion matrix and scores over ``(prediction png, mask png)`` pairs, or triples with the
    tile's image (its nodata pixels, :func:`pipeline.imagery.nodata.nodata_pixels`, are not scored:
    no imagery, no evidence either way); ``classes`` are
    ``(name, id)`` by ascending id. Returns a JSON-ready dict: ``classes`` (names, background
    first), ``confusion`` (rows true, columns predicted, pixel counts), ``iou``, ``precision``,
    ``recall``, ``f1`` per class, ``miou`` (foreground), ``accuracy`` and ``tiles``."""
    from pipeline.imagery.nodata import nodata_pixels
    from pipeline.model.split import read_image, read_mask

    ids = [cid for _, cid in classes]
    names = ["background", *(n for n, _ in classes)]
    n = len(names)
    cm = torch.zeros((n, n), dtype=torch.int64)
    for i, (ppath, mpath, *image) in enumerate(pairs):
        q = decode_probs(Path(ppath).read_bytes(), n - 1, where=str(ppath))
        truth = mask_to_index(read_mask(mpath), ids, str(mpath))
        nodata = nodata_pixels(read_image(image[0])) if image and image[0] is not None else None
        if nodata is not None and nodata.shape == truth.shape:
            truth = np.where(nodata, np.uint8(IGNORE), truth)
        if truth.shape != q.shape[1:]:
            raise InputDataError(f"{ppath}: prediction of {q.shape[1:]} px but mask {mpath} has {truth.shape}; "
                                 "rerun the prediction (region.tile_size changed?)")
        cm += confusion(torch.from_numpy(labels_from_probs(q)), torch.from_numpy(truth), n)
        if progress is not None and (i % 64 == 0 or i + 1 == len(pairs)):
            progress(i + 1, len(pairs))
    out = scores(cm.numpy(), names)
    out.update({"classes": names, "confusion": cm.tolist(), "tiles": len(pairs),
                "pixels": int(cm.sum())})
    return json_ready(out)


def split_ious(pairs_by_split: Mapping[str, Sequence[tuple[Path, ...]]], classes: Sequence[tuple[str, int]],
               ) -> dict[str, dict[str, Any]]:
    """``{split: {"tiles": n, "iou": {class: IoU}}}`` of the same predictions on other splits than
    the one scored (the training and validation tiles): measured like the test figure, so a user
    sees how far training fits and whether the validation that chose ``best.pt`` agrees with the
    test split. Splits without a pair are left out."""
    out: dict[str, dict[str, Any]] = {}
    for split, pairs in pairs_by_split.items():
        if pairs:
            r = evaluate_tiles(pairs, classes)
            out[split] = {"tiles": r["tiles"], "iou": r["iou"]}
    return out


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN and infinities (undefined scores) replaced by None, so it is valid JSON."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
