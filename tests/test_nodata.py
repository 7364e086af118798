"""Pixels off the imagery (every band 0: how the imagery stage writes a raster's nodata and what lies
outside it) are no evidence: training and evaluation ignore them, prediction writes 0 there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.config.train import SplitSpec
from pipeline.imagery.nodata import nodata_pixels
from pipeline.inference.evaluate import evaluate_tiles
from pipeline.inference.predict import _off_nodata
from pipeline.inference.probs import encode_probs
from pipeline.model.dataset import TileDataset
from pipeline.model.split import IGNORE, make_split
from tests.train_fixtures import Z, write_region


def test_nodata_pixels_are_runs_of_zero_in_every_band() -> None:
    img = np.full((64, 64, 3), 7, dtype=np.uint8)
    assert nodata_pixels(img) is None
    img[:, :3] = 0  # a collar along the west edge: 192 pixels, over 1 % of the tile
    img[10, 1] = (0, 0, 1)  # a dark pixel with one band lit is imagery
    shadow = (slice(30, 37), slice(30, 37))
    img[shadow] = 0  # a patch of black shadow, 49 pixels: imagery
    got = nodata_pixels(img)
    assert got is not None and got.sum() == 191 and got[:, :3].sum() == 191 and not got[10, 1]
    assert not got[shadow].any()
    assert (nodata_pixels(img.transpose(2, 0, 1), channel_axis=0) == got).all()
    img[:, :3] = 9
    assert nodata_pixels(img) is None  # only the shadow is left


def test_training_ignores_the_labels_on_nodata(tmp_path: Path) -> None:
    write_region(tmp_path, n=2, seed=1)
    rows, stats = make_split(tmp_path, SplitSpec(val_fraction=0.0, test_fraction=0.0), Z)
    k = next(i for i, r in enumerate(rows) if np.asarray(Image.open(tmp_path / r.mask)).any())
    mask = np.asarray(Image.open(tmp_path / rows[k].mask))
    off = np.zeros(mask.shape, dtype=bool)
    off[:, : int(np.flatnonzero(mask.any(axis=0))[0]) + 3] = True  # off the imagery: up to a labelled column
    assert (mask[off] != 0).any()  # labels there, to be ignored
    path = tmp_path / rows[k].image
    img = np.asarray(Image.open(path).convert("RGB")).copy()
    img[off] = 0
    Image.fromarray(img).save(path)
    got = TileDataset(tmp_path, rows, stats["band_stats"])[k]["mask"].numpy()
    assert (got[off] == IGNORE).all()
    assert (got[~off] == mask[~off]).all()


def test_prediction_is_zero_on_nodata() -> None:
    p = np.full((2, 32, 32), 0.8, dtype=np.float32)
    img = np.full((3, 32, 32), 50, dtype=np.uint8)
    img[:, :, :4] = 0
    out = _off_nodata(p, img)
    assert (out[:, :, :4] == 0).all() and (out[:, :, 4:] == np.float32(0.8)).all()
    assert (p == np.float32(0.8)).all()  # the input is left as it was
    assert _off_nodata(p, None) is p and _off_nodata(p, np.full((3, 32, 32), 9, dtype=np.uint8)) is p


def test_evaluation_does_not_score_nodata(tmp_path: Path) -> None:
    n = 16
    mask = np.ones((n, n), dtype=np.uint8)  # a building everywhere
    probs = np.zeros((1, n, n), dtype=np.uint8)
    probs[0, :, n // 2:] = 255  # predicted on the east half; the west half is off the imagery
    img = np.full((n, n, 3), 90, dtype=np.uint8)
    img[:, : n // 2] = 0
    (tmp_path / "p.png").write_bytes(encode_probs(probs))
    Image.fromarray(mask).save(tmp_path / "m.png")
    Image.fromarray(img).save(tmp_path / "i.png")
    with_image = evaluate_tiles([(tmp_path / "p.png", tmp_path / "m.png", tmp_path / "i.png")], [("building", 1)])
    without = evaluate_tiles([(tmp_path / "p.png", tmp_path / "m.png")], [("building", 1)])
    assert with_image["pixels"] == n * n // 2 and with_image["iou"]["building"] == 1.0
    assert without["pixels"] == n * n and without["iou"]["building"] == 0.5


def test_the_imagery_stage_keeps_zero_for_nodata_alone() -> None:
    from pipeline.imagery.nodata import reserve_zero

    data = np.zeros((3, 16, 16), dtype=np.uint8)
    data[:, 0, 0] = (5, 0, 0)
    valid = np.zeros((16, 16), dtype=bool)
    valid[:, :8] = True  # the east half is off the raster
    out = reserve_zero(data, valid)
    assert out[:, 0, 0].tolist() == [5, 0, 0]  # lit in one band: as it was
    assert (out[:, 1:, :8] == 1).all() and (out[:, :, 8:] == 0).all()  # valid black -> 1; nodata stays 0
    got = nodata_pixels(out, channel_axis=0)
    assert got is not None and (got == ~valid).all()
    assert reserve_zero(out, valid) is out  # nothing left to change: no copy
