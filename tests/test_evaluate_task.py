"""EvaluateModel on a region whose split holds no test tile (``[split] test_fraction = 0``, as in
configs/kampala.toml: the model is tested on another region): the region is not evaluated, and
metrics.json, the summary and the report say so instead of the run failing."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.review.report import render_report
from tests.test_predict import run_luigi, town_checkpoint, town_region


def test_no_test_split_is_a_note_not_a_failure(tmp_path: Path, town_pbf: Path) -> None:
    from pipeline.model.split import read_split_csv
    from pipeline.review.region_report import region_figures, region_report, summary_lines
    from tasks.predict import EvaluateModel
    from tasks.split import SplitDataset
    from tasks.train import TrainModel

    cfg = town_region(tmp_path, town_pbf, tmp_path / "unused.pt",
                      extra="\n[split]\nblock_zoom = 17\ntest_fraction = 0.0\nval_fraction = 0.2\nseed = 1\n")
    cfg.write_text(cfg.read_text().replace(f'model = "{tmp_path / "unused.pt"}"\n', ""))  # the region's own model
    assert run_luigi(SplitDataset(config=str(cfg))).status.name == "SUCCESS"  # type: ignore[attr-defined]
    data = tmp_path / "data"
    assert not [r for r in read_split_csv(data / "split.csv") if r.split == "test"]
    # TrainModel is done here by writing its checkpoint and manifest
    town_checkpoint(data / "model" / "best.pt")
    (data / "model" / "last.pt").write_bytes((data / "model" / "best.pt").read_bytes())
    TrainModel(config=str(cfg)).output().write({"root": str(data / "model"), "files": {
        n: {"size": (data / "model" / n).stat().st_size} for n in ("best.pt", "last.pt")}})

    res = run_luigi(EvaluateModel(config=str(cfg)))
    assert res.status.name == "SUCCESS", res.summary_text  # type: ignore[attr-defined]
    m = json.loads((data / "model" / "metrics.json").read_text())
    assert m["scope"] == "test" and m["tiles"] == 0 and "iou" not in m
    assert "no test tiles ([split] test_fraction = 0.0 in " in m["note"] and str(cfg) in m["note"]
    assert EvaluateModel(config=str(cfg)).complete()

    lines = summary_lines(data, "town")
    assert f"model not evaluated: {m['note']}" in lines and not any("model IoU" in line for line in lines)
    assert region_figures(data)["Model (test tiles)"] == [("tiles", "none: not evaluated")]
    report = region_report(data, "town", 17)
    assert report.notes == (f"Model not evaluated: {m['note']}.",)
    assert "Model not evaluated: no test tiles" in render_report(report)
