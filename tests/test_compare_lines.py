"""Change layers of line classes (pipeline.review.compare_lines) on hand-made roads whose answer is known.

Lines are laid out in ground metres east/north of a point at 60.17 N (where a mercator metre is
half a ground metre, so a forgotten scale would show) and turned into EPSG:4326."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.review.compare_lines import MISSING_COLUMNS, NOT_SEEN_COLUMNS, compare_lines
from pipeline.tiles.geo import lonlat_to_mercator, mercator_scale, to_lonlat

ROAD = ClassSpec("road", 2, "line", 10, (TagFilter.parse("highway=primary|residential", "t"),), buffer_m=4.0)
ORIGIN = lonlat_to_mercator(np.array([[24.94, 60.17]]))[0]
SCALE = float(mercator_scale(float(ORIGIN[1])))
TOL, MIN_LEN, COVER = 4.0, 10.0, 0.5


def _line(*pts: tuple[float, float]) -> shapely.LineString:
    """A line through ``pts`` (ground metres east, north of ORIGIN), EPSG:4326."""
    xy = ORIGIN + np.array(pts, dtype=float) * SCALE
    return to_lonlat(np.array([shapely.LineString(xy)], dtype=object))[0]


def _pred(*lines: shapely.LineString, prob: float = 0.8) -> gpd.GeoDataFrame:
    n = len(lines)
    return gpd.GeoDataFrame({"class": ["road"] * n, "prob_mean": [prob] * n, "prob_max": [min(1.0, prob + 0.1)] * n},
                            geometry=list(lines), crs="EPSG:4326")


def _osm(*lines: shapely.LineString) -> gpd.GeoDataFrame:
    n = len(lines)
    return gpd.GeoDataFrame({"class": ["road"] * n, "osm_type": ["way"] * n, "osm_id": list(range(101, 101 + n))},
                            geometry=list(lines), crs="EPSG:4326")


def _run(pred: gpd.GeoDataFrame, osm: gpd.GeoDataFrame, min_len: float = MIN_LEN) -> tuple[pd.DataFrame, pd.DataFrame]:
    return compare_lines(pred, osm, ROAD, TOL, min_len, COVER)


def test_a_predicted_road_osm_lacks_is_one_missing_piece_of_its_length() -> None:
    osm = _osm(_line((0, 0), (200, 0)))
    pred = _pred(_line((0, 1), (200, 1)), _line((50, 60), (50, 160)), prob=0.9)
    missing, not_seen = _run(pred, osm)
    assert list(missing.columns) == list(MISSING_COLUMNS) and list(not_seen.columns) == list(NOT_SEEN_COLUMNS)
    assert len(missing) == 1 and len(not_seen) == 0
    row = missing.iloc[0]
    assert row["class"] == "road" and row["prob_mean"] == 0.9 and row["prob_max"] == 1.0
    assert row["length_m"] == pytest.approx(100.0, abs=0.05)
    assert row.geometry.geom_type == "LineString"
    assert shapely.get_coordinates(row.geometry)[0] == pytest.approx(shapely.get_coordinates(pred.geometry[1])[0])


def test_a_branch_leaving_an_osm_road_is_missing_from_tol_on() -> None:
    osm = _osm(_line((0, 0), (200, 0)))
    missing, _ = _run(_pred(_line((0, 0), (100, 0), (100, 80))), osm)
    # the part within 4 m of the OSM road is explained: 80 - 4 m remain
    assert missing["length_m"].tolist() == [pytest.approx(76.0, abs=0.1)]


def test_an_osm_way_without_prediction_is_not_seen() -> None:
    osm = _osm(_line((0, 0), (200, 0)), _line((0, 50), (120, 50)), _line((0, 100), (60, 100)))
    pred = _pred(_line((0, 0.5), (200, 0.5)), _line((0, 100), (20, 100)))  # a third of the short way
    missing, not_seen = _run(pred, osm)
    assert len(missing) == 0
    assert not_seen["osm_id"].tolist() == [102, 103]
    assert not_seen["osm_type"].tolist() == ["way", "way"]
    assert not_seen["coverage"].tolist() == [0.0, pytest.approx(24 / 60, abs=0.01)]  # 20 m + the 4 m tolerance
    assert not_seen["length_m"].tolist() == [pytest.approx(120.0, abs=0.05), pytest.approx(60.0, abs=0.05)]
    assert not_seen.geometry.iloc[0].equals(osm.geometry.iloc[1])  # the OSM way's own geometry


def test_a_prediction_offset_by_less_than_tol_is_neither() -> None:
    osm = _osm(_line((0, 0), (150, 0), (150, 150)))
    pred = _pred(_line((0, 3.5), (146.5, 3.5), (146.5, 150)))
    missing, not_seen = _run(pred, osm)
    assert len(missing) == 0 and len(not_seen) == 0
    far = _pred(_line((0, 5), (150, 5)))  # beyond the tolerance: the whole line is missing, the OSM way unseen
    missing, not_seen = _run(far, _osm(_line((0, 0), (150, 0))))
    assert missing["length_m"].tolist() == [pytest.approx(150.0, abs=0.05)]
    assert not_seen["coverage"].tolist() == [0.0]


def test_pieces_and_ways_shorter_than_min_length_are_dropped() -> None:
    osm = _osm(_line((0, 0), (200, 0)), _line((0, 300), (8, 300)))  # an 8 m stub nobody sees
    pred = _pred(_line((0, 0), (200, 0)), _line((40, 0), (40, 12)), _line((80, 0), (80, 30)))
    missing, not_seen = _run(pred, osm)
    assert missing["length_m"].tolist() == [pytest.approx(26.0, abs=0.1)]  # the 12 m spur leaves 8 m: dropped
    assert len(not_seen) == 0
    missing, not_seen = _run(pred, osm, min_len=0.0)
    assert sorted(missing["length_m"].round(1).tolist()) == [8.0, 26.0]
    assert not_seen["osm_id"].tolist() == [102]


def test_truth_standing_in_for_predictions_gives_no_candidates() -> None:
    osm = _osm(_line((0, 0), (200, 0)), _line((100, -80), (100, 0), (100, 90)), _line((0, 0), (0, 50), (30, 80)))
    pred = _pred(*osm.geometry)
    missing, not_seen = _run(pred, osm, min_len=0.0)
    assert len(missing) == 0 and len(not_seen) == 0


def test_empty_inputs_give_empty_frames_with_the_columns() -> None:
    road = _line((0, 0), (100, 0))
    empty = gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs="EPSG:4326")
    for pred, osm in ((empty, empty), (_pred(road), empty), (empty, _osm(road))):
        missing, not_seen = _run(pred, osm)
        assert list(missing.columns) == list(MISSING_COLUMNS) and list(not_seen.columns) == list(NOT_SEEN_COLUMNS)
    missing, not_seen = _run(_pred(road), empty)
    assert len(missing) == 1 and len(not_seen) == 0
    missing, not_seen = _run(empty, _osm(road))
    assert len(missing) == 0 and not_seen["osm_id"].tolist() == [101]
    missing, not_seen = _run(empty, empty)
    assert len(missing) == len(not_seen) == 0


def test_other_classes_are_ignored_and_the_order_is_fixed() -> None:
    osm = _osm(_line((0, 0), (200, 0)))
    lines = [_line((150, 50), (150, 150)), _line((20, 50), (20, 150)), _line((80, 50), (80, 150))]
    pred = _pred(*lines)
    pred.loc[3] = ["building", 0.99, 0.99, _line((300, 50), (300, 150))]
    missing, _ = _run(pred, osm)
    west_to_east = missing.geometry.map(lambda g: g.coords[0][0]).tolist()
    assert west_to_east == sorted(west_to_east) and len(missing) == 3
    again, _ = _run(pred.iloc[::-1], osm)
    assert list(shapely.to_wkt(again["geometry"].to_numpy())) == list(shapely.to_wkt(missing["geometry"].to_numpy()))


def test_bad_arguments_name_themselves() -> None:
    road = _pred(_line((0, 0), (10, 0)))
    with pytest.raises(ValueError, match="tol_m"):
        compare_lines(road, _osm(), ROAD, 0.0, 1.0, 0.5)
    with pytest.raises(ValueError, match="seen_cover"):
        compare_lines(road, _osm(), ROAD, 4.0, 1.0, 1.5)


def test_a_context_way_explains_the_line_along_it_and_is_never_not_seen() -> None:
    """A mapped road that runs off the compared tiles (given as context): the predicted centreline
    along it is no missing piece, and the road itself is not reported not seen."""
    road = _osm(_line((0, 0), (200, 0)))
    pred = _pred(_line((0, 1), (120, 1)))
    missing, not_seen = compare_lines(pred, _osm(), ROAD, TOL, MIN_LEN, COVER, context=road)
    assert len(missing) == 0 and len(not_seen) == 0
    assert len(_run(pred, _osm())[0]) == 1  # without it: a missing road
