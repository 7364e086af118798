"""pipeline.model.ema: the moving average of the weights is what is validated and saved as
best.pt, last.pt keeps the raw weights and the average, and a killed run resumes to the same
average. Tiny: 64 px generated tiles, ResNet-18 U-Net, a handful of steps, one CPU thread."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from pipeline.model.ema import build_ema, ema_decay
from pipeline.model.network import read_checkpoint
from pipeline.model.repair import repair_model_dir
from tests.test_train import SPEC, run
from tests.test_train import _run_script as run_script
from tests.train_fixtures import write_region

EMA_SPEC = replace(SPEC, ema_epochs=1.0, epochs=3, val_every=3)


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("tiles")
    write_region(data, n=3, seed=3)
    return data


def test_decay_has_the_time_constant_in_epochs():
    d = ema_decay(2.0, 50)
    assert math.isclose(d ** 100, math.exp(-1.0), rel_tol=1e-9)
    assert ema_decay(0.01, 3) == pytest.approx(math.exp(-1.0))  # never faster than one step
    assert build_ema(torch.nn.Linear(2, 2), 0.0, 10) is None


def test_the_average_follows_the_weights_at_its_decay():
    torch.manual_seed(0)
    m = torch.nn.Linear(3, 1)
    ema = build_ema(m, 1.0, 4)
    assert ema is not None
    d = ema_decay(1.0, 4)
    ema.update_parameters(m)  # the first update copies
    w0 = m.weight.detach().clone()
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update_parameters(m)
    assert torch.allclose(ema.module.weight, d * w0 + (1 - d) * (w0 + 1.0), atol=1e-6)


def test_best_pt_is_the_average_last_pt_keeps_the_raw_weights(region, tmp_path):
    torch.set_num_threads(1)
    run(region, tmp_path / "m", EMA_SPEC)
    best = read_checkpoint(tmp_path / "m" / "best.pt")
    last = read_checkpoint(tmp_path / "m" / "last.pt")
    ema = last["train_state"]["ema"]
    assert int(ema["n_averaged"]) > 1
    differ = 0
    for k, v in best["model"].items():
        assert torch.equal(v, ema[f"module.{k}"]), k
        differ += int(v.is_floating_point() and not torch.allclose(v, last["model"][k]))
    assert differ > len(best["model"]) // 2  # the average is not the last step's weights
    # a lost best.pt is rebuilt from last.pt's average, byte for byte
    written = (tmp_path / "m" / "best.pt").read_bytes()
    (tmp_path / "m" / "best.pt").unlink()
    assert repair_model_dir(tmp_path / "m", "d1", {}).files == ("best.pt",)
    assert (tmp_path / "m" / "best.pt").read_bytes() == written


def _run_script(data: Path, out: Path, kill: tuple[int, int] | None) -> int:
    return run_script(data, out, kill, spec="replace(EMA_SPEC, checkpoint_minutes=0.0)",
                      imports="from dataclasses import replace\nfrom tests.test_ema import EMA_SPEC")


def test_sigkill_then_resume_gives_the_same_average(region, tmp_path):
    assert _run_script(region, tmp_path / "a", None) == 0
    assert _run_script(region, tmp_path / "b", (2, 0)) == -9  # killed in the 3rd epoch, after its first step
    assert _run_script(region, tmp_path / "b", None) == 0
    a, b = read_checkpoint(tmp_path / "a" / "best.pt"), read_checkpoint(tmp_path / "b" / "best.pt")
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k


def test_ema_epochs_enters_the_train_digest_only_when_on(tmp_path):
    from pipeline.config.region import load_config
    from pipeline.core.stages import stage_config, stage_digest
    from tests.town import write_town_config

    def cfg(name, extra):
        return load_config(write_town_config(tmp_path / f"{name}.toml", tmp_path / "town.osm.pbf", tmp_path / "data",
                                             extra=extra))

    off, zero = cfg("a", ""), cfg("b", "\n[train]\nema_epochs = 0\n")
    on, on5 = cfg("c", "\n[train]\nema_epochs = 2\n"), cfg("d", "\n[train]\nema_epochs = 5\n")
    assert "ema_epochs" not in stage_config(off, "train")["train"]  # models trained before the key stay valid
    assert stage_digest(off, "train") == stage_digest(zero, "train")
    assert stage_config(on, "train")["train.ema_epochs"] == 2.0
    assert len({stage_digest(off, "train"), stage_digest(on, "train"), stage_digest(on5, "train")}) == 3
