"""Training logs for people: a CSV row per epoch, TensorBoard scalars and a ``training.png`` plot.

Written by rank 0 only. matplotlib and tensorboard are imported when first used.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def flat_row(epoch_row: Mapping[str, Any]) -> dict[str, Any]:
    """One history entry -> flat columns (``iou_building``, ``f1_road``, ...)."""
    out: dict[str, Any] = {}
    for k, v in epoch_row.items():
        if isinstance(v, Mapping):
            for name, x in v.items():
                out[f"{k}_{name}"] = x
        else:
            out[k] = v
    return out


def write_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """``metrics.csv``: one row per epoch (rewritten whole, atomically, so a resume keeps it whole)."""
    from pipeline.core.atomic import atomic_path

    rows = [flat_row(h) for h in history]
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def write_plot(path: Path, history: Sequence[Mapping[str, Any]]) -> Any:
    """``training.png``: train/val loss (log scale, so one spike does not flatten the rest of
    the curve) and per-class validation IoU by epoch; returns the (closed) matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pipeline.core.atomic import atomic_path

    ep = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax1.plot(ep, [h["train_loss"] for h in history], label="train loss")
    if any(not math.isnan(h.get("val_loss", math.nan)) for h in history):
        ax1.plot(ep, [h.get("val_loss", math.nan) for h in history], label="val loss")
    ax1.set_xlabel("epoch")
    losses = [v for h in history for v in (h.get("train_loss"), h.get("val_loss"))
              if isinstance(v, (int, float)) and math.isfinite(v)]
    if losses and min(losses) > 0:  # (a loss of 0 or below has no place on a log axis)
        ax1.set_yscale("log")
    ax1.set_ylabel("loss (log scale)" if ax1.get_yscale() == "log" else "loss")
    ax1.legend()
    names = list(history[-1].get("iou", {}))
    for n in names[1:]:
        ax2.plot(ep, [h.get("iou", {}).get(n, math.nan) for h in history], label=f"IoU {n}")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("validation IoU")
    ax2.set_ylim(0, 1)
    if names[1:]:
        ax2.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return fig


class Board:
    """TensorBoard scalars under ``log_dir`` (a no-op when tensorboard is not installed)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.writer: Any = None
        else:
            self.writer = SummaryWriter(str(log_dir))

    def epoch(self, row: Mapping[str, Any]) -> None:
        if self.writer is None:
            return
        e = int(row["epoch"])
        for k, v in flat_row(row).items():
            if k != "epoch" and isinstance(v, (int, float)) and not math.isnan(v):
                self.writer.add_scalar(k.replace("_", "/", 1) if "_" in k else k, v, e)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
