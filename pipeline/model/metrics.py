"""Segmentation metrics from a confusion matrix: per-class IoU, precision, recall and F1; and
the IoU of polygons (:func:`iou`: vectorised with shapely, for matching and regularising).

Pixels whose true label is 255 (ignore) are left out everywhere. numpy; torch and shapely are
imported by the functions that use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

IGNORE = 255


def confusion(pred: torch.Tensor, target: torch.Tensor, n_classes: int, ignore: int = IGNORE) -> torch.Tensor:
    """(n, n) int64 matrix, rows = true class, columns = predicted class, of integer label
    tensors ``pred`` and ``target`` (same shape); target ``ignore`` pixels are skipped."""
    import torch

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


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise intersection over union of two arrays of polygons (any one CRS; 0 where both
    are empty)."""
    import shapely

    inter = shapely.area(shapely.intersection(a, b))
    union = shapely.area(a) + shapely.area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
