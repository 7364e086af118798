"""The comparison block by block (pipeline.review.blocks): the same statuses, candidates and
figures as one comparison of the whole region, whatever the block size, with candidates that
cross block borders reported once and the gap simulation pooled over the blocks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.config.compare import CompareSpec, parse_compare
from pipeline.config.region import ClassSpec, ConfigError, TagFilter
from pipeline.review.blocks import Inputs, block_keys, compare_region
from pipeline.review.compare import Comparison
from pipeline.review.review import Review
from pipeline.tiles.geo import to_lonlat, to_mercator
from pipeline.tiles.tilemath import tile_extent_m

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
ROAD = ClassSpec("road", 2, "line", 3, (TagFilter("highway", None),), buffer_m=3.0)
X0, Y0 = 3_000_000.0, 1_000_000.0  # EPSG:3857 metres, about 27° E, 9° N
Z = 19


def _box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def _frame(geoms: list[shapely.Geometry], **cols: object) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=list(to_lonlat(np.array(geoms, dtype=object))), crs="EPSG:4326")


def scene() -> Inputs:
    """About 5 x 4 z19 tiles: 48 mapped buildings (6 not predicted, two predicted as one block,
    one drawn 2 m off), 8 unmapped ones predicted (one 60 m long across tile borders), a mapped
    road the model traces and one it does not, and a predicted road OSM lacks."""
    mapped = [_box(40 * i, 40 * j) for i in range(8) for j in range(6)]
    unseen = {3, 11, 19, 26, 33, 41}
    pred = [g for k, g in enumerate(mapped) if k not in unseen | {0, 1, 20}]
    pred += [_box(0, 0, 10, 50), shapely.affinity.translate(mapped[20], 2.0, 0.0)]  # a block over 0 and 1; an offset
    pred += [_box(40 * i + 20, 245, 12, 8) for i in range(7)] + [_box(15, -30, 60, 9)]
    roads = [shapely.LineString([(X0 - 10, Y0 + 30), (X0 + 330, Y0 + 30)]),
             shapely.LineString([(X0 + 190, Y0 - 20), (X0 + 190, Y0 + 260)])]
    traced = [roads[0], shapely.LineString([(X0 - 10, Y0 - 15), (X0 + 330, Y0 - 15)])]
    n, r = len(pred), len(traced)
    pred_f = _frame(pred + traced, **{"class": ["building"] * n + ["road"] * r,
                                      "prob_mean": [0.9] * (n + r), "prob_max": [0.99] * (n + r)})
    osm = _frame(mapped + roads, **{"class": ["building"] * len(mapped) + ["road"] * 2,
                                    "osm_type": ["way"] * (len(mapped) + 2),
                                    "osm_id": list(range(1, len(mapped) + 3))})
    return Inputs(pred_f, osm, osm.iloc[:0], None)


def _held_out(inputs: Inputs) -> set[tuple[int, int]]:
    e, half = tile_extent_m(Z), 20037508.342789244
    b = shapely.total_bounds(to_mercator(inputs.pred.geometry.to_numpy()))
    xs = range(int((b[0] + half) // e), int((b[2] + half) // e) + 1)
    ys = range(int((half - b[3]) // e), int((half - b[1]) // e) + 1)
    return {(x, y) for x in xs for y in ys}


def _run(block_tiles: int, processes: int = 1) -> tuple[Comparison, Review]:
    inputs = scene()
    spec = CompareSpec(block_tiles=block_tiles, min_score=0.0, gap_share=0.25, processes=processes)
    return compare_region(inputs, (BUILDING, ROAD), spec, None, 0.0, _held_out(inputs), Z)


def _statuses(cmp: Comparison) -> dict[tuple[str, int], str]:
    out = {}
    for status in ("matched", "offset", "not_seen", "unknown"):
        layer = cmp.layers[status]
        for t, i in zip(layer.get("osm_type", []), layer.get("osm_id", [])):
            assert (str(t), int(i)) not in out, f"OSM feature {t}/{i} reported twice"
            out[(str(t), int(i))] = status
    return out


def _candidates(queue: Review) -> list[tuple[str, str]]:
    layer = queue.layers["missing_in_osm"]
    return sorted(zip(layer["id"], shapely.to_wkt(layer.geometry.to_numpy(), rounding_precision=7)))


def test_blocks_compare_as_the_whole_region() -> None:
    whole, whole_q = _run(0)
    assert whole.summary["blocks"] == 1
    statuses = _statuses(whole)
    assert len(statuses) == 49 and list(statuses.values()).count("not_seen") == 7  # 48 houses, the lost road
    for block_tiles in (1, 2):
        cmp, queue = _run(block_tiles)
        assert cmp.summary["blocks"] > 4
        assert _statuses(cmp) == statuses
        assert len(queue.layers["missing_in_osm"]) == len(whole_q.layers["missing_in_osm"])
        for name in ("building", "road"):
            key = "classes" if name == "building" else "lines"
            for k, v in whole.summary[key][name].items():
                assert cmp.summary[key][name][k] == pytest.approx(v, abs=2e-4), (block_tiles, name, k)
        assert cmp.summary["counts"] == whole.summary["counts"]
        key = "missing_in_osm/building"
        assert queue.calibration[key]["simulated"] == whole_q.calibration[key]["simulated"] == 48  # each hidden once


def test_block_size_does_not_change_a_candidate() -> None:
    one, two = (_candidates(_run(b)[1]) for b in (1, 2))
    assert one == two
    ids = [i for i, _ in one]
    assert len(ids) == len(set(ids))
    long_one = [w for _, w in one if shapely.area(shapely.from_wkt(w)) > 0]  # (EPSG:4326 areas: just nonzero)
    crossing = to_mercator(shapely.from_wkt(np.array(long_one)))
    reach = np.unique(block_keys(to_lonlat(crossing), Z))
    assert len(reach) > 1  # the candidates lie in several blocks
    wide = [g for g in crossing if shapely.bounds(g)[2] - shapely.bounds(g)[0] > 50]
    assert len(wide) == 1  # the 60 m building across tile borders: one candidate, not a piece per block


def test_blocks_compared_in_two_processes_give_the_same_queue() -> None:
    one, two = _run(1), _run(1, processes=2)
    for status, layer in one[1].layers.items():
        other = two[1].layers[status]
        assert len(layer) == len(other), status
        if not len(layer):
            continue
        assert list(layer["id"]) == list(other["id"]) and shapely.equals(
            layer.geometry.to_numpy(), other.geometry.to_numpy()).all(), status
        assert layer.drop(columns="geometry").astype(str).equals(other.drop(columns="geometry").astype(str)), status
    assert one[0].summary == two[0].summary and one[1].calibration == two[1].calibration


def test_processes_are_the_cpus_and_no_part_of_the_digest(tmp_path: Path) -> None:
    import os

    from pipeline.core.stages import normalise

    cpus = len(os.sched_getaffinity(0))
    assert parse_compare(tmp_path / "r.toml", {}).processes == cpus
    assert parse_compare(tmp_path / "r.toml", {"processes": 3}).processes == 3
    assert normalise(CompareSpec(processes=1)) == normalise(CompareSpec(processes=8))
    assert normalise(CompareSpec(block_tiles=8)) != normalise(CompareSpec())


def test_blocks_larger_than_the_world_are_one_block() -> None:
    from pipeline.review.blocks import block_zoom

    assert block_zoom(19, 32) == 14 and block_zoom(12, 1 << 16) == 0
    cmp, _ = compare_region(scene(), (BUILDING, ROAD), CompareSpec(block_tiles=1 << 16), None, 0.0, set(), Z)
    assert cmp.summary["blocks"] == 1


def test_block_tiles_is_a_power_of_two(tmp_path: Path) -> None:
    assert parse_compare(tmp_path / "r.toml", {}).block_tiles == 32
    assert parse_compare(tmp_path / "r.toml", {"block_tiles": 0}).block_tiles == 0
    with pytest.raises(ConfigError, match=r"compare.block_tiles = 48; give a power of two"):
        parse_compare(tmp_path / "r.toml", {"block_tiles": 48})
    assert dataclasses.replace(CompareSpec(), block_tiles=8).block_tiles == 8
