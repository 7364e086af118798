"""pipeline.model.network: building models, normalisation and the checkpoint format."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from pipeline.core.errors import ModelError
from pipeline.model.network import ModelSpec, build_model, load_checkpoint, make_meta, normalise, save_checkpoint

SPEC = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=3)
STATS = {"mean": [0.4, 0.5, 0.3], "std": [0.2, 0.1, 0.25]}
CLASSES = [{"name": "road", "id": 2}, {"name": "building", "id": 1}]


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(SPEC).eval()
    meta = make_meta(SPEC, CLASSES, STATS, 64, "d1", {"iou": {"building": 0.5}})
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, meta2 = load_checkpoint(tmp_path / "m.pt")
    assert [c["name"] for c in meta2["classes"]] == ["building", "road"]  # ascending id
    assert meta2["band_stats"] == STATS and meta2["tile_size"] == 64 and meta2["config_digest"] == "d1"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not list(tmp_path.glob(".*tmp"))


def test_normalise_layouts_agree():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    chw = np.transpose(hwc, (2, 0, 1))
    a, b = normalise(hwc, STATS), normalise(chw, STATS)
    t = normalise(torch.from_numpy(chw), STATS)
    assert a.dtype == np.float32 and a.shape == (3, 8, 8)
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, t.numpy(), atol=1e-6)
    np.testing.assert_allclose(a[1, 0, 0], (chw[1, 0, 0] / 255 - 0.5) / 0.1, rtol=1e-5)


def test_missing_encoder_weights_says_where(tmp_path):
    spec = ModelSpec(encoder="resnet18", classes=2, encoder_weights_path=str(tmp_path / "r18.pth"))
    with pytest.raises(ModelError, match=r"r18.pth.*Put the pretrained resnet18"):
        build_model(spec)


def test_encoder_weights_from_local_file(tmp_path):
    src = build_model(ModelSpec(encoder="resnet18", classes=2))
    torch.save(src.encoder.state_dict(), tmp_path / "enc.pth")
    dst = build_model(ModelSpec(encoder="resnet18", classes=2, encoder_weights_path=str(tmp_path / "enc.pth")))
    for k, v in src.encoder.state_dict().items():
        assert torch.equal(v, dst.encoder.state_dict()[k])


def test_bad_checkpoint_and_spec(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match=r"bad\.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    with pytest.raises(ModelError, match="not an smp model"):
        build_model(ModelSpec(arch="NoSuchNet"))
    with pytest.raises(ModelError, match="outputs"):
        make_meta(ModelSpec(classes=2), CLASSES, STATS, 64, "d")


def test_import_without_geospatial_stack():
    code = ("import sys; import pipeline.model.network; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rasterio', 'geopandas', 'luigi', 'shapely')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True).returncode == 0


def test_one_device_choice_for_training_and_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from pipeline.core.errors import ModelError
    from pipeline.model.device import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu") and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="not a torch device"):
        pick_device("gpu0")
    with pytest.raises(ModelError, match="sees no CUDA GPU"):
        pick_device("cuda:1")
    picked: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    monkeypatch.setenv("LOCAL_RANK", "3")  # under torchrun: this process's GPU
    assert pick_device() == torch.device("cuda", 3) and picked == [3]


def test_encoder_weights_by_name_offline_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    # offline, empty cache: smp's own loader (huggingface_hub) fails; the error names the key, the
    # weight name and the local-file alternative, in one line
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError) as err:
        build_model(ModelSpec(encoder="resnet18", classes=2, encoder_weights_path="imagenet"))
    msg = str(err.value)
    assert "\n" not in msg
    assert "[train] encoder_weights = 'imagenet'" in msg and "offline" in msg and "local file" in msg


def test_encoder_weights_download_failure_of_any_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    import segmentation_models_pytorch.encoders as enc

    def refused(*args: object, **kwargs: object) -> str:
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(enc, "hf_hub_download", refused)
    with pytest.raises(ModelError, match=r"encoder_weights = 'ssl'.*ConnectionRefusedError.*local file"):
        build_model(ModelSpec(encoder="resnet18", classes=2, encoder_weights_path="ssl"))


def test_unknown_weight_name_did_you_mean() -> None:
    with pytest.raises(ModelError, match=r"'imagent'.*did you mean 'imagenet'.*'ssl'.*local resnet18"):
        build_model(ModelSpec(encoder="resnet18", classes=2, encoder_weights_path="imagent"))
    from pipeline.model.network import resolve_encoder_weights

    assert resolve_encoder_weights("resnet18", "imagenet") == ("name", "imagenet")
    assert resolve_encoder_weights("resnet18", "weights/r18.pth") == ("file", "weights/r18.pth")
    assert resolve_encoder_weights("resnet18", None) is None


def test_three_band_weights_adapted_to_other_band_counts(tmp_path) -> None:
    # a local 3-band encoder file meets a 1-band (pan) and a 4-band (RGB+NIR) model: the first
    # convolution is summed / cyclically repeated and scaled by 3/n (smp's patch_first_conv rule)
    src = build_model(ModelSpec(encoder="resnet18", classes=2))
    torch.save(src.encoder.state_dict(), tmp_path / "enc.pth")
    w3 = src.encoder.state_dict()["conv1.weight"]
    for bands in (1, 4):
        dst = build_model(ModelSpec(encoder="resnet18", in_channels=bands, classes=2,
                                    encoder_weights_path=str(tmp_path / "enc.pth")))
        w = dst.encoder.state_dict()["conv1.weight"]
        assert w.shape[1] == bands
        if bands == 1:
            assert torch.allclose(w[:, 0], w3.sum(1))
        else:
            assert torch.allclose(w[:, :3], w3 * 0.75) and torch.allclose(w[:, 3], w3[:, 0] * 0.75)
        assert torch.equal(dst.encoder.state_dict()["layer1.0.conv1.weight"],
                           src.encoder.state_dict()["layer1.0.conv1.weight"])


def test_arch_options_build_round_trip_and_refusals(tmp_path):
    """``[train] arch_options`` reach smp's model class (scSE attention modules in the U-Net's
    decoder), travel in the checkpoint's spec, and a name or value smp refuses is one line."""
    spec = ModelSpec(arch="Unet", encoder="resnet18", classes=2, arch_options=(("decoder_attention_type", "scse"),))
    model = build_model(spec).eval()
    plain = build_model(ModelSpec(arch="Unet", encoder="resnet18", classes=2))
    assert any("SCSE" in type(m).__name__ for m in model.modules())
    assert not any("SCSE" in type(m).__name__ for m in plain.modules())
    meta = make_meta(spec, CLASSES[:1], STATS, 64, "d")
    assert meta["spec"]["arch_options"] == {"decoder_attention_type": "scse"}
    assert "arch_options" not in make_meta(SPEC, CLASSES, STATS, 64, "d")["spec"]  # old checkpoints' spec
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, meta2 = load_checkpoint(tmp_path / "m.pt")
    assert ModelSpec.from_dict(meta2["spec"]) == spec
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    with pytest.raises(ModelError, match=r"arch_options\.decoder_attention_typ: not an argument of smp\.Unet; "
                                         r"did you mean 'decoder_attention_type'"):
        build_model(ModelSpec(encoder="resnet18", classes=2, arch_options=(("decoder_attention_typ", "scse"),)))
    with pytest.raises(ModelError, match=r"decoder_attention_type = 'sse'.*refused"):
        build_model(ModelSpec(encoder="resnet18", classes=2, arch_options=(("decoder_attention_type", "sse"),)))
