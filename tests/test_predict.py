"""Prediction library: context windows (neighbours, mirroring), the seam test, flip TTA,
checkpoint compatibility errors. CPU, tiny models, generated tiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.errors import InputDataError, ModelError
from pipeline.inference.predict import check_compatible, make_engine, predict_tiles, prediction_pngs, prune_graphs
from pipeline.inference.predict_onnx import OnnxEngine
from pipeline.inference.predict_torch import Predictor, forward_probs, load_predictor, predict_windows
from pipeline.inference.probs import decode_probs, encode_probs
from pipeline.inference.windows import TileReader, context_window, plan_blocks, plan_border, read_image, tile_window
from pipeline.model.network import ModelSpec, build_model, make_meta, save_checkpoint

CLASSES = [{"name": "building", "id": 1}, {"name": "road", "id": 2}]
STATS = {"mean": [0.45, 0.5, 0.4], "std": [0.2, 0.22, 0.25]}


def smooth_mosaic(n: int, t: int, seed: int = 0) -> np.ndarray:
    """uint8 (3, n*t, n*t): smooth blobs plus noise, so every tile and border differs."""
    rng = np.random.default_rng(seed)
    side = n * t
    coarse = rng.uniform(0, 255, (3, side // 8 + 1, side // 8 + 1))
    img = np.kron(coarse, np.ones((8, 8)))[:, :side, :side]
    return np.clip(img + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)


def write_tiles(folder: Path, mosaic: np.ndarray, t: int, z: int = 18, x0: int = 100, y0: int = 200,
                skip: set[tuple[int, int]] = frozenset()) -> dict[tuple[int, int, int], Path]:  # type: ignore[assignment]
    """Cut the mosaic into PNG tiles z/x/y (x east, y south); returns {tile: path}."""
    from PIL import Image

    n = mosaic.shape[1] // t
    paths = {}
    for j in range(n):
        for i in range(n):
            if (i, j) in skip:
                continue
            p = folder / f"{z}/{x0 + i}/{y0 + j}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mosaic[:, j * t:(j + 1) * t, i * t:(i + 1) * t].transpose(1, 2, 0)).save(p)
            paths[(z, x0 + i, y0 + j)] = p
    return paths


class TinyFCN(nn.Module):
    """A fully convolutional net with one stride-2 level; receptive field radius < 12 px."""

    def __init__(self, bands: int = 3, outputs: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(bands, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.Conv2d(16, outputs, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        d = torch.relu(self.b(torch.relu(self.down(a))))
        u = nn.functional.interpolate(d, scale_factor=2, mode="nearest")
        return self.out(torch.cat([a, u], 1)) * 3.0


def tiny_predictor(t: int) -> Predictor:
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    return Predictor(TinyFCN().eval(), make_meta(spec, CLASSES, STATS, t, "test"), torch.device("cpu"), "tiny")


def smp_predictor(t: int, tmp: Path) -> tuple[Predictor, Path]:
    torch.manual_seed(1)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    path = tmp / "tiny.pt"
    save_checkpoint(path, build_model(spec), make_meta(spec, CLASSES, STATS, t, "test"))
    return load_predictor(path), path


def mosaic_probs(pred: Predictor, mosaic: np.ndarray) -> np.ndarray:
    """Foreground probabilities of the whole mosaic in one forward pass (no context handling)."""
    from pipeline.model.network import normalise

    x = normalise(torch.from_numpy(mosaic), pred.meta["band_stats"])[None]
    return forward_probs(pred, x)[0, 1:].numpy()


# ---------------------------------------------------------------------------------------------
# Windows


def test_border_rounds_up_to_the_stride() -> None:
    assert plan_border(256, 32, 32) == 32
    assert plan_border(256, 20, 32) == 32
    assert plan_border(256, 33, 32) == 64
    assert plan_border(64, 200, 32) == 64  # at most one tile
    assert plan_border(256, 0, 32) == 0


def test_model_scale_sets_the_border_and_input_size() -> None:
    """A half-scale checkpoint (meta scale 0.5, or an old one whose tile_size is half the tiles')
    needs a 64-px border for its stride of 32 model px, and gets a half-size input."""
    from pipeline.inference.predict import border_for
    from pipeline.inference.predict_torch import model_input

    base = tiny_predictor(256)
    for meta in ({**base.meta, "scale": 0.5, "tile_size": 128}, {**{k: v for k, v in base.meta.items()
                                                                    if k != "scale"}, "tile_size": 128}):
        pred = Predictor(base.model, meta, base.device, "half")
        assert border_for(pred.info, 256, 32) == 64
        assert model_input(pred, np.zeros((2, 3, 384, 384), np.uint8), 256).shape == (2, 3, 192, 192)
    assert border_for(base.info, 256, 32) == 32  # scale 1


def test_no_neighbour_is_mirrored() -> None:
    c = smooth_mosaic(1, 64)
    w = context_window(c, {}, 32)
    assert np.array_equal(w, np.pad(c, ((0, 0), (32, 32), (32, 32)), mode="symmetric"))
    assert np.array_equal(context_window(c, {}, 64), np.pad(c, ((0, 0), (64, 64), (64, 64)), mode="symmetric"))
    with pytest.raises(InputDataError, match=r"tile 1/2/3: its neighbour \(\+1, \+0\) has shape \(4, 64, 64\)"):
        context_window(c, {(1, 0): np.zeros((4, 64, 64), np.uint8)}, 32, where="tile 1/2/3")


def test_neighbours_give_the_border(tmp_path: Path) -> None:
    t, b = 64, 32
    m = smooth_mosaic(3, t)
    reader = TileReader(write_tiles(tmp_path, m, t))
    w = tile_window(reader, (18, 101, 201), b)
    assert np.array_equal(w, m[:, t - b:2 * t + b, t - b:2 * t + b])


def test_partly_missing_neighbours_are_mirrored(tmp_path: Path) -> None:
    """Only the west neighbour exists: the window is the 2-tile strip [west | tile] padded by
    mirroring on the other three sides (corners mirrored consistently)."""
    t, b = 64, 32
    m = smooth_mosaic(3, t, seed=4)
    keep = {(0, 1), (1, 1)}
    paths = write_tiles(tmp_path, m, t, skip={(i, j) for i in range(3) for j in range(3)} - keep)
    w = tile_window(TileReader(paths), (18, 101, 201), b)
    strip = m[:, t:2 * t, t - b:2 * t]
    expect = np.pad(strip, ((0, 0), (b, b), (0, b)), mode="symmetric")
    assert np.array_equal(w, expect)


def test_read_image_drops_alpha_and_names_bad_files(tmp_path: Path) -> None:
    from PIL import Image

    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 200
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr = read_image(tmp_path / "a.png")
    assert arr.shape == (3, 8, 8) and arr[0].min() == 200
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(InputDataError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(InputDataError, match=r"none\.png"):
        read_image(tmp_path / "none.png")


# ---------------------------------------------------------------------------------------------
# The seam test


def test_seam_tile_alone_equals_mosaic_exact(tmp_path: Path) -> None:
    """A tile predicted alone (context from its neighbours) equals the same pixels predicted in
    one pass over a 3x3 mosaic: the model's receptive field (< 12 px) lies inside the 32 px
    border and the border keeps the stride-2 phase. Float tolerance 1e-5 (conv arithmetic order)."""
    t = 64
    m = smooth_mosaic(3, t, seed=2)
    pred = tiny_predictor(t)
    reader = TileReader(write_tiles(tmp_path, m, t))
    win = tile_window(reader, (18, 101, 201), plan_border(t, 32, pred.stride))
    alone = predict_windows(pred, win[None], 32)[0]
    whole = mosaic_probs(pred, m)[:, t:2 * t, t:2 * t]
    assert np.abs(alone - whole).max() < 1e-5
    # a tile predicted without its neighbours (mirrored) does differ near its edges: the test has teeth
    bare = predict_windows(pred, context_window(m[:, t:2 * t, t:2 * t], {}, 32)[None], 32)[0]
    assert np.abs(bare - whole).max() > 1e-3


def test_seam_smp_unet_converges_with_context(tmp_path: Path) -> None:
    """The same with a real smp U-Net/ResNet-18 (random weights, eval mode) on a 5x5 mosaic of
    128 px tiles. Its theoretical receptive field (hundreds of pixels) exceeds any border a
    neighbour can give, so the match is approximate: the difference shrinks as the border grows.
    Measured (centre tile): mean |diff| 0.071 / 0.039 / 0.0067 and max 0.48 / 0.36 / 0.097 in
    probability for 32 / 64 / 128 px borders. Asserted: strictly decreasing, and at 128 px
    mean < 0.01, max < 0.15 (a trained model's effective field is far smaller; see the notes)."""
    t = 128
    m = smooth_mosaic(5, t, seed=3)
    pred, _ = smp_predictor(t, tmp_path)
    reader = TileReader(write_tiles(tmp_path / "tiles", m, t))
    ref = mosaic_probs(pred, m)[:, 2 * t:3 * t, 2 * t:3 * t]
    means, maxes = [], []
    for b in (32, 64, 128):
        alone = predict_windows(pred, tile_window(reader, (18, 102, 202), b)[None], b)[0]
        diff = np.abs(alone - ref)
        means.append(float(diff.mean()))
        maxes.append(float(diff.max()))
    assert means[0] > means[1] > means[2] and maxes[0] > maxes[2], (means, maxes)
    assert means[2] < 0.01 and maxes[2] < 0.15, (means, maxes)


def test_flip_tta_is_flip_equivariant() -> None:
    """Averaging over the 4 flips makes the prediction of a flipped image the flipped prediction."""
    t = 64
    pred = tiny_predictor(t)
    win = context_window(smooth_mosaic(1, t, seed=5), {}, 32)
    a = predict_windows(pred, win[None], 32, tta="flip")[0]
    b = predict_windows(pred, np.ascontiguousarray(win[None, :, :, ::-1]), 32, tta="flip")[0]
    assert np.abs(a[:, :, ::-1] - b).max() < 1e-5
    plain = predict_windows(pred, np.ascontiguousarray(win[None, :, :, ::-1]), 32)[0]
    assert np.abs(a[:, :, ::-1] - plain).max() > 1e-4  # without TTA it is not


def test_predict_tiles_outputs_valid_prediction_tiles(tmp_path: Path) -> None:
    t = 64
    m = smooth_mosaic(3, t, seed=6)
    paths = write_tiles(tmp_path, m, t, skip={(2, 2)})
    pred = tiny_predictor(t)
    seen: list[tuple[int, int]] = []
    keys = sorted(paths)
    out = dict(predict_tiles(pred, TileReader(paths), keys, block=1, batch_size=3,
                             progress=lambda d, n: seen.append((d, n))))
    assert sorted(out) == keys
    for q in out.values():
        assert q.dtype == np.uint8 and q.shape == (2, t, t)
        assert int(q.astype(int).sum(0).max()) <= 256  # two of three softmax channels
        assert np.array_equal(decode_probs(encode_probs(q), 2), q)
    assert seen[-1] == (8, 8) and len(seen) == 3
    pngs = list(prediction_pngs(iter(out.items()), threads=2))  # threaded encoding keeps the order
    assert [k for k, _ in pngs] == keys
    assert all(np.array_equal(decode_probs(b, 2), out[k]) for k, b in pngs)


def test_blocks_cover_each_tile_once_in_aligned_cells() -> None:
    keys = [(18, x, y) for x in range(5, 12) for y in range(2, 7) if (x, y) not in {(6, 3), (9, 5)}]
    keys.append((18, 30, 30))
    blocks = plan_blocks(keys, 4)
    got = [k for b in blocks for k in b.keys]
    assert sorted(got) == sorted(keys) and len(got) == len(keys)
    for b in blocks:
        assert len({(k[1] // 4, k[2] // 4) for k in b.keys}) == 1  # one aligned cell
        assert 1 <= b.cols <= 4 and 1 <= b.rows <= 4
        assert min(k[1] for k in b.keys) == b.x0 and max(k[1] for k in b.keys) == b.x0 + b.cols - 1
        assert min(k[2] for k in b.keys) == b.y0 and max(k[2] for k in b.keys) == b.y0 + b.rows - 1
    lone = [b for b in blocks if (18, 30, 30) in b.keys]
    assert lone[0].cols == lone[0].rows == 1 and len(plan_blocks(keys, 1)) == len(keys)


def test_block_prediction_equals_tile_by_tile(tmp_path: Path) -> None:
    """Predicting 4x4-tile blocks (the border once around each block; a block cell's tile without
    imagery filled with the band means) gives a tile the output it gets alone, for a model whose
    receptive field (< 12 px) lies inside the border: quantised probabilities equal to +-1 step,
    its context coming from every neighbour, another block's tiles included. Where a hole inside
    a block touches two tiles, their mirrored strips overlap over the hole and one wins: the
    difference stays within 12 px of the tile's edge."""
    t = 64
    m = smooth_mosaic(5, t, seed=7)
    holes = {(1, 1), (4, 0)}
    paths = write_tiles(tmp_path, m, t, x0=102, y0=202, skip=holes)  # cells split at x, y = 104, 204
    pred = tiny_predictor(t)
    keys = sorted(paths)
    alone = dict(predict_tiles(pred, TileReader(paths), keys, context_px=32, block=1))
    blocked = dict(predict_tiles(pred, TileReader(paths), keys, context_px=32, block=4))
    assert sorted(blocked) == keys
    for k in keys:
        diff = np.abs(alone[k].astype(int) - blocked[k].astype(int))
        near_hole = any((k[1] - 102 + dx, k[2] - 202 + dy) in holes for dx in (-1, 0, 1) for dy in (-1, 0, 1))
        assert int((diff if not near_hole else diff[:, 12:-12, 12:-12]).max()) <= 1, (k, int(diff.max()))
    bare = dict(predict_tiles(pred, TileReader(paths), keys, context_px=0, block=1))  # the test has teeth
    assert max(int(np.abs(alone[k].astype(int) - bare[k].astype(int)).max()) for k in keys) > 5


def test_onnx_engine_matches_pytorch_and_is_cached(tmp_path: Path) -> None:
    """The ONNX Runtime engine (the prediction graph: normalise, half-scale mean, U-Net, softmax,
    bilinear back) gives PyTorch's probabilities; its graph is cached by the checkpoint's sha256
    and a damaged cache file is exported again."""
    torch.manual_seed(3)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    ckpt = tmp_path / "half.pt"
    save_checkpoint(ckpt, build_model(spec), make_meta(spec, CLASSES, STATS, 32, "test", scale=0.5))
    cache = tmp_path / "cache"
    engine = make_engine(ckpt, "cpu", "auto", tile_size=64, cache_dir=cache)
    assert isinstance(engine, OnnxEngine) and engine.info.bands == 3 and engine.info.stride == 32
    torch_engine = load_predictor(ckpt)
    win = np.random.default_rng(0).integers(0, 256, (2, 3, 192, 256), dtype=np.uint8)
    diff = np.abs(engine.probs(win, 64) - torch_engine.probs(win, 64)).max()
    assert diff < 1e-4, diff
    graphs = list(cache.glob("*.onnx"))
    assert len(graphs) == 1 and graphs[0].with_suffix(".json").is_file()
    before = graphs[0].stat().st_ino
    make_engine(ckpt, "cpu", "onnx", tile_size=64, cache_dir=cache)
    assert graphs[0].stat().st_ino == before  # reused, not written again
    graphs[0].write_bytes(graphs[0].read_bytes()[:1000])  # damaged
    again = make_engine(ckpt, "cpu", "onnx", tile_size=64, cache_dir=cache)
    assert np.abs(again.probs(win, 64) - torch_engine.probs(win, 64)).max() < 1e-4
    assert isinstance(make_engine(ckpt, "cpu", "torch", tile_size=64, cache_dir=cache), Predictor)
    for i in range(5):  # graphs of checkpoints no longer used are pruned: 4 kept, the one in use among them
        (cache / f"old{i}.onnx").write_bytes(b"x")
        os.utime(cache / f"old{i}.onnx", ns=(i, i))
    make_engine(ckpt, "cpu", "onnx", tile_size=64, cache_dir=cache)
    (cache / "new.onnx").write_bytes(b"x")
    prune_graphs(cache)
    kept = sorted(p.name for p in cache.glob("*.onnx"))
    assert kept == sorted([graphs[0].name, "new.onnx", "old4.onnx", "old3.onnx"])


def test_onnx_engine_takes_16_bit_windows(tmp_path: Path) -> None:
    """One-band 16-bit imagery (band statistics in units of ``max``, brighter pixels clipped):
    the ONNX graph normalises as PyTorch does."""
    torch.manual_seed(4)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=1, classes=2)
    ckpt = tmp_path / "pan.pt"
    stats = {"mean": [0.3], "std": [0.2], "max": 4000.0}
    save_checkpoint(ckpt, build_model(spec), make_meta(spec, CLASSES[:1], stats, 64, "test"))
    engine = make_engine(ckpt, "cpu", "onnx", tile_size=64, cache_dir=tmp_path / "cache")
    win = np.random.default_rng(1).integers(0, 5000, (1, 1, 128, 128)).astype(np.uint16)
    assert np.abs(engine.probs(win, 64) - load_predictor(ckpt).probs(win, 64)).max() < 1e-4


def test_onnx_engine_refuses_a_scale_it_cannot_run(tmp_path: Path) -> None:
    """A model at scale 0.3 (no integer shrink factor): ``engine = "onnx"`` is one clear error,
    ``auto`` predicts with PyTorch."""
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    ckpt = tmp_path / "odd.pt"
    save_checkpoint(ckpt, build_model(spec), make_meta(spec, CLASSES, STATS, 32, "test", scale=0.3))
    with pytest.raises(ModelError, match=r"odd\.pt: \[predict\] engine = 'onnx' cannot run this model.*scale"):
        make_engine(ckpt, "cpu", "onnx", tile_size=64, cache_dir=tmp_path / "cache")
    assert isinstance(make_engine(ckpt, "cpu", "auto", tile_size=64, cache_dir=tmp_path / "cache"), Predictor)


# ---------------------------------------------------------------------------------------------
# Bad inputs


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope\.pt.*train"):
        load_predictor(tmp_path / "nope.pt")


def test_checkpoint_for_other_classes_or_bands(tmp_path: Path) -> None:
    pred, _ = smp_predictor(64, tmp_path)
    check_compatible(pred.info, [("building", 1), ("road", 2)], 3, "region.toml")
    with pytest.raises(ModelError, match=r"tiny\.pt.*classes.*region\.toml.*\[predict\] model"):
        check_compatible(pred.info, [("building", 1), ("water", 2)], 3, "region.toml")
    with pytest.raises(ModelError, match=r"3-band.*4 bands"):
        check_compatible(pred.info, [("building", 1), ("road", 2)], 4, "region.toml")


# ---------------------------------------------------------------------------------------------
# Luigi: PredictAll and EvaluateModel on a generated town with a raster orthophoto


def town_region(tmp: Path, town_pbf: Path, model: Path, extra: str = "") -> Path:
    """The test town at z17 (256 px tiles), imagery from a generated EPSG:3857 GeoTIFF over part of
    it, predicted with the checkpoint ``model`` (a model 'trained elsewhere' on 64 px tiles: the
    tiles are resampled to a quarter, which keeps this test fast)."""
    import math

    from tests.pbf_fixtures import ORIGIN
    from tests.tileserver import write_test_geotiff
    from tests.town import write_town_config

    r = 6378137.0
    ox = math.radians(ORIGIN[0]) * r
    oy = math.log(math.tan(math.pi / 4 + math.radians(ORIGIN[1]) / 2)) * r
    tif = write_test_geotiff(tmp / "ortho.tif", seed=5, size_px=600, res_m=1.2, origin=(ox - 40, oy + 760),
                             crs="EPSG:3857")
    cfg = write_town_config(tmp / "town.toml", town_pbf, tmp / "data", zoom=17, shard_zoom=15, extra=f"""
[imagery]
source = "raster"
paths = ["{tif}"]
format = "png"

[predict]
model = "{model}"
batch_size = 4
{extra}""")
    return cfg


def town_checkpoint(path: Path) -> Path:
    torch.manual_seed(2)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=4)
    classes = [{"name": "building", "id": 1}, {"name": "road", "id": 2}, {"name": "park", "id": 3}]
    save_checkpoint(path, build_model(spec), make_meta(spec, classes, STATS, 64, "elsewhere", scale=0.25))
    return path


def run_luigi(*tasks: object) -> object:
    import luigi

    res = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    return res


@pytest.fixture(scope="module")
def predicted_town(tmp_path_factory: pytest.TempPathFactory, town_pbf: Path) -> Path:
    from tasks.predict import EvaluateModel

    tmp = tmp_path_factory.mktemp("predict_town")
    cfg = town_region(tmp, town_pbf, town_checkpoint(tmp / "elsewhere.pt"))
    res = run_luigi(EvaluateModel(config=str(cfg)))
    assert res.status.name == "SUCCESS", res.summary_text  # type: ignore[attr-defined]
    return cfg


def test_predict_all_writes_valid_tiles_with_manifests(predicted_town: Path) -> None:
    import hashlib
    import json

    from pipeline.tiles.index import read_tile_index

    data = predicted_town.parent / "data"
    images = read_tile_index(data / "images")
    with_imagery = {(z, x, y) for z, x, y, s in zip(images.z, images.x, images.y, images.status) if s == "written"}
    preds = read_tile_index(data / "predictions")
    assert {(z, x, y) for z, x, y in zip(preds.z, preds.x, preds.y)} == with_imagery
    assert len(with_imagery) >= 4 and (images.status != "written").any()  # some tiles lack imagery
    for rel, sha in zip(preds.path, preds.sha256):
        raw = (data / "predictions" / rel).read_bytes()
        assert hashlib.sha256(raw).hexdigest() == sha
        assert decode_probs(raw, 3).shape == (3, 256, 256)
    summary = json.loads((data / "predictions" / "_manifest.json").read_text())
    assert summary["tiles"] == len(with_imagery)
    assert [c["name"] for c in summary["classes"]] == ["building", "road", "park"]
    assert not list((data / "predictions").rglob("*.tmp"))


def test_evaluate_model_metrics(predicted_town: Path) -> None:
    import json

    data = predicted_town.parent / "data"
    m = json.loads((data / "model" / "metrics.json").read_text())
    assert m["scope"] == "all labelled" and m["classes"] == ["background", "building", "road", "park"]
    assert "splits" not in m  # a model trained elsewhere: every tile is unseen, no split to compare
    cm = np.array(m["confusion"])
    assert cm.shape == (4, 4) and cm.sum() == m["pixels"] > 0
    for k in ("iou", "precision", "recall", "f1"):
        assert set(m[k]) == set(m["classes"])
    tp, fp, fn = cm[1, 1], cm[:, 1].sum() - cm[1, 1], cm[1, :].sum() - cm[1, 1]
    if tp + fp + fn:
        assert m["iou"]["building"] == pytest.approx(tp / (tp + fp + fn))


def test_rerun_is_complete_and_model_change_reruns(predicted_town: Path) -> None:
    import luigi

    from tasks.predict import PredictAll

    res = run_luigi(PredictAll(config=str(predicted_town)))
    parts = luigi.execution_summary._partition_tasks(res.worker)  # type: ignore[attr-defined]
    assert not parts["completed"] and parts["already_done"]
    # a checkpoint touched (new mtime, same bytes) is the same model; other bytes are another model
    assert PredictAll(config=str(predicted_town)).complete()
    model = predicted_town.parent / "elsewhere.pt"
    st, data = model.stat(), model.read_bytes()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert PredictAll(config=str(predicted_town)).complete()
    model.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert not PredictAll(config=str(predicted_town)).complete()
    model.write_bytes(data)  # the old bytes back (the fingerprint follows the newest bytes: rerun once)


def test_task_errors_name_the_model(predicted_town: Path, tmp_path: Path) -> None:
    """A missing checkpoint, or one made for another class table, stops the shard with an error
    that names the file and says what to do (the town's imagery is reused: same data folder)."""
    from pipeline.inference.windows import image_paths
    from pipeline.tiles.index import read_tile_index
    from tasks.predict import Predict

    data = predicted_town.parent / "data"
    shard = str(sorted(read_tile_index(data / "images").shard)[0])
    assert image_paths(data, shard)
    text = predicted_town.read_text()
    missing = tmp_path / "bad.toml"
    missing.write_text(text.replace(str(predicted_town.parent / "elsewhere.pt"), str(tmp_path / "gone.pt")))
    with pytest.raises(ModelError, match=r"gone\.pt: no such checkpoint"):
        Predict(config=str(missing), shard=shard).run()
    torch.manual_seed(0)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    other = tmp_path / "water.pt"
    save_checkpoint(other, build_model(spec), make_meta(spec, [{"name": "building", "id": 1},
                                                               {"name": "water", "id": 2}], STATS, 64, "x"))
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace(str(predicted_town.parent / "elsewhere.pt"), str(other)))
    with pytest.raises(ModelError, match=r"water\.pt: the model was trained for classes .*wrong\.toml"):
        Predict(config=str(wrong), shard=shard).run()


def test_own_model_is_evaluated_on_the_test_split(tmp_path: Path, town_pbf: Path) -> None:
    """Without ``[predict] model`` the region's own model/best.pt predicts (TrainModel is done here
    by writing its checkpoint and manifest) and metrics.json covers the test split only."""
    import json

    from pipeline.model.split import read_split_csv
    from tasks.predict import EvaluateModel
    from tasks.split import SplitDataset
    from tasks.train import TrainModel

    cfg = town_region(tmp_path, town_pbf, tmp_path / "unused.pt",
                      extra="\n[split]\nblock_zoom = 17\ntest_fraction = 0.4\nval_fraction = 0.2\nseed = 1\n")
    cfg.write_text(cfg.read_text().replace(f'model = "{tmp_path / "unused.pt"}"\n', ""))
    assert run_luigi(SplitDataset(config=str(cfg))).status.name == "SUCCESS"  # type: ignore[attr-defined]
    data = tmp_path / "data"
    town_checkpoint(data / "model" / "best.pt")
    (data / "model" / "last.pt").write_bytes((data / "model" / "best.pt").read_bytes())
    train = TrainModel(config=str(cfg))
    train.output().write({"root": str(data / "model"), "files": {
        n: {"size": (data / "model" / n).stat().st_size} for n in ("best.pt", "last.pt")}})
    assert train.complete()
    res = run_luigi(EvaluateModel(config=str(cfg)))
    assert res.status.name == "SUCCESS", res.summary_text  # type: ignore[attr-defined]
    m = json.loads((data / "model" / "metrics.json").read_text())
    test = [r for r in read_split_csv(data / "split.csv") if r.split == "test"]
    assert m["scope"] == "test" and m["tiles"] == len(test) >= 1
    assert m["pixels"] <= len(test) * 256 * 256
    assert m["model"] == str(data / "model" / "best.pt")
    # the train and validation tiles measured like the test tiles (how far training fits; whether
    # the validation that chose best.pt agrees with the test split)
    from pipeline.inference.evaluate import evaluate_tiles

    rows = read_split_csv(data / "split.csv")
    for split in ("train", "val"):
        mine = [r for r in rows if r.split == split]
        assert m["splits"][split]["tiles"] == len(mine) >= 1
        pairs = [(data / "predictions" / f"{r.z}/{r.x}/{r.y}.png", data / r.mask, data / r.image) for r in mine]
        want = evaluate_tiles(pairs, [("building", 1), ("road", 2), ("park", 3)])["iou"]
        assert m["splits"][split]["iou"] == want
    assert m["selected_on"] == {}  # this checkpoint was not written by TrainModel: no validated epoch


def test_predict_section_parsing(tmp_path: Path) -> None:
    from pipeline.config.predict import PredictSpec
    from pipeline.config.region import load_config
    from pipeline.core.errors import ConfigError
    from pipeline.model.regions import is_own_model, model_path
    from tests.town import write_town_config

    cfg = load_config(write_town_config(tmp_path / "a.toml", tmp_path / "t.pbf", tmp_path / "data"))
    assert cfg.predict == PredictSpec()
    assert model_path(cfg) == tmp_path / "data" / "model" / "best.pt" and is_own_model(cfg)
    cfg = load_config(write_town_config(tmp_path / "b.toml", tmp_path / "t.pbf", tmp_path / "data", extra=(
        '[predict]\nmodel = "other.pt"\ncontext_px = 64\ntta = "flip"\nbatch_size = 2\n')))
    assert cfg.predict == PredictSpec(model=Path("other.pt"), context_px=64, batch_size=2, tta="flip")
    assert not is_own_model(cfg)
    for bad, key in (('tta = "rotate"', r"predict\.tta"), ("context_px = -1", r"predict\.context_px"),
                     ("batchsize = 4", r"batchsize")):
        with pytest.raises(ConfigError, match=key):
            load_config(write_town_config(tmp_path / "c.toml", tmp_path / "t.pbf", tmp_path / "data",
                                          extra=f"[predict]\n{bad}\n"))
