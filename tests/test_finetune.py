"""[train] init (pipeline.model.finetune): a fine-tune starts from a trained checkpoint, matches the class
table by name, can freeze the encoder, records its lineage; the config errors are one line.
Tiny: 64 px generated tiles, ResNet-18 U-Net, one CPU thread."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.config.train import FINETUNE_LR, LR, parse_train
from pipeline.core.errors import ConfigError, ModelError, TrainingError
from pipeline.model.finetune import init_weights, output_names, read_init, row_map
from pipeline.model.network import ModelSpec, build_model, load_checkpoint, read_checkpoint
from pipeline.model.train import FitOptions, RunInfo, fit
from tests.test_train import MODEL, SPEC, datasets
from tests.train_fixtures import write_region

CPU = FitOptions(device=torch.device("cpu"), progress=False)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(tile folder, a one-epoch building model's best.pt copied out of its model folder)."""
    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("tiles")
    write_region(data, n=3, seed=3)
    out = tmp_path_factory.mktemp("base")
    train, val, band = datasets(data)
    fit(replace(SPEC, epochs=1), MODEL, train, val, out / "model", RunInfo(({"name": "building", "id": 1},), band, 64,
        "base"), CPU)
    ckpt = out / "base.pt"
    ckpt.write_bytes((out / "model" / "best.pt").read_bytes())
    return data, ckpt


def test_class_table_matched_by_name(base):
    _, ckpt = base
    blob = read_init(ckpt)
    classes = ({"name": "road", "id": 1}, {"name": "building", "id": 5})  # building moves to channel 2
    spec = ModelSpec(arch="Unet", encoder="resnet18", in_channels=3, classes=4)  # + the building edge
    torch.manual_seed(0)
    model = build_model(spec)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    got = init_weights(model, blob, spec, classes, [5], ckpt)
    assert got == {"kept": ["background", "building"], "new": ["road", "building/edge"], "dropped": [],
                   "bands": [3, 3]}
    w, old = model.state_dict(), blob["model"]
    head = "segmentation_head.0.weight"
    assert torch.equal(w[head][0], old[head][0]) and torch.equal(w[head][2], old[head][1])
    assert torch.equal(w[head][1], fresh[head][1]) and torch.equal(w[head][3], fresh[head][3])
    enc = "encoder.conv1.weight"
    assert torch.equal(w[enc], old[enc])
    assert output_names(classes, [5]) == ["background", "road", "building", "building/edge"]
    assert row_map(["background", "building", "park"], ["background", "building"]) == [0, 1]
    # the other architecture: one clear error
    with pytest.raises(ModelError, match=r"\[train\] init = .*a Unet / resnet18 model, \[train\] asks for Unet / "
                                         r"resnet34; set \[train\] arch = 'Unet' and encoder = 'resnet18'"):
        init_weights(build_model(replace(spec, encoder="resnet34")), blob, replace(spec, encoder="resnet34"),
                     classes, [5], ckpt)
    scse = replace(spec, arch_options=(("decoder_attention_type", "scse"),))
    with pytest.raises(ModelError, match=r"a model built with arch_options none, \[train\] asks for "
                                         r"\{'decoder_attention_type': 'scse'\}; set \[train\] arch_options"):
        init_weights(build_model(scse), blob, scse, classes, [5], ckpt)
    # another band count: the first convolution adapted as smp/timm adapt pretrained encoders
    for bands in (1, 4):
        other = replace(spec, in_channels=bands)
        model = build_model(other)
        assert init_weights(model, blob, other, classes, [5], ckpt)["bands"] == [3, bands]
        got_w = model.state_dict()[enc]
        assert got_w.shape[1] == bands
        if bands == 1:
            assert torch.allclose(got_w[:, 0], old[enc].sum(1))
        else:  # R, G, B, R scaled by 3 / 4
            assert torch.allclose(got_w[:, 3], old[enc][:, 0] * 0.75)
            assert torch.allclose(got_w[:, 1], old[enc][:, 1] * 0.75)
        assert torch.equal(model.state_dict()["encoder.layer1.0.conv1.weight"], old["encoder.layer1.0.conv1.weight"])


def test_missing_or_unreadable_init_is_one_line(tmp_path):
    with pytest.raises(ModelError, match=r"^\[train\] init = '.*nope\.pt': no such file; name a best\.pt") as e:
        read_init(tmp_path / "nope.pt")
    assert "\n" not in str(e.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError, match=r"^\[train\] init = '.*bad\.pt': not a readable checkpoint") as e:
        read_init(bad)
    assert "\n" not in str(e.value)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"other\.pt': not an osmsat checkpoint"):
        read_init(tmp_path / "other.pt")


