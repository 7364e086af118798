"""A hostile new user's config mistakes, played back through the CLI: each ends in ONE line that
names the file and key and says what to do, with a non-zero exit, no traceback, and nothing
written under ``data/``. (The run-time probes — corrupt PBF, full disk, Ctrl-C, unknown task,
missing ``--config``, a model that is no checkpoint, ``max_tiles``, ``clean-tmp`` — are in
``tests/test_cli.py``; damaged outputs in ``tests/test_region_outputs.py``; tile servers in
``tests/test_imagery_task.py``; labels in ``tests/test_labels.py``; markup in the report in
``tests/test_report.py``. ``docs/notes/i17-probes.md`` maps the whole list.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import cli, last_line
from tests.town import write_town_config

#: (probe, text replaced in the town's config, its replacement, fragments of the last line)
PROBES = [
    ("typo in a key", "[masks]\n", "[train]\nepoch = 3\n[masks]\n",
     ["unknown key(s) in [train]: epoch", "did you mean 'epochs'"]),
    ("class name with markup", 'name = "building"', 'name = "<img src=x onerror=alert(1)>"',
     ["classes", "name"]),
    ("min_score not a number", "[masks]\n", '[compare]\nmin_score = "high"\n[masks]\n',
     ["compare.min_score", '"auto"']),
    ("min_score out of range", "[masks]\n", "[compare]\nmin_score = 1.5\n[masks]\n",
     ["compare.min_score = 1.5", "out of range"]),
    ("negative per-class area", "[masks]\n", "[compare]\nmin_area_m2 = { building = -2 }\n[masks]\n",
     ["compare.min_area_m2.building", ">= 0"]),
    ("cross_fit not a boolean", "[masks]\n", '[train]\ncross_fit = "yes"\n[masks]\n',
     ["train.cross_fit", "must be bool"]),
    ("gap_share out of range", "[masks]\n", "[compare]\ngap_share = 0.9\n[masks]\n",
     ["compare.gap_share = 0.9", "out of range"]),
    ("TOML syntax error", "[masks]\n", "[masks\n", ["line"]),
]


@pytest.mark.parametrize(("probe", "old", "new", "fragments"), PROBES, ids=[p[0] for p in PROBES])
def test_config_mistakes_end_in_one_clear_line(tmp_path: Path, town_pbf: Path, probe: str, old: str, new: str,
                                               fragments: list[str]) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data")
    text = cfg.read_text()
    assert old in text, probe
    cfg.write_text(text.replace(old, new, 1))
    code, out, err = cli("CoverTiles", "--config", str(cfg))
    line = last_line(err)
    assert code != 0 and line.startswith("error: ") and str(cfg) in line, (probe, err)
    assert all(f in line for f in fragments), (probe, line)
    assert "Traceback" not in out + err and not (tmp_path / "data").exists(), probe
