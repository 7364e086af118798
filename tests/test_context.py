"""pipeline.review.context: OSM water read from the extract, the share of a candidate on it, and
a missing candidate on a mapped pond scored down to nothing (issue 16: "the most confident
candidate is the pond")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config.compare import CONTEXT_TAGS, parse_compare
from pipeline.core.errors import ConfigError
from pipeline.review.candidates import missing_evidence
from pipeline.review.context import ContextAreas, context_areas
from tests.pbf_fixtures import PbfBuilder, rect


def test_water_areas_come_from_the_extract_and_buildings_do_not(tmp_path: Path) -> None:
    b = PbfBuilder(seed=1)
    b.ring(rect(0, 0, 40, 30), {"natural": "water", "water": "pond"})
    b.ring(rect(60, 0, 10, 10), {"building": "yes"})
    b.ring(rect(0, 50, 30, 20), {"landuse": "reservoir"})
    b.ring(rect(60, 50, 30, 20), {"leisure": "park"})
    pbf = b.write(tmp_path / "ctx.osm.pbf")
    areas = context_areas(pbf, CONTEXT_TAGS)
    assert len(areas) == 2 and all(shapely.get_type_id(areas) == 3)
    assert len(context_areas(pbf, ())) == 0


def test_share_of_each_candidate_on_the_areas() -> None:
    water = np.array([shapely.box(0, 0, 2, 2), shapely.box(10, 10, 11, 11)], dtype=object)
    cands = np.array([shapely.box(1, 0, 3, 2), shapely.box(5, 5, 6, 6), shapely.box(0.5, 0.5, 1.5, 1.5),
                      shapely.Polygon()], dtype=object)
    assert ContextAreas(water).share(cands).tolist() == [0.5, 0.0, 1.0, 0.0]
    assert ContextAreas(np.empty(0, dtype=object)).share(cands).tolist() == [0.0] * 4


def test_a_candidate_on_water_has_no_evidence_left() -> None:
    rows = pd.DataFrame({"prob_inside": [0.95, 0.95, 0.95], "rectangularity": [1.0, 1.0, 1.0],
                         "area_m2": [100.0, 100.0, 100.0], "context_share": [0.0, 0.5, 1.0]})
    assert missing_evidence(rows).tolist() == pytest.approx([0.95, 0.475, 0.0])
    assert missing_evidence(rows.drop(columns="context_share")).tolist() == pytest.approx([0.95] * 3)


def test_context_tags_config() -> None:
    assert parse_compare(Path("r.toml"), {}).context_tags == CONTEXT_TAGS
    assert parse_compare(Path("r.toml"), {"context_tags": []}).context_tags == ()
    with pytest.raises(ConfigError, match=r"compare\.context_tags.*bad tag filter"):
        parse_compare(Path("r.toml"), {"context_tags": ["natural==water"]})