def test_fine_tune_freezes_the_encoder_and_records_its_lineage(base, tmp_path):
    torch.set_num_threads(1)
    data, ckpt = base
    spec = replace(SPEC, epochs=2, init=ckpt, freeze_encoder_epochs=1, lr=FINETUNE_LR, checkpoint_epochs=1)
    train, val, band = datasets(data, spec)
    info = RunInfo(({"name": "building", "id": 1}, {"name": "road", "id": 2}), band, 64, "ft")
    model_spec = replace(MODEL, classes=3)
    writes: list[dict] = []
    fit(spec, model_spec, train, val, tmp_path / "m", info,
        replace(CPU, on_epoch=lambda row: writes.append(read_checkpoint(tmp_path / "m" / "last.pt"))))
    init = read_checkpoint(ckpt)["model"]
    after1, after2 = writes[0]["model"], writes[1]["model"]
    enc = [k for k in init if k.startswith("encoder.")]
    assert all(torch.equal(after1[k], init[k]) for k in enc)  # frozen, batch-norm statistics too
    assert not all(torch.equal(after2[k], init[k]) for k in enc)  # thawed in the second epoch
    assert not torch.equal(after1["decoder.blocks.0.conv1.0.weight"], init["decoder.blocks.0.conv1.0.weight"])
    _, meta = load_checkpoint(tmp_path / "m" / "best.pt")
    lineage = meta["init"]
    assert lineage["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert lineage["path"] == str(ckpt) and lineage["config_digest"] == "base" and lineage["classes"] == ["building"]
    # a rerun resumes from last.pt (init is not read again), with the lineage
    again = fit(spec, model_spec, train, val, tmp_path / "m", info, CPU)
    assert again.init == lineage and len(again.rows) == 2
    # a fine-tune of the fine-tune: the chain stays
    child = tmp_path / "child.pt"
    child.write_bytes((tmp_path / "m" / "best.pt").read_bytes())
    spec2 = replace(spec, init=child, epochs=1, freeze_encoder_epochs=0)
    hist = fit(spec2, model_spec, train, val, tmp_path / "m2", info, CPU)
    assert hist.init["parent"]["sha256"] == lineage["sha256"]  # type: ignore[index]
    # last.pt of another config is still refused, and the message says what init needs
    with pytest.raises(TrainingError, match=r"checkpoint of another config.*move last\.pt away to fine-tune"):
        fit(spec2, model_spec, train, val, tmp_path / "m2", replace(info, config_digest="other"), CPU)


def test_init_config_keys(tmp_path):
    cfg = tmp_path / "r.toml"
    spec = parse_train(cfg, {"init": "models/base.pt", "freeze_encoder_epochs": 2, "max_minutes": 15})
    assert spec.init == Path("models/base.pt") and spec.lr == FINETUNE_LR and spec.freeze_encoder_epochs == 2
    assert spec.max_minutes == 15.0
    assert parse_train(cfg, {}).lr == LR and parse_train(cfg, {"init": "a.pt", "lr": 0.01}).lr == 0.01
    with pytest.raises(ConfigError, match=r"train\.max_minutes = -1 is out of range"):
        parse_train(cfg, {"max_minutes": -1})
    with pytest.raises(ConfigError, match=r"train\.val_every = 0 is out of range"):
        parse_train(cfg, {"val_every": 0})


def test_init_in_the_folder_training_writes_is_refused(tmp_path):
    from pipeline.model.train_run import check_init

    spec = replace(SPEC, init=tmp_path / "model" / "best.pt")
    with pytest.raises(ConfigError, match=r"\[train\] init = .*best\.pt' is in .*model, which this training "
                                          r"overwrites; copy it elsewhere"):
        check_init(spec, tmp_path / "model")
    check_init(replace(SPEC, init=tmp_path / "models" / "base.pt"), tmp_path / "model")


def test_the_init_file_is_in_the_train_digest(tmp_path, town_pbf):
    import os

    from pipeline.config.region import load_config
    from pipeline.core.stages import stage_digest, stage_inputs
    from tests.town import write_town_config

    init = tmp_path / "base.pt"
    init.write_bytes(b"x")
    plain = load_config(write_town_config(tmp_path / "a.toml", town_pbf, tmp_path / "data"))
    cfg = load_config(write_town_config(tmp_path / "b.toml", town_pbf, tmp_path / "data",
                                        extra=f'\n[train]\ninit = "{init}"\n'))
    assert stage_inputs(cfg, "train") == [init] and stage_inputs(plain, "train") == []
    before = stage_digest(cfg, "train")
    assert before != stage_digest(plain, "train")
    os.utime(init, ns=(1, 1))  # the same bytes touched (a copy, a checkout): nothing is out of date
    assert stage_digest(cfg, "train") == before
    init.write_bytes(b"y")  # another base model: the fine-tune is out of date, and so is what follows
    assert stage_digest(cfg, "train") != before and stage_digest(cfg, "predict") != stage_digest(plain, "predict")


def test_arch_options_enter_the_train_digest_only_when_set(tmp_path, town_pbf):
    from pipeline.config.region import load_config
    from pipeline.core.stages import stage_config, stage_digest
    from tests.town import write_town_config

    plain = load_config(write_town_config(tmp_path / "a.toml", town_pbf, tmp_path / "data"))
    scse = load_config(write_town_config(tmp_path / "b.toml", town_pbf, tmp_path / "data",
                                         extra='\n[train]\narch_options = { decoder_attention_type = "scse" }\n'))
    assert "train.arch_options" not in stage_config(plain, "train")  # models trained before it stay valid
    assert stage_config(scse, "train")["train.arch_options"] == [["decoder_attention_type", "scse"]]
    assert stage_digest(scse, "train") != stage_digest(plain, "train")


def test_lineage_in_the_model_card_and_run_json(base):
    from pipeline.core.runinfo import run_manifest
    from pipeline.model.export import mlm_problems, model_card

    _, ckpt = base
    _, meta = load_checkpoint(ckpt)
    lineage = {"path": "models/base.pt", "sha256": "ab" * 32, "config_digest": "base", "classes": ["building"]}
    card = model_card({**meta, "init": lineage}, item_id="osmsat-ft", bbox=(32.5, 0.3, 32.6, 0.4), side=64,
                      created="2026-01-01T00:00:00Z")
    props = card["properties"]
    assert props["mlm:pretrained"] is True and props["osmsat:init"] == lineage
    assert props["mlm:pretrained_source"] == f"osmsat model models/base.pt (sha256 {'ab' * 32})"
    assert [p for p in mlm_problems(card) if not p.startswith("assets:")] == []  # (no assets here)
    plain = model_card(meta, item_id="osmsat-x", bbox=(32.5, 0.3, 32.6, 0.4), side=64, created="2026-01-01T00:00:00Z")
    assert "osmsat:init" not in plain["properties"] and plain["properties"]["mlm:pretrained_source"] is None
    run = run_manifest("r", "r.toml", "d", [], {}, "cpu", code={"commit": "x"}, model_init=lineage)
    assert run["model_init"] == lineage
    assert "model_init" not in run_manifest("r", "r.toml", "d", [], {}, "cpu", code={"commit": "x"})


def test_an_exported_model_is_named_by_its_card_not_its_onnx(tmp_path: Path) -> None:
    """``init`` = an export's ``model.stac.json``: the checkpoint its weights asset names (checked
    against the card's checksum); the ``.onnx`` itself is refused in one line naming that checkpoint."""
    import hashlib
    import json

    from pipeline.core.errors import ModelError
    from pipeline.model.finetune import read_init
    from tests.test_predict import town_checkpoint

    ckpt = town_checkpoint(tmp_path / "model" / "best.pt")
    export = tmp_path / "model" / "export"
    export.mkdir()
    card = export / "model.stac.json"
    checksum = "1220" + hashlib.sha256(ckpt.read_bytes()).hexdigest()
    card.write_text(json.dumps({"assets": {"weights": {"href": "../best.pt", "file:checksum": checksum}}}))
    (export / "model.onnx").write_bytes(b"onnx")
    assert read_init(card)["meta"] == read_init(ckpt)["meta"]
    with pytest.raises(ModelError, match=r"an ONNX export cannot be trained further .*model/best\.pt"):
        read_init(export / "model.onnx")
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")
    with pytest.raises(ModelError, match=r"changed since the export"):
        read_init(card)
    card.write_text(json.dumps({"assets": {}}))
    with pytest.raises(ModelError, match=r"not a model card ExportModel wrote"):
        read_init(card)
