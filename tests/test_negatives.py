"""Hard negatives (pipeline.model.negatives): the pixels of ``[labels] negatives`` weigh
``[train] negatives_weight`` in the cross-entropy, the weight map follows the mask through the
augmentations, and the weight enters the train digest only where negatives are set."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
import torch
from PIL import Image

from pipeline.config.labels import LabelsConfig
from pipeline.config.region import load_config
from pipeline.config.train import SplitSpec
from pipeline.core.stages import stage_config, stage_digest
from pipeline.model.dataset import TileDataset, build_augment, collate
from pipeline.model.losses import build_loss, weighted_ce
from pipeline.model.negatives import negative_flags
from pipeline.model.split import TileRow, make_split
from pipeline.model.train import FitOptions, RunInfo, fit
from pipeline.model.train_run import _hard_negatives
from pipeline.tiles.geo import to_lonlat
from pipeline.tiles.tilemath import Tile, tile_bounds, tile_extent_m
from tests.test_config import BASE
from tests.test_train import CLASSES, MODEL, SPEC
from tests.train_fixtures import X0, Y0, Z, write_region

SIZE = 64
BAND = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}


def _area(t: Tile, c0: int, r0: int, c1: int, r1: int, size: int = SIZE) -> shapely.Geometry:
    """The EPSG:4326 box over pixel columns c0..c1 and rows r0..r1 (pixel edges) of tile ``t``."""
    left, _, _, top = tile_bounds(t)
    res = tile_extent_m(t.z) / size
    box = shapely.box(left + c0 * res, top - r1 * res, left + c1 * res, top - r0 * res)
    return to_lonlat(np.array([box], dtype=object))[0]


def _geojson(path: Path, geoms: list[shapely.Geometry]) -> Path:
    feats = [{"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(g)} for g in geoms]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def _png(path: Path, arr: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def test_flags_and_weight_map_follow_the_mask_through_flips_and_rotations(tmp_path: Path) -> None:
    t = Tile(Z, X0, Y0)
    c0, r0, c1, r1 = 8, 4, 40, 20  # an asymmetric box: every flip and rotation moves it
    neg = _geojson(tmp_path / "rejected.geojson", [_area(t, c0, r0, c1, r1)])
    rows = [TileRow(t.z, t.x, t.y, "train", "img.png", "mask.png", 1),
            TileRow(t.z, t.x + 5, t.y, "train", "img.png", "mask.png", 1)]  # far from the negative
    flags = negative_flags(LabelsConfig(negatives=(neg,)), rows, SIZE)
    inside = np.zeros((SIZE, SIZE), np.uint8)
    inside[r0:r1, c0:c1] = 1
    assert list(flags) == ["mask.png"]  # keyed by mask path; untouched tiles left out
    np.testing.assert_array_equal(flags["mask.png"], inside)  # pixel centres inside, as the masks burn
    assert negative_flags(LabelsConfig(), rows, SIZE) == {}

    # the mask is 1 exactly on the negative box, so the weight must be w exactly where the mask is 1
    rng = np.random.default_rng(0)
    _png(tmp_path / "img.png", rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8))
    _png(tmp_path / "mask.png", inside)
    spec = replace(SPEC, scale_jitter=0.0, color_jitter=0.0)
    for scale in (1.0, 0.5):
        ds = TileDataset(tmp_path, rows[:1], BAND, scale, build_augment(spec, 3), negatives=flags, negatives_weight=7.0)
        plain = TileDataset(tmp_path, rows[:1], BAND, scale, build_augment(spec, 3))
        seen = set()
        for seed in range(12):
            s, p = ds[(0, seed)], plain[(0, seed)]
            torch.testing.assert_close(s["image"], p["image"])  # the extra mask changes no draw
            assert torch.equal(s["mask"], p["mask"]) and "weight" not in p
            w = s["weight"]
            assert w.dtype == torch.float32 and w.shape == s["mask"].shape
            assert torch.equal(w == 7.0, s["mask"] == 1) and bool((w[s["mask"] == 0] == 1.0).all())
            seen.add(tuple(torch.nonzero(s["mask"])[0].tolist()))
        assert len(seen) > 2  # the box moved: the augmentations did flip and rotate
    batch = collate([ds[(0, 1)], ds[(0, 2)]])
    assert batch["weight"].shape == (2, SIZE // 2, SIZE // 2)
    assert "weight" not in collate([plain[(0, 1)]])


def test_weighted_loss_is_larger_where_weights_are_larger_and_plain_with_w_1() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 16, 16, generator=g)
    target = torch.randint(0, 3, (2, 16, 16), generator=g)
    target[:, 0, :] = 255  # ignored row
    ones = torch.ones(2, 16, 16)
    plain = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(weighted_ce(logits, target, ones), plain)
    loss = build_loss((("ce", 1.0), ("dice", 1.0)))
    torch.testing.assert_close(loss(logits, target, ones), loss(logits, target))
    region = torch.zeros(2, 16, 16, dtype=torch.bool)
    region[:, 4:10, 4:10] = True
    got = [float(loss(logits, target, torch.where(region, torch.tensor(w), torch.tensor(1.0)))) for w in (1, 5, 10)]
    assert got[0] < got[1] < got[2]
    # the extra loss is the extra weight times the region's cross-entropy (over the pixels not ignored)
    per = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    extra = float(4 * (per * region).sum() / (target != 255).sum())
    assert got[1] - got[0] == pytest.approx(extra, rel=1e-5)
    # edge outputs: the folded multiclass part is weighted alike
    fold = torch.arange(256)
    fold[3] = 1
    edged = build_loss((("ce", 1.0),), fold=fold, n_main=3)
    logits4 = torch.randn(2, 4, 16, 16, generator=g)
    torch.testing.assert_close(edged(logits4, target, ones), edged(logits4, target))
    assert float(edged(logits4, target, torch.where(region, 5.0, 1.0))) > float(edged(logits4, target))


def _cfg(tmp_path: Path, extra: str, name: str) -> Any:
    p = tmp_path / name
    p.write_text(BASE + extra)
    return load_config(p)


def test_negatives_weight_enters_the_train_digest_only_with_negatives(tmp_path: Path) -> None:
    neg = _geojson(tmp_path / "rejected.geojson", [_area(Tile(Z, X0, Y0), 0, 0, 8, 8)])
    base = _cfg(tmp_path, "", "base.toml")
    heavier = _cfg(tmp_path, "\n[train]\nnegatives_weight = 10.0\n", "heavier.toml")
    assert set(stage_config(base, "train")) == {"train", "classes"}  # as before the key existed
    assert "negatives_weight" not in stage_config(heavier, "train")["train"]
    assert stage_digest(base, "train") == stage_digest(heavier, "train")  # no negatives: the weight does nothing
    with_neg = _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\n', "neg.toml")
    with_neg10 = _cfg(tmp_path, f'\n[labels]\nnegatives = ["{neg}"]\n[train]\nnegatives_weight = 10.0\n', "neg10.toml")
    got = stage_config(with_neg, "train")
    assert got["train.negatives_weight"] == 5.0 and got["labels.negatives"] == [str(neg)]
    assert stage_digest(with_neg, "train") != stage_digest(with_neg10, "train")
    assert stage_digest(with_neg, "masks") == stage_digest(with_neg10, "masks")  # masks do not weigh
    assert _hard_negatives(base, [], SIZE) == (None, 1.0)
    flags, w = _hard_negatives(with_neg10, [TileRow(Z, X0, Y0, "train", "i.png", "m.png", 1)], SIZE)
    assert w == 10.0 and list(flags) == ["m.png"]


def test_training_with_hard_negatives(tmp_path: Path) -> None:
    """One step over every training tile: the same start, the same batch, the negatives' pixels
    weighing 5 instead of 1 make the first loss larger; the run ends with a checkpoint."""
    torch.set_num_threads(1)
    data = tmp_path / "tiles"
    write_region(data, n=3, seed=3, size=SIZE)
    rows, st = make_split(data, SplitSpec(block_zoom=Z, val_fraction=0.2, test_fraction=0.0, seed=1), Z)
    train_rows = [r for r in rows if r.split == "train"]
    areas = [_area(Tile(r.z, r.x, r.y), 0, 0, 32, 32) for r in train_rows]  # a quarter of every training tile
    flags = negative_flags(LabelsConfig(negatives=(_geojson(tmp_path / "rejected.geojson", areas),)), train_rows, SIZE)
    assert len(flags) == len(train_rows)
    spec = replace(SPEC, epochs=1, batch_size=16, augment=False)
    band = st["band_stats"]
    val = TileDataset(data, [r for r in rows if r.split == "val"], band)
    losses = []
    for negatives in (None, flags):
        train = TileDataset(data, train_rows, band, negatives=negatives, negatives_weight=5.0)
        out = tmp_path / ("neg" if negatives else "plain")
        hist = fit(spec, MODEL, train, val, out, RunInfo(CLASSES, band, SIZE, "d1"),
                   FitOptions(device=torch.device("cpu"), progress=False))
        losses.append(hist.rows[0]["train_loss"])
        assert (out / "best.pt").is_file()
    assert np.isfinite(losses).all() and losses[1] > losses[0]


def test_negatives_without_the_ce_loss_get_a_note(tmp_path: Path) -> None:
    from pipeline.model.negatives import negatives_note

    neg = (tmp_path / "rejected.geojson",)
    assert negatives_note(LabelsConfig(negatives=neg), (("ce", 1.0), ("dice", 1.0))) is None
    assert negatives_note(LabelsConfig(), (("dice", 1.0),)) is None  # no negatives: nothing to weigh
    note = negatives_note(LabelsConfig(negatives=neg), (("dice", 1.0), ("lovasz", 1.0)))
    assert note is not None and "add ce = 1.0 to [train] losses" in note and "dice, lovasz" in note
