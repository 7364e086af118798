"""Segmentation metrics from a confusion matrix: per-class IoU, precision, recall and F1.

Pixels whose true label is 255 (ignore) are left out everywhere. Pure numpy/torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

IGNORE = 255


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """(n, n) int64 matrix, rows = true class, columns = predicted class, of integer label
    tensors ``pred`` and ``target`` (same shape); target ``ignore`` pixels are skipped."""
    keep = target != ignore
    t = target[keep].to(torch.int64)
    p = pred[keep].to(torch.int64).clamp(0, n_classes - 1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_classes):
        bad = int(t.max()) if int(t.max()) >= n_classes else int(t.min())
        raise ValueError(f"mask value {bad} is not a class id 0..{n_classes - 1} or {ignore}; "
                         "the masks were made with another class table: rerun MasksAll")
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes).cpu()


def scores(cm: np.ndarray | torch.Tensor, names: Sequence[str]) -> dict[str, Any]:
    """Per-class ``iou``, ``precision``, ``recall``, ``f1`` ({name: value}; NaN where undefined)
    from confusion matrix ``cm`` (rows true, columns predicted), plus ``miou`` over the classes
    after the first (background) and pixel ``accuracy``."""
    m = np.asarray(cm, dtype=np.float64)
    tp = np.diag(m)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    fg = iou[1:] if len(iou) > 1 else iou
    out: dict[str, Any] = {k: {n: float(v[i]) for i, n in enumerate(names)}
                           for k, v in (("iou", iou), ("precision", precision), ("recall", recall), ("f1", f1))}
    out["miou"] = float(np.nanmean(fg)) if np.isfinite(fg).any() else float("nan")
    out["accuracy"] = float(tp.sum() / m.sum()) if m.sum() else float("nan")
    return out
