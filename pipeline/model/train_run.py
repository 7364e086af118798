"""Train a region's model from its config, ``split.csv`` and ``split_stats.json``; the torchrun entry.

    torchrun --nproc-per-node 4 -m pipeline.model.train_run --config configs/<region>.toml
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 8 -m pipeline.model.train_run --config ...

Needs torch, segmentation-models-pytorch, numpy, Pillow and albumentations (no geospatial stack):
the split files are plain CSV and JSON (a region with ``[labels] negatives`` reads them with pyogrio,
shapely and rasterio: :mod:`pipeline.model.negatives`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.config.region import RegionConfig, load_config
from pipeline.config.train import TrainSpec
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.model.network import ModelSpec
from pipeline.model.split import TileRow, read_split_csv


def model_spec_for(cfg: RegionConfig, spec: TrainSpec, bands: int) -> ModelSpec:
    """The model a region's ``[train]`` asks for: background, one output per class, one per edge band."""
    return ModelSpec(arch=spec.arch, encoder=spec.encoder, in_channels=bands, arch_options=spec.arch_options,
                     classes=len(cfg.classes) + 1 + len(cfg.edge_ids),
                     encoder_weights_path=None if spec.init is not None else spec.encoder_weights)


def check_init(spec: TrainSpec, out_dir: Path) -> None:
    """``[train] init`` must not be a checkpoint of the folder this training writes (it would be
    overwritten while it is the starting point)."""
    if spec.init is not None and spec.init.resolve().parent == Path(out_dir).resolve():
        raise ConfigError(f"[train] init = '{spec.init}' is in {out_dir}, which this training overwrites; copy it "
                          "elsewhere (e.g. models/base.pt) and point [train] init there")


#: the two models of a region: ``main`` (model/, trained on the train split) and, with ``[train]
#: cross_fit``, ``cross`` (model/cross/, trained on the validation and test tiles; it predicts the
#: training tiles, so every tile is predicted by a model that never saw its labels)
PARTS = ("main", "cross")


def part_dir(data_dir: Path, part: str) -> Path:
    """The model folder of ``part``."""
    return Path(data_dir) / "model" if part == "main" else Path(data_dir) / "model" / "cross"


def part_rows(rows: list[TileRow], part: str) -> tuple[list[TileRow], list[TileRow]]:
    """(training, validation) rows of ``part``: the split's own for ``main``; for ``cross`` the
    validation + test tiles, validated on every fifth training tile (by x, y)."""
    if part == "main":
        return [r for r in rows if r.split == "train"], [r for r in rows if r.split == "val"]
    held = [r for r in rows if r.split in ("val", "test")]
    if not held:
        raise InputDataError("[train] cross_fit needs validation or test tiles (split.csv has none); "
                             "raise [split] val_fraction / test_fraction or set cross_fit = false")
    return held, sorted((r for r in rows if r.split == "train"), key=lambda r: (r.x, r.y))[::5]


def read_split_stats(path: Path) -> dict[str, Any]:
    """``split_stats.json`` as a dict (band stats, class shares, counts)."""
    try:
        stats: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{path}: cannot read the split statistics ({exc}); run SplitDataset first") from exc
    return stats


