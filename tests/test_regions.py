"""Several regions, one model (``[train] regions``) and models named by their region config
(``[predict] model`` / ``[train] init`` = ``configs/<region>.toml``): pooled band statistics,
refusals, digests, and a Luigi training on two generated regions."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.model.regions import RegionTiles, pooled_stats
from pipeline.model.split import TileRow


def _tiles(name: str, pixels: np.ndarray, n_train: int, **extra: object) -> RegionTiles:
    """A region whose training pixels are ``pixels`` (N, bands) in units of pixel / max."""
    rows = tuple(TileRow(19, i, 0, "train", f"i{i}.png", f"m{i}.png") for i in range(n_train))
    stats = {"bands": pixels.shape[1], "tile_size": 256,
             "band_stats": {"mean": pixels.mean(0).tolist(), "std": pixels.std(0).tolist(), **extra}}
    return RegionTiles(name, (*rows, TileRow(19, 99, 0, "val", "v.png", "vm.png")), stats)


def test_pooled_statistics_equal_those_of_the_pooled_pixels() -> None:
    """Per band, the pooled mean and std are those of all training pixels together (every tile
    of one size: a region weighs by its training tiles); validation tiles do not count."""
    rng = np.random.default_rng(0)
    a = rng.normal([0.3, 0.5, 0.2], [0.1, 0.2, 0.05], (2 * 4096, 3))  # 2 tiles of 4096 px
    b = rng.normal([0.6, 0.4, 0.1], [0.15, 0.1, 0.1], (5 * 4096, 3))  # 5 tiles
    got = pooled_stats([_tiles("a", a, 2), _tiles("b", b, 5)])
    both = np.concatenate([a, b])
    assert np.allclose(got["band_stats"]["mean"], both.mean(0), atol=1e-5)
    assert np.allclose(got["band_stats"]["std"], both.std(0), atol=1e-5)
    assert got["regions"] == {"a": 2, "b": 5} and "max" not in got["band_stats"]
    # a region with no training tile of its own (tested elsewhere) adds nothing
    alone = pooled_stats([_tiles("c", a, 0), _tiles("b", b, 5)])
    assert np.allclose(alone["band_stats"]["mean"], b.mean(0), atol=1e-5)


def test_regions_that_do_not_agree_are_refused() -> None:
    rng = np.random.default_rng(1)
    rgb, pan = rng.random((100, 3)), rng.random((100, 1))
    with pytest.raises(ConfigError, match=r"\[train\] regions: b has 1 bands, a 3"):
        pooled_stats([_tiles("a", rgb, 1), _tiles("b", pan, 1)])
    with pytest.raises(ConfigError, match=r"different bit depths"):
        pooled_stats([_tiles("a", pan, 1, max=4095), _tiles("b", pan, 1, max=1023)])


def _region(tmp: Path, town_pbf: Path, name: str, seed: int, extra: str) -> Path:
    """A generated region ``tmp/<name>.toml`` (data in ``tmp/<name>``; ``extra`` ends its [train])."""
    from tests.test_train import _town_config

    return _town_config(tmp, town_pbf, epochs=1, batch_size=4, more=extra, name=name, data=name, seed=seed)


def test_a_region_trains_with_another_and_a_third_predicts_with_its_model(tmp_path: Path, town_pbf: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``[train] regions``: Luigi makes the other region's split first; the model's band statistics
    are the pooled ones; the other region's split enters the train digest. ``[predict] model``
    naming that region's config: its model (trained by the same run) predicts the third region."""
    import json

    import luigi

    from pipeline.config.region import load_config
    from pipeline.core.stages import stage_digest
    from pipeline.model.network import load_checkpoint
    from pipeline.model.regions import model_path
    from tasks.predict import PredictAll

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    other = _region(tmp_path, town_pbf, "other", 7, "")
    home = _region(tmp_path, town_pbf, "home", 5, f'regions = ["{other}"]\n')
    user = _region(tmp_path, town_pbf, "user", 9, f'\n[predict]\nmodel = "{home}"\n')
    res = luigi.build([PredictAll(config=str(user))], local_scheduler=True, detailed_summary=True,
                      log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    _, meta = load_checkpoint(tmp_path / "home" / "model" / "best.pt")
    stats = [json.loads((tmp_path / r / "split_stats.json").read_text()) for r in ("home", "other")]
    n = [sum(1 for line in (tmp_path / r / "split.csv").read_text().splitlines() if ",train," in line)
         for r in ("home", "other")]
    mean0 = (n[0] * stats[0]["band_stats"]["mean"][0] + n[1] * stats[1]["band_stats"]["mean"][0]) / sum(n)
    assert meta["band_stats"]["mean"][0] == pytest.approx(mean0, abs=1e-5)
    assert stats[0]["band_stats"]["mean"][0] != pytest.approx(stats[1]["band_stats"]["mean"][0], abs=1e-4)
    cfg_user = load_config(user)
    assert model_path(cfg_user) == tmp_path / "home" / "model" / "best.pt"
    assert json.loads((tmp_path / "user" / "predictions" / "_manifest.json").read_text())["tiles"] > 0
    # the other region's split is part of home's train digest (and so of user's predict digest)
    before = (stage_digest(load_config(home), "train"), stage_digest(cfg_user, "predict"))
    other.write_text(other.read_text().replace("val_fraction = 0.3", "val_fraction = 0.2"))
    after = (stage_digest(load_config(home), "train"), stage_digest(load_config(user), "predict"))
    assert before[0] != after[0] and before[1] != after[1]


def test_a_region_listing_itself_or_other_classes_is_refused(tmp_path: Path, town_pbf: Path) -> None:
    from pipeline.config.region import load_config
    from pipeline.model.regions import other_regions

    home = _region(tmp_path, town_pbf, "home", 5, f'regions = ["{tmp_path / "home.toml"}"]\n')
    with pytest.raises(ConfigError, match=r"home\.toml: \[train\] regions names .*home\.toml.*list each other"):
        other_regions(load_config(home))
    odd = _region(tmp_path, town_pbf, "odd", 6, "")
    odd.write_text(odd.read_text().replace('name = "park"', 'name = "garden"'))
    home.write_text(home.read_text().replace(str(tmp_path / "home.toml"), str(odd)))
    with pytest.raises(ConfigError, match=r"\[train\] regions: .*odd\.toml has classes .*same class names"):
        other_regions(load_config(home))


def test_a_local_encoder_weights_file_enters_the_train_digest(tmp_path: Path, town_pbf: Path) -> None:
    from pipeline.config.region import load_config
    from pipeline.core.stages import stage_digest

    weights = tmp_path / "resnet18.pth"
    weights.write_bytes(b"a")
    cfg = _region(tmp_path, town_pbf, "home", 5, f'encoder_weights = "{weights}"\n')
    before = stage_digest(load_config(cfg), "train")
    weights.write_bytes(b"bb")
    assert stage_digest(load_config(cfg), "train") != before
    named = _region(tmp_path, town_pbf, "named", 5, 'encoder_weights = "imagenet"\n')
    assert stage_digest(load_config(named), "train")  # a weight name is no file: nothing to fingerprint


def test_named_region_configs_are_checked_before_anything_runs(tmp_path: Path, town_pbf: Path) -> None:
    """A region config named by ``[train] regions`` / ``init`` or ``[predict] model`` that is
    missing, broken or leads back to the region, or a checkpoint named there that does not exist:
    one line from the command, before Luigi (not after the stages before training have run)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    missing = _region(tmp_path, town_pbf, "a", 5, f'regions = ["{tmp_path / "nope.toml"}"]\n')
    broken = tmp_path / "broken.toml"
    broken.write_text("[region]\nname = 3\n")
    bad = _region(tmp_path, town_pbf, "b", 5, f'\n[predict]\nmodel = "{broken}"\n')
    loop_a, loop_b = tmp_path / "la.toml", tmp_path / "lb.toml"
    _region(tmp_path, town_pbf, "la", 5, f'init = "{loop_b}"\n')
    _region(tmp_path, town_pbf, "lb", 5, f'\n[predict]\nmodel = "{loop_a}"\n')
    no_pt = _region(tmp_path, town_pbf, "c", 5, f'init = "{tmp_path / "gone.pt"}"\n')
    cases = [(missing, r"a\.toml: \[train\] regions names '.*nope\.toml', which is no file; give the path of a "
                       r"region config \(configs/<region>\.toml\)$"),
             (no_pt, r"c\.toml: \[train\] init = '.*gone\.pt': no such file; name a best\.pt written by TrainModel"),
             (bad, r"b\.toml: \[predict\] model = '.*broken\.toml': .*broken\.toml"),
             (loop_a, r"la\.toml: \[train\] init = '.*lb\.toml' .*|lb\.toml: \[predict\] model = '.*la\.toml' leads "
                      r"back to .*la\.toml")]
    for cfg, want in cases:
        done = subprocess.run([sys.executable, "-m", "tasks", "TrainModel", "--config", str(cfg)], cwd=root,
                              capture_output=True, text=True, timeout=120, check=False)
        last = done.stderr.strip().splitlines()[-1]
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert re.search(want, last), last


def _unlabelled(tmp: Path, home: Path, extra: str = "") -> Path:
    """A region with imagery only (``[labels] source = "none"``): home's config without its
    [osm], a bbox inside its orthophoto, predicted with home's model (``extra`` ends [predict])."""
    import mercantile

    from tests.test_train import _town_origin

    ox, oy = _town_origin()
    w, n = mercantile.lnglat(ox + 100, oy - 100)
    e, s = mercantile.lnglat(ox + 600, oy - 600)
    text = re.sub(r'(?m)^\[osm\]\npath = ".*"\n', "", home.read_text()).replace('name = "town"', 'name = "bare"')
    text = text.replace(f'data_dir = "{tmp / "home"}"', f'data_dir = "{tmp / "bare"}"\nbbox = [{w}, {s}, {e}, {n}]')
    text += f'\n[labels]\nsource = "none"\n\n[predict]\nmodel = "{home}"\n{extra}'
    path = tmp / "bare.toml"
    path.write_text(text)
    return path


def test_a_region_without_labels_is_predicted_vectorised_and_reported(tmp_path: Path, town_pbf: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``[labels] source = "none"``: imagery and another region's model give predictions, vectors,
    a QGIS project and a report; no masks, no evaluation, no change layers."""
    import json
    import subprocess
    import sys

    import luigi

    from tasks.pipeline import RegionPipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    home = _region(tmp_path, town_pbf, "home", 5, "")
    bare = _unlabelled(tmp_path, home)
    res = luigi.build([RegionPipeline(config=str(bare))], local_scheduler=True, detailed_summary=True,
                      log_level="WARNING")
    assert res.status.name == "SUCCESS", res.summary_text
    d = tmp_path / "bare"
    assert json.loads((d / "predictions" / "_manifest.json").read_text())["tiles"] > 0
    assert json.loads((d / "predictions.geojson").read_text())["features"]  # the model sees buildings here
    assert json.loads((d / "compare" / "summary.json").read_text())["compared"] is False
    assert not (d / "masks").exists() and not (d / "model").exists()
    assert not list((d / "compare").glob("missing_in_osm*"))
    qgs = (d / "bare.qgs").read_text()
    assert "predictions.gpkg" in qgs and "./images" in qgs and "missing_in_osm" not in qgs
    report = (d / "report.html").read_text()
    assert '"name":"predicted"' in report and '"name":"OSM features"' not in report
    assert "Not compared with OSM: no labels" in report and "Comparison with OSM" not in report
    # a task that needs labels: one line naming the task, the config and the way out
    done = subprocess.run([sys.executable, "-m", "tasks", "TrainModel", "--config", str(bare)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=Path(__file__).resolve().parents[1])
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and last.startswith("error: TrainModel needs labels, and ") and "PredictAll" in last


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.replace('\n[predict]\nmodel = ', '\n[predict]\n# model = '), r"\[predict\] model is required"),
    (lambda t: re.sub(r"(?m)^bbox = .*\n", "", t), r"takes its tiles from \[region\] bbox"),
    (lambda t: t + 'source = "masks"\n'.replace("source", "[vectorize]\nsource"), r"needs labels"),
])
def test_a_region_without_labels_is_refused_what_it_cannot_do(tmp_path: Path, town_pbf: Path, change: Any,
                                                              message: str) -> None:
    from pipeline.config.region import load_config

    home = _region(tmp_path, town_pbf, "home", 5, "")
    bare = _unlabelled(tmp_path, home)
    bare.write_text(change(bare.read_text()))
    with pytest.raises(ConfigError, match=message):
        load_config(bare)
