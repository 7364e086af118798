"""The demo's masks, images and ``tiles.csv`` are byte-identical to ``tests/data/demo_checksums.sha256``
(issue 18: refactoring must not change what the pipeline writes). Builds the sample region, its
imagery and masks from ``configs/demo.toml`` into a temporary data folder (about 10 s)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import luigi

from tests.conftest import ROOT

DEMO = ROOT / "configs" / "demo.toml"
CHECKSUMS = ROOT / "tests" / "data" / "demo_checksums.sha256"


def test_demo_masks_images_and_tiles_are_byte_identical(tmp_path: Path) -> None:
    from tasks.imagery import ImageryAll
    from tasks.masks import MasksAll

    cfg = tmp_path / "demo.toml"
    cfg.write_text(DEMO.read_text().replace('"data/demo', f'"{tmp_path}/demo'))
    tasks = [ImageryAll(config=str(cfg)), MasksAll(config=str(cfg))]
    assert luigi.build(tasks, local_scheduler=True, detailed_summary=True).status.name == "SUCCESS"
    expected = dict(line.split()[::-1] for line in CHECKSUMS.read_text().splitlines() if line.strip())
    assert any(p.startswith("masks/") for p in expected) and any(p.startswith("images/") for p in expected)
    got = {p: hashlib.sha256((tmp_path / "demo" / p).read_bytes()).hexdigest()
           for p in expected if (tmp_path / "demo" / p).is_file()}
    assert sorted(set(expected) - set(got)) == []
    assert [p for p in expected if got[p] != expected[p]] == []