def train_region(cfg: RegionConfig, digest: str, device: Any = None, workers: int = 0, progress: bool = True,
                 on_step: Any = None, on_epoch: Any = None, part: str = "main") -> Any:
    """Train (or resume) the model ``part`` of region ``cfg`` into ``data/<region>/model/`` (or
    ``model/cross/``, see :data:`PARTS`); returns the History."""
    from pipeline.model.dataset import TileDataset, build_augment
    from pipeline.model.regions import RegionTiles, other_regions, pooled_stats, region_model, region_tiles
    from pipeline.model.train import FitOptions, RunInfo, fit
    from pipeline.vectors.instances import target_lut

    spec: TrainSpec = cfg.train
    if spec.init is not None:  # a region config names that region's model/best.pt (pipeline/model/regions.py)
        spec = dataclasses.replace(spec, init=region_model(spec.init, "[train] init"))
    check_init(spec, part_dir(cfg.data_dir, part))
    rows = read_split_csv(cfg.data_dir / "split.csv")
    stats = read_split_stats(cfg.data_dir / "split_stats.json")
    bands = int(stats["bands"])
    band_stats = stats["band_stats"]
    augment = build_augment(spec, bands) if spec.augment else None
    lut = target_lut([c.id for c in cfg.classes], cfg.edge_ids)
    train_rows, val_rows = part_rows(rows, part)
    own_rows = train_rows
    others = other_regions(cfg)
    if others:  # several regions, one model: their train and validation tiles join (pipeline/model/regions.py)
        theirs = [region_tiles(o, read_split_stats(o.data_dir / "split_stats.json")) for o in others]
        stats = pooled_stats([RegionTiles(cfg.name, tuple(rows), stats), *theirs])
        band_stats = stats["band_stats"]
        train_rows = [*train_rows, *(r for t in theirs for r in t.rows if r.split == "train")]
        val_rows = [*val_rows, *(r for t in theirs for r in t.rows if r.split == "val")]
    negatives, weight = _hard_negatives(cfg, own_rows, int(stats["tile_size"]))
    train_ds = TileDataset(cfg.data_dir, train_rows, band_stats, spec.scale, augment, lut, negatives=negatives,
                           negatives_weight=weight)
    val_ds = TileDataset(cfg.data_dir, val_rows, band_stats, spec.scale, lut=lut)
    info = RunInfo(classes=tuple({"name": c.name, "id": c.id} for c in cfg.classes), band_stats=band_stats,
                   tile_size=round(int(stats["tile_size"]) * spec.scale), config_digest=digest,
                   scale=spec.scale, edges=cfg.edge_ids, band_px=max(1, round(cfg.masks.edge_px * spec.scale)))
    return fit(spec, model_spec_for(cfg, spec, bands), train_ds, val_ds, part_dir(cfg.data_dir, part), info,
               FitOptions(device=device, workers=workers, progress=progress, on_step=on_step, on_epoch=on_epoch))


def _hard_negatives(cfg: RegionConfig, rows: list[TileRow], size: int) -> tuple[Any, float]:
    """(negative flags of this region's training ``rows``, ``[train] negatives_weight``): the
    dataset's hard negatives (:mod:`pipeline.model.negatives`); (None, 1) without negatives."""
    if not cfg.labels.negatives:
        return None, 1.0
    from pipeline.model.negatives import negative_flags

    return negative_flags(cfg.labels, rows, size), cfg.train.negatives_weight


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.model.train_run --config configs/<region>.toml`` (one process per GPU under torchrun)."""
    import torch

    from pipeline.core.stages import stage_digest
    from pipeline.model.device import pick_device

    ap = argparse.ArgumentParser(prog="python -m pipeline.model.train_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="configs/<region>.toml")
    ap.add_argument("--workers", type=int, default=-1, help="DataLoader workers per process (-1: auto)")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    ap.add_argument("--part", default="main", choices=PARTS, help="main, or cross ([train] cross_fit)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    device = pick_device(args.device)
    workers = args.workers if args.workers >= 0 else default_workers(device)
    hist = train_region(cfg, stage_digest(cfg, "train"), device=device, workers=workers, part=args.part)
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    print(f"best epoch {hist.best_epoch}: validation mIoU {hist.best_miou:.4f}", file=sys.stderr)
    return 0


def default_workers(device: Any) -> int:
    """DataLoader workers: on CUDA, the CPU cores per local GPU (at most 8); on CPU none."""
    import os

    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return 0
    per_gpu = (os.cpu_count() or 1) // max(1, torch.cuda.device_count())
    return max(1, min(8, per_gpu - 1))


if __name__ == "__main__":
    raise SystemExit(main())
