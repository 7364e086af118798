"""Export: ONNX against PyTorch with onnxruntime, the STAC mlm model card, and the ExportModel task
on the generated town (CPU, tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.model.export import (
    MLM_SCHEMA,
    CardDetails,
    check_onnx,
    export_onnx,
    input_recipe,
    mlm_problems,
    model_assets,
    model_card,
)
from pipeline.model.network import ModelSpec, build_model, make_meta
from tests.test_predict import STATS, run_luigi, town_checkpoint, town_region

CLASSES = [{"name": "building", "id": 1}, {"name": "road", "id": 3}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict, Path]:  # type: ignore[type-arg]
    torch.manual_seed(0)
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
    model = build_model(spec).eval()
    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(model, 3, 64, path)
    return model, make_meta(spec, CLASSES, STATS, 64, "d"), path


def test_onnx_matches_pytorch_any_batch_and_size(tiny: tuple[torch.nn.Module, dict, Path]) -> None:  # type: ignore[type-arg]
    model, _, path = tiny
    g = torch.Generator().manual_seed(1)
    for shape in ((1, 3, 64, 64), (3, 3, 96, 128)):  # dynamic batch, height and width
        check = check_onnx(path, model, torch.randn(shape, generator=g))
        assert check["samples"] == shape[0] and (check["height"], check["width"]) == shape[2:]
        assert check["max_abs_diff_logits"] < 1e-3 and check["max_abs_diff_probs"] < 1e-4, check


def test_check_onnx_catches_another_model(tiny: tuple[torch.nn.Module, dict, Path]) -> None:  # type: ignore[type-arg]
    _, _, path = tiny
    torch.manual_seed(5)
    other = build_model(ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)).eval()
    assert check_onnx(path, other, torch.randn(1, 3, 64, 64))["max_abs_diff_probs"] > 1e-2


def test_model_card_has_the_mlm_fields(tiny: tuple[torch.nn.Module, dict, Path]) -> None:  # type: ignore[type-arg]
    _, meta, _ = tiny
    card = model_card(meta, item_id="osmsat-x", bbox=(32.5, 0.3, 32.6, 0.4), side=128, created="2026-01-01T00:00:00Z",
                      details=CardDetails(
                          metrics={"iou": {"building": 0.8}, "confusion": [[1]]},
                          assets={"model": {"href": "m.onnx", "roles": ["mlm:model"], "mlm:artifact_type": "onnx"}},
                          colors={1: "#e31a1c"}))
    json.dumps(card, allow_nan=False)
    assert card["type"] == "Feature" and MLM_SCHEMA in card["stac_extensions"]
    assert card["bbox"] == [32.5, 0.3, 32.6, 0.4] and card["geometry"]["type"] == "Polygon"
    p = card["properties"]
    for key in ("datetime", "mlm:name", "mlm:architecture", "mlm:tasks", "mlm:framework", "mlm:input", "mlm:output"):
        assert key in p, key
    assert p["mlm:tasks"] == ["semantic-segmentation"] and p["mlm:framework"] == "PyTorch"
    (inp,) = p["mlm:input"]
    assert inp["bands"] == ["red", "green", "blue"] and inp["input"]["shape"] == [-1, 3, 128, 128]
    assert inp["input"]["dim_order"] == ["batch", "bands", "height", "width"]
    assert [v["type"] for v in inp["value_scaling"]] == ["z-score"] * 3
    assert inp["value_scaling"][0]["mean"] == pytest.approx(STATS["mean"][0] * 255)
    assert inp["value_scaling"][2]["stddev"] == pytest.approx(STATS["std"][2] * 255)
    (out,) = p["mlm:output"]
    assert out["result"]["shape"] == [-1, 3, 128, 128]
    assert [(c["value"], c["name"]) for c in out["classification:classes"]] == [(0, "background"), (1, "building"),
                                                                                  (2, "road")]
    assert out["classification:classes"][1]["color_hint"] == "E31A1C"
    assert "id 3" in out["classification:classes"][2]["description"]
    assert p["osmsat:metrics"] == {"iou": {"building": 0.8}}
    assert card["assets"]["model"]["bands"] == [{"name": "red"}, {"name": "green"}, {"name": "blue"}]
    # mlm: named input bands need STAC 1.1 'bands' in the item properties; no pretraining -> source null
    assert [b["name"] for b in p["bands"]] == inp["bands"] and card["stac_version"] == "1.1.0"
    assert p["mlm:pretrained"] is False and p["mlm:pretrained_source"] is None


def test_model_card_names_the_bands_the_config_names(tiny: tuple[torch.nn.Module, dict, Path]) -> None:  # type: ignore[type-arg]
    from pipeline.config.imagery import parse_imagery
    from pipeline.core.errors import ConfigError

    _, meta, _ = tiny
    kw = {"item_id": "osmsat-x", "bbox": (32.5, 0.3, 32.6, 0.4), "side": 128, "created": "2026-01-01T00:00:00Z"}
    assets = {"model": {"href": "m.onnx", "roles": ["mlm:model"], "mlm:artifact_type": "onnx"}}
    card = model_card(meta, **kw, details=CardDetails(assets=assets, band_names=("nir", "red", "green")))
    assert card["properties"]["mlm:input"][0]["bands"] == ["nir", "red", "green"]
    assert [b["name"] for b in card["properties"]["bands"]] == ["nir", "red", "green"]
    assert card["assets"]["model"]["bands"] == [{"name": "nir"}, {"name": "red"}, {"name": "green"}]
    assert mlm_problems(card) == []
    with pytest.raises(ConfigError, match=r"band_names lists 4 names .* the model takes 3 bands"):
        model_card(meta, **kw, details=CardDetails(band_names=("red", "green", "blue", "nir")))
    base = {"source": "raster", "paths": ["a.tif"], "format": "tif"}
    assert parse_imagery(Path("r.toml"), {**base, "band_names": ["red", "green", "blue", "nir"]}).band_names == (
        "red", "green", "blue", "nir")
    with pytest.raises(ConfigError, match=r"imagery\.band_names.*distinct"):
        parse_imagery(Path("r.toml"), {**base, "band_names": ["red", "red"]})
    with pytest.raises(ConfigError, match=r"band_names names 2 bands but imagery\.bands selects 3"):
        parse_imagery(Path("r.toml"), {**base, "bands": [1, 2, 3], "band_names": ["a", "b"]})


def test_model_card_keeps_the_mlm_1_4_rules_and_states_the_input_recipe(
        tiny: tuple[torch.nn.Module, dict, Path], tmp_path: Path) -> None:  # type: ignore[type-arg]
    # (the jsonschema package is not installed here, and the schema cannot be downloaded: the
    # rules of the STAC-MLM v1.4.0 schema that the card touches are checked structurally)
    _, meta, onnx_path = tiny
    ckpt = tmp_path / "model" / "best.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"checkpoint")
    out = tmp_path / "model" / "export"
    recipe = input_recipe(256, 64, 192)  # a 256 px tile + 64 px context each side, scale 0.5
    assert (recipe["window_px"], recipe["scale"], recipe["resize_type"]) == (384, 0.5, "interpolation-area")
    assert input_recipe(256, 0, 256)["resize_type"] is None and input_recipe(128, 0, 256)["resize_type"] == \
        "interpolation-linear"
    card = model_card(meta, item_id="osmsat-demo-unet-resnet18", bbox=(32.5, 0.3, 32.6, 0.4), side=192,
                      created="2026-01-01T00:00:00Z",
                      details=CardDetails(assets=model_assets(onnx_path, ckpt, out), recipe=recipe))
    assert mlm_problems(card) == []
    weights = card["assets"]["weights"]
    assert "mlm:artifact_type" not in weights and "mlm:model" not in weights["roles"]
    assert weights["href"] == "../best.pt" and card["assets"]["model"]["mlm:artifact_type"] == "onnx"
    p = card["properties"]
    assert p["mlm:input"][0]["resize_type"] == "interpolation-area"
    assert p["osmsat:input_recipe"]["context_px"] == 64 and "64 px of neighbour context" in p["description"]
    assert "(pixel / 255 - mean) / std" in p["osmsat:input_recipe"]["normalisation"]
    # what the schema refuses is caught: the old card's weights asset, a missing role, a bad name
    old = {**card, "assets": {**card["assets"], "weights": {**weights, "mlm:artifact_type": "torch.save"}}}
    assert mlm_problems(old) == ["assets.weights: mlm:artifact_type is allowed only with the mlm:model role"]
    no_model = {**card, "assets": {"weights": weights}}
    assert mlm_problems(no_model) == ["assets: no asset has the mlm:model role"]
    bad = {**card, "properties": {**p, "mlm:name": "-x", "mlm:input": [{**p["mlm:input"][0], "resize_type": "x"}]}}
    assert len(mlm_problems(bad)) == 2


# ---------------------------------------------------------------------------------------------
# ExportModel on the generated town


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, town_pbf: Path) -> Path:
    from tasks.export import ExportModel

    tmp = tmp_path_factory.mktemp("export_town")
    # tile by tile, as the card's recipe reads (a block's wider context changes a random model's output)
    cfg = town_region(tmp, town_pbf, town_checkpoint(tmp / "elsewhere.pt"), extra="block = 1")
    res = run_luigi(ExportModel(config=str(cfg)))
    assert res.status.name == "SUCCESS", res.summary_text  # type: ignore[attr-defined]
    return cfg


def test_export_model_task(exported: Path) -> None:
    import onnxruntime as ort

    from pipeline.inference.predict import border_for
    from pipeline.inference.predict_torch import load_predictor, model_input
    from pipeline.inference.probs import decode_probs
    from pipeline.inference.windows import TileReader, image_paths, tile_window

    data = exported.parent / "data"
    out = data / "model" / "export"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "model.stac.json"}
    assert manifest["onnx_check"]["max_abs_diff_probs"] < 1e-3 and manifest["onnx_check"]["samples"] >= 1
    card = json.loads((out / "model.stac.json").read_text())
    metrics = json.loads((data / "model" / "metrics.json").read_text())
    assert card["properties"]["osmsat:metrics"]["iou"] == metrics["iou"]
    assert card["assets"]["model"]["file:size"] == (out / "model.onnx").stat().st_size
    assert mlm_problems(card) == [] and "mlm:artifact_type" not in card["assets"]["weights"]
    recipe = card["properties"]["osmsat:input_recipe"]
    assert recipe["context_px"] == card["properties"]["osmsat:tiles"]["context_px"]
    assert recipe["model_px"] == card["properties"]["mlm:input"][0]["input"]["shape"][-1]
    assert (out / card["assets"]["weights"]["href"]).resolve() == (exported.parent / "elsewhere.pt").resolve()
    w, s, e, n = card["bbox"]
    assert 24.9 < w < e < 25.0 and 60.1 < s < n < 60.2

    # the ONNX model on a real tile's window gives the prediction tile that PredictAll wrote
    images = image_paths(data)
    key = sorted(images)[len(images) // 2]
    pred = load_predictor(exported.parent / "elsewhere.pt")
    tile = card["properties"]["osmsat:tiles"]
    border = border_for(pred.info, tile["tile_size"], 32)
    assert border == tile["context_px"] == 128  # 32 px asked; the stride is 32 px at 1/4 scale
    x = model_input(pred, tile_window(TileReader(images), key, border)[None], tile["tile_size"]).numpy()
    assert list(x.shape[1:]) == card["properties"]["mlm:input"][0]["input"]["shape"][1:]
    logits = ort.InferenceSession(str(out / "model.onnx")).run(None, {"image": x})[0]
    probs = torch.softmax(torch.from_numpy(logits), 1)
    probs = torch.nn.functional.interpolate(probs, size=(tile["tile_size"] + 2 * border,) * 2, mode="bilinear",
                                            align_corners=False)[0, 1:, border:-border, border:-border].numpy()
    z, xx, y = key
    written = decode_probs((data / "predictions" / f"{z}/{xx}/{y}.png").read_bytes(), 3)
    assert np.abs(np.rint(probs * 255) - written.astype(float)).max() <= 1


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / "philippines" / "tiles"


@pytest.mark.skipif(not REAL.is_dir(), reason="real sample tiles (../shared/data/real/philippines) are absent")
def test_onnx_matches_pytorch_on_real_tiles(tiny: tuple[torch.nn.Module, dict, Path]) -> None:  # type: ignore[type-arg]
    """Context windows of real z20 aerial tiles (JPEG, neighbours where the sample has them,
    mirrored elsewhere), normalised as prediction does: ONNX and PyTorch agree."""
    from pipeline.inference.predict import border_for
    from pipeline.inference.predict_torch import Predictor, model_input
    from pipeline.inference.windows import TileReader, tile_window

    model, meta, path = tiny
    paths = {(20, int(p.parent.name), int(p.stem)): p for p in sorted((REAL / "20").glob("*/*.jpg"))}
    pred = Predictor(model, {**meta, "tile_size": 256}, torch.device("cpu"), "tiny")
    reader = TileReader(paths)
    keys = sorted(paths)[:4]
    border = border_for(pred.info, 256, 32)
    x = model_input(pred, np.stack([tile_window(reader, k, border) for k in keys]), 256)
    assert x.shape == (4, 3, 320, 320)
    check = check_onnx(path, model, x)
    assert check["max_abs_diff_probs"] < 1e-4 and check["max_abs_diff_logits"] < 1e-3, check


def test_band_names_from_the_raster(tmp_path: Path) -> None:
    import numpy as np
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    from pipeline.config.imagery import parse_imagery
    from pipeline.imagery.raster_plan import raster_band_names

    def tif(name: str, count: int, descriptions: tuple[str, ...] = (), interp: tuple[ColorInterp, ...] = ()) -> str:
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=count, dtype="uint8",
                           crs="EPSG:32636", transform=from_origin(450000, 40000, 0.3, 0.3)) as dst:
            dst.write(np.full((count, 8, 8), 9, np.uint8))
            for i, d in enumerate(descriptions, start=1):
                dst.set_band_description(i, d)
            if interp:
                dst.colorinterp = interp
        return str(path)

    def names(path: str, **extra: object) -> tuple[str, ...]:
        return raster_band_names(parse_imagery(Path("r.toml"), {"source": "raster", "paths": [path], "format": "tif",
                                                                **extra}))

    rgbn = tif("rgbn.tif", 4, ("red", "green", "blue", "nir"))
    assert names(rgbn, bands=[4, 1, 2]) == ("nir", "red", "green")
    assert names(rgbn) == ("red", "green", "blue")  # the default: the first three colour bands
    plain = tif("plain.tif", 3, interp=(ColorInterp.red, ColorInterp.green, ColorInterp.blue))
    assert names(plain) == ("red", "green", "blue")
    assert names(tif("pan.tif", 1, interp=(ColorInterp.gray,))) == ("gray",)
    unnamed = tif("unnamed.tif", 4, interp=(ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                                            ColorInterp.undefined))
    assert names(unnamed, bands=[1, 2, 3, 4]) == ()  # band 4 is named by nothing: the card's band1..4
