"""Shared pytest fixtures: a tiny generated town (PBF + region config), seeded and offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

from tests.town import write_town, write_town_config

settings.register_profile("ci", deadline=None, derandomize=True, max_examples=60)
settings.register_profile("dev", deadline=None, max_examples=60)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

os.environ.setdefault("LUIGI_CONFIG_PARSER", "toml")
os.environ.setdefault("LUIGI_CONFIG_PATH", str(Path(__file__).resolve().parents[1] / "configs" / "luigi.toml"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def town_pbf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small town PBF (buildings incl. a courtyard multipolygon, roads, a park), seed 7."""
    path = tmp_path_factory.mktemp("town") / "town.osm.pbf"
    write_town(path, seed=7)
    return path


@pytest.fixture
def town_config(tmp_path: Path, town_pbf: Path) -> Path:
    """A region config for the town, writing its data under ``tmp_path/data``."""
    return write_town_config(tmp_path / "town.toml", town_pbf, tmp_path / "data")
