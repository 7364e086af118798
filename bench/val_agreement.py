"""Does the validation that chose ``best.pt`` agree with the test split? (issue 19, item 8)

Scores a region's ``model/best.pt`` on its validation and test tiles the way training validates
(the model's input scale, no neighbour context, :func:`pipeline.model.train.evaluate`), so the two
figures differ only by the tiles; ``model/metrics.json`` (``EvaluateModel``) holds the full
prediction's figures of the same splits beside them.

Run: ``python -m bench.val_agreement configs/demo.toml`` (a finished region). Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pipeline.config.region import load_config
from pipeline.model.dataset import EpochSampler, TileDataset, collate
from pipeline.model.metrics import scores
from pipeline.model.network import load_checkpoint
from pipeline.model.split import read_split_csv
from pipeline.model.train import RunInfo, _fold_table, evaluate
from pipeline.model.train_run import read_split_stats
from pipeline.vectors.instances import target_lut


def split_iou(config: Path) -> dict[str, object]:
    """{split: {class: IoU}} for ``val`` and ``test`` at the model's scale, the chosen epoch, and
    metrics.json's full-prediction figures."""
    cfg = load_config(config)
    rows = read_split_csv(cfg.data_dir / "split.csv")
    st = read_split_stats(cfg.data_dir / "split_stats.json")
    lut = target_lut([c.id for c in cfg.classes], cfg.edge_ids)
    model, meta = load_checkpoint(cfg.data_dir / "model" / "best.pt")
    names = ["background"] + [c.name for c in sorted(cfg.classes, key=lambda c: c.id)]
    info = RunInfo(tuple({"name": c.name, "id": c.id} for c in cfg.classes), st["band_stats"], 0, "",
                   edges=cfg.edge_ids)
    out: dict[str, object] = {"epoch": meta.get("metrics", {}).get("epoch")}
    for split in ("val", "test"):
        mine = [r for r in rows if r.split == split]
        ds = TileDataset(cfg.data_dir, mine, st["band_stats"], cfg.train.scale, lut=lut)
        dl = DataLoader(ds, batch_size=8, sampler=EpochSampler(len(ds), 0, shuffle=False), collate_fn=collate)
        cm, _ = evaluate(model, dl, len(names), torch.device("cpu"), fold=_fold_table(info, len(names)))
        iou = scores(cm, names)["iou"]
        out[f"{split}_model_scale"] = {"tiles": len(mine), **{k: round(v, 4) for k, v in iou.items()}}
    metrics = cfg.data_dir / "model" / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text())
        out["full_prediction"] = {"test": m.get("iou"), **{s: v.get("iou") for s, v in (m.get("splits") or {}).items()}}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    print(json.dumps(split_iou(Path(sys.argv[1]))))
