"""The review queue: positive-unlabelled calibration where the answer is known, the gap
simulation (every held-out feature hidden once, placebos on empty ground), and a scene where
real unmapped buildings must outrank false detections."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import geopandas as gpd
import mercantile
import numpy as np
import pandas as pd
import pytest
import shapely

from pipeline.config.region import ClassSpec, ConfigError, TagFilter
from pipeline.review.calibration import choose_min_score, curve, fit, pu_score, real_share
from pipeline.review.candidates import (
    LINE_SURE,
    MIN_MAPPED,
    PLAUSIBLE_X,
    line_evidence,
    missing_evidence,
    unseen_evidence,
)
from pipeline.review.compare import CompareSpec, compare, parse_compare, split_unknown
from pipeline.review.figures import merged_partials
from pipeline.review.gapsim import groups, placebos, simulate_line_missing, simulate_missing
from pipeline.review.review import found_scores, review
from pipeline.review.review import pooled as review_pooled
from pipeline.tiles.geo import to_lonlat, to_mercator

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
X0, Y0 = 3_000_000.0, 1_000_000.0  # EPSG:3857 metres, about 27° E, 9° N
Z = 19


def box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def blob(x: float, y: float) -> shapely.Polygon:
    """An irregular, non-rectangular shape (a tree crown, a pond)."""
    return shapely.Point(X0 + x, Y0 + y).buffer(5.0, quad_segs=3).union(shapely.Point(X0 + x + 6, Y0 + y).buffer(3.0))


def frame(geoms: list[shapely.Geometry], **cols: object) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=list(to_lonlat(np.array(geoms, dtype=object))), crs="EPSG:4326")


def tiles_of(geoms: list[shapely.Geometry]) -> set[tuple[int, int]]:
    b = shapely.total_bounds(to_lonlat(np.array(geoms, dtype=object)))
    return {(t.x, t.y) for t in mercantile.tiles(b[0] - 1e-4, b[1] - 1e-4, b[2] + 1e-4, b[3] + 1e-4, Z)}


def test_calibration_recovers_a_known_labelled_share() -> None:
    # 1000 labelled real changes, 1000 unlabelled real ones (so c = 0.5) and 2000 errors, separable
    rng = np.random.default_rng(0)
    x = np.r_[rng.uniform(0.6, 1.0, 2000), rng.uniform(0.0, 0.4, 2000)]
    s = np.r_[np.ones(1000, int), np.zeros(3000, int)]
    assert real_share(x[s == 1], x[s == 0]) == pytest.approx(1 / 3, abs=0.06)  # the min over thresholds leans low
    cal = fit(x, s)
    assert cal.fitted and cal.c == pytest.approx(0.5, abs=0.05)
    scores = cal.score(np.array([0.9, 0.1]))
    assert scores[0] > 0.9 and scores[1] < 0.05  # a real-looking candidate is real, an error is not
    assert pu_score(np.array([0.5]), 0.5)[0] == pytest.approx(1.0)
    assert pu_score(np.array([0.0]), 0.5)[0] == pytest.approx(0.0, abs=1e-5)


def test_the_real_share_counts_each_own_candidate_once() -> None:
    """A region's own candidates are in every round of the simulation: 25 of them (20 real, drawn
    like the labelled, 5 errors) five times each. The share of real ones (0.8) over 40 seeds:
    the bounded best bin with the 25 distinct candidates comes within 0.08 on average; the plain
    minimum over the thresholds with a fifth of the labelled above them (the earlier estimator)
    leaned to 0.58 and, once, 0, which leaves a layer uncalibrated."""
    got = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        own = np.r_[rng.uniform(0.6, 1.0, 20), rng.uniform(0.0, 0.4, 5)]
        got.append(real_share(rng.uniform(0.6, 1.0, 120), np.repeat(own, 5), 25.0))
    assert np.mean(np.abs(np.array(got) - 0.8)) < 0.1 and min(got) > 0.4


def test_too_few_simulated_changes_are_not_calibrated() -> None:
    cal = fit(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]))
    assert not cal.fitted and "too few" in cal.note
    assert cal.score(np.array([0.3]))[0] == pytest.approx(0.3)  # the raw evidence


def test_curve_and_threshold() -> None:
    scores = np.array([0.95, 0.9, 0.85, 0.3, 0.1])
    rows = curve(scores, found_scores=np.array([0.95, 0.5]), simulated=4)
    first = rows[0]
    assert first["n"] == 5 and first["est_precision"] == pytest.approx(scores.mean(), abs=1e-4)
    assert first["est_recall"] == 0.5  # 2 of 4 simulated changes found
    at = next(r for r in rows if r["min_score"] == 0.8)
    assert at["n"] == 3 and at["est_precision"] == pytest.approx(0.9) and at["est_recall"] == 0.25
    assert choose_min_score(rows, 0.8, min_n=3)[0] == pytest.approx(0.35)  # the lowest threshold above 0.3
    t, note = choose_min_score(rows, 0.8, min_n=4)  # 3 candidates reach it: too few to hold the rest back
    assert t == 0.0 and "all candidates kept" in note
    assert choose_min_score(curve(np.empty(0), np.empty(0), 0), 0.8)[0] == 0.0


def test_threshold_moves_up_for_precision_only_while_no_recall_is_lost() -> None:
    def row(t: float, p: float, r: float) -> dict[str, float]:
        return {"min_score": t, "est_precision": p, "est_recall": r, "n": 20}

    # 0.15 reaches the target, 0.2 is more precise at the same recall: 0.2; 0.3 loses recall
    rows = [row(0.1, 0.70, 0.76), row(0.15, 0.83, 0.75), row(0.2, 0.93, 0.75), row(0.25, 0.93, 0.75),
            row(0.3, 0.97, 0.60)]
    assert choose_min_score(rows, 0.8)[0] == pytest.approx(0.2)
    # the lowest qualifying threshold has the best recall: it stays
    rows = [row(0.25, 0.89, 0.7546), row(0.3, 0.89, 0.7485), row(0.9, 0.95, 0.50)]
    assert choose_min_score(rows, 0.8)[0] == pytest.approx(0.25)


def test_groups_hide_every_feature_exactly_once() -> None:
    g = groups(23, 0.2, seed=3)
    assert len(g) == 5 and sorted(np.concatenate(g).tolist()) == list(range(23))
    assert [a.tolist() for a in groups(23, 0.2, seed=3)] == [a.tolist() for a in g]  # seeded
    assert groups(0, 0.2, 0) == []


def test_placebos_land_on_empty_ground_inside_the_held_out_tiles() -> None:
    osm = [box(30 * i, 30 * j) for i in range(4) for j in range(4)]
    held = tiles_of(osm)
    moved = placebos(np.array(osm, dtype=object), 0.5, 0, held, Z)
    assert len(moved) >= 4
    grown = shapely.union_all(shapely.buffer(np.array(osm, dtype=object), 1.5))
    assert not shapely.intersects(moved, grown).any()
    assert shapely.area(moved) == pytest.approx(100.0)  # outlines moved, not reshaped


def scene() -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, list[shapely.Geometry], list[shapely.Geometry]]:
    """40 mapped buildings (predicted too), 6 unmapped ones the model finds (rectangles, p 0.9)
    and 6 false detections (blobs, p 0.55)."""
    mapped = [box(40 * i, 40 * j) for i in range(8) for j in range(5)]
    real = [box(40 * i + 20, 40 * 5 + 5, 12, 8) for i in range(6)]
    false = [blob(40 * i + 20, -25) for i in range(6)]
    pred = frame(mapped + real + false, **{"class": ["building"] * 52,
                                           "prob_mean": [0.9] * 46 + [0.55] * 6, "prob_max": [0.99] * 46 + [0.7] * 6})
    osm = frame(mapped, **{"class": ["building"] * 40, "osm_type": ["way"] * 40, "osm_id": list(range(1, 41))})
    return pred, osm, real, false


def test_gap_simulation_labels_the_hidden_buildings() -> None:
    pred, osm, _, _ = scene()
    sim = simulate_missing(pred, osm, "building", CompareSpec(gap_share=0.25), tiles_of(list(to_mercator(
        pred.geometry.to_numpy()))), Z, None)
    assert sim.simulated == 40
    hits = sim.rows[sim.rows["s"] == 1]
    assert sorted(hits["change"].tolist()) == list(range(40))  # every hidden building found once
    assert (sim.rows["s"] == 0).sum() == 4 * 12  # the region's own 12 candidates in each of 4 rounds


def test_recall_counts_a_hidden_building_found_where_candidates_cover_half_of_it() -> None:
    """The estimated recall counts a simulated change found as a truth would (at least half of it
    covered), not by a candidate lying mostly inside it: a blob three times a hidden building's
    size finds it (it is no labelled candidate), two slivers of 30 % each find it only together,
    at the lower of their scores."""
    cover = pd.DataFrame({"row": [0, 1, 2, 3], "change": [7, 8, 8, 9], "share": [1.0, 0.3, 0.3, 0.2]})
    scores = np.array([0.4, 0.9, 0.6, 0.95])
    assert found_scores(cover, scores).tolist() == [0.4, 0.6]  # change 9 never half covered
    hidden = [box(0, 0), box(30, 0), box(60, 0), box(90, 0)]
    blocks = [box(0, 0, 10, 30), box(30, 0), box(60, 0), box(90, 0)]  # the first hidden one inside a blob
    pred = frame(blocks, **{"class": ["building"] * 4, "prob_mean": [0.9] * 4, "prob_max": [1.0] * 4})
    osm = frame(hidden, **{"class": ["building"] * 4, "osm_type": ["way"] * 4, "osm_id": list(range(4))})
    sim = simulate_missing(pred, osm, "building", CompareSpec(gap_share=0.25, missing_min_m2=4.0),
                           tiles_of(blocks), Z, None)
    assert sim.simulated == 4 and (sim.rows["s"] == 1).sum() == 3  # the blob is no labelled candidate
    assert sim.cover is not None
    found = found_scores(sim.cover, np.ones(len(sim.rows)))
    assert len(found) == 4  # yet all four hidden buildings are found
    halves = review_pooled([{"missing_in_osm/building": sim}, {"missing_in_osm/building": sim}])
    cover2 = halves["missing_in_osm/building"].cover
    assert cover2 is not None and len(found_scores(cover2, np.ones(2 * len(sim.rows)))) == 8


def test_a_building_reaching_into_the_held_out_tiles_is_never_hidden_but_explains() -> None:
    """Held-out tiles are a part of the region: a mapped building whose representative point lies
    on a training tile but which reaches into a held-out one is not hidden by the simulation, and
    the predicted part of it inside is no (false, region's own) candidate in any round."""
    from pipeline.tiles.tilemath import tile_extent_m

    e, half = tile_extent_m(Z), 20037508.342789244
    tx, ty = int((X0 + half) // e), int((half - Y0) // e)
    left, top = tx * e - half, half - ty * e
    held = {(tx, ty)}
    edge = shapely.box(left - 14.0, top - 20.0, left + 6.0, top - 10.0)  # mostly on the tile to the west
    inside = [shapely.box(left + 10.0 + 15 * k, top - 40.0, left + 20.0 + 15 * k, top - 30.0) for k in range(4)]
    part = shapely.intersection(edge, shapely.box(left, top - e, left + e, top))
    pred = frame([part, *inside], **{"class": ["building"] * 5, "prob_mean": [0.9] * 5, "prob_max": [1.0] * 5})
    osm = frame([edge, *inside], **{"class": ["building"] * 5, "osm_type": ["way"] * 5, "osm_id": list(range(5))})
    sim = simulate_missing(pred, osm, "building", CompareSpec(gap_share=0.25, missing_min_m2=4.0), held, Z, None)
    assert sim.simulated == 4  # the four inside, each hidden once; the edge building never
    assert (sim.rows["s"] == 1).sum() == 4 and (sim.rows["s"] == 0).sum() == 0


def test_real_unmapped_buildings_outrank_false_detections() -> None:
    pred, osm, real, false = scene()
    held = tiles_of(list(to_mercator(pred.geometry.to_numpy())))
    spec = CompareSpec(gap_share=0.25, min_score=0.0)
    cmp = compare(pred, osm, (BUILDING,), spec)
    queue = review(cmp, pred, osm, (BUILDING,), spec, held, Z, None)
    miss = queue.layers["missing_in_osm"]
    assert len(miss) == 12 and list(miss.columns[:3]) == ["id", "score", "class"]
    assert miss["score"].is_monotonic_decreasing
    top = to_mercator(miss.geometry.to_numpy()[:6])
    assert shapely.intersects(top[:, None], np.array(real, dtype=object)[None, :]).any(axis=1).all()
    entry = queue.calibration["missing_in_osm/building"]
    assert entry["calibrated"] and entry["simulated"] == 40 and entry["curve"]
    # the default threshold holds the blobs back
    auto = review(cmp, pred, osm, (BUILDING,), dataclasses.replace(spec, min_score=None), held, Z, None)
    kept = to_mercator(auto.layers["missing_in_osm"].geometry.to_numpy())
    assert not shapely.intersects(kept[:, None], np.array(false, dtype=object)[None, :]).any()
    assert auto.calibration["missing_in_osm/building"]["kept"] >= 6


def test_without_held_out_tiles_scores_are_the_raw_evidence() -> None:
    pred, osm, _, _ = scene()
    spec = CompareSpec()
    cmp = compare(pred, osm, (BUILDING,), spec)
    queue = review(cmp, pred, osm, (BUILDING,), spec, set(), Z, None)
    e = queue.calibration["missing_in_osm/building"]
    assert not e["calibrated"] and "no held-out" in e["note"] and e["min_score"] == 0.0
    miss = queue.layers["missing_in_osm"]
    assert miss["score"].to_numpy() == pytest.approx(missing_evidence(miss), abs=1e-4)


def test_unknown_where_imagery_is_unusable_or_the_feature_too_small() -> None:
    rows = pd.DataFrame({"class": "building", "area_m2": [80.0, 80.0, 4.0, 80.0], "coverage": 0.0,
                         "usable_share": [1.0, 0.2, 1.0, np.nan], "prob_inside": [0.01, 0.01, 0.01, np.nan],
                         "confident_share": 0.0})
    gone, unknown = split_unknown(rows, resolvable_m2=6.0)
    assert gone.index.tolist() == [0, 3]
    assert unknown["reason"].tolist() == ["no usable imagery", "smaller than the model resolves"]
    ev = unseen_evidence(gone)
    assert ev[0] == pytest.approx(0.99)  # large, nothing predicted inside: gone
    assert unseen_evidence(rows.assign(area_m2=8.0))[0] == 0.0  # a shed-sized miss is no evidence
    # an outline the imagery still shows (a roof the model missed) is weaker evidence of a building gone
    shown = unseen_evidence(gone.assign(outline_edge=[3.0, 0.8]))
    assert shown[0] == pytest.approx(0.99 / 3.0) and shown[1] == pytest.approx(ev[1])


def test_a_candidate_far_larger_than_any_mapped_building_loses_its_evidence() -> None:
    """Up to twice the largest mapped building a candidate keeps its evidence; from four times on
    it has none (a block of merged roofs, not a building OSM lacks); between, it falls on a log
    scale; without a bound (too few mapped) nothing changes."""
    rows = pd.DataFrame({"prob_inside": 0.9, "rectangularity": 0.9, "context_share": 0.0,
                         "area_m2": [150.0, 600.0, 300.0 * np.sqrt(8.0), 1200.0, 3600.0]})
    free = missing_evidence(rows)
    bound = missing_evidence(rows, largest_m2=300.0)
    assert bound[:2] == pytest.approx(free[:2])  # up to twice the largest: untouched
    assert bound[2] == pytest.approx(free[2] * 0.5)  # halfway between 2x and 4x on a log scale
    assert bound[3] == 0.0 and bound[4] == 0.0
    assert PLAUSIBLE_X == (2.0, 4.0)


def test_the_size_bound_is_the_regions_largest_mapped_feature() -> None:
    """The largest mapped building (ground m²) and the count per class; blocks merge to the
    region's; fewer than MIN_MAPPED mapped buildings bound nothing."""
    few = frame([box(30.0 * k, 0.0) for k in range(MIN_MAPPED - 1)] + [box(0.0, 50.0, 40.0, 20.0)],
                **{"class": ["building"] * MIN_MAPPED, "osm_type": ["way"] * MIN_MAPPED,
                   "osm_id": list(range(1, MIN_MAPPED + 1))})
    part = compare(few.iloc[:0], few, (BUILDING,), CompareSpec()).partials
    big, n = part["building"]["largest_m2"], part["building"]["osm"]
    assert n == MIN_MAPPED and big == pytest.approx(800.0, rel=0.03)  # 40 x 20 mercator m at 9 N
    merged = merged_partials([part, {"building": {"largest_m2": 1000.0, "osm": 5}}, {}])["building"]
    assert (merged["largest_m2"], merged["osm"]) == (1000.0, MIN_MAPPED + 5)
    pred = frame([box(0.0, 200.0, 60.0, 60.0)], **{"class": ["building"], "prob_mean": [0.95], "prob_max": [0.99]})
    for osm, bounded in ((few, True), (few.iloc[1:], False)):  # 3,600 m²: 4.5x the largest
        cmp = compare(pred, osm, (BUILDING,), CompareSpec())
        q = review(cmp, pred, osm, (BUILDING,), CompareSpec(), set(), Z, None)
        assert (q.layers["missing_in_osm"]["score"].iloc[0] == 0.0) == bounded
        largest = q.calibration["missing_in_osm/building"]["largest_mapped_m2"]
        assert (largest is not None) == bounded


def test_line_evidence_saturates_at_a_sure_centreline() -> None:
    """A narrow road's centreline (mean 0.97) is as sure as a wide one's (0.99): same evidence,
    so a calibration on simulated wide roads does not rank real narrow ones below them."""
    rows = pd.DataFrame({"prob_mean": [0.99, 0.97, LINE_SURE, 0.45, 0.99, 0.99],
                         "length_m": [80.0, 80.0, 80.0, 80.0, 10.0, np.sqrt(500.0)]})
    ev = line_evidence(rows)
    assert ev[:3] == pytest.approx([1.0, 1.0, 1.0])
    assert ev[3] == pytest.approx(0.45 / LINE_SURE)  # an unsure centreline stays weaker
    assert ev[4] == 0.0 and ev[5] == pytest.approx(0.5)  # 10 m: none; the length ramp's middle (log scale)
    # simulated roads all wide (0.99), the region's own all narrow (0.97): the calibration sees
    # the same evidence and scores the own ones as real as the simulated
    sim = pd.DataFrame({"prob_mean": [0.99] * 30 + [0.97] * 10 + [0.3] * 10, "length_m": 80.0})
    s = np.r_[np.ones(30, dtype=int), np.zeros(20, dtype=int)]
    cal = fit(line_evidence(sim), s)
    assert cal.fitted and cal.score(line_evidence(sim.iloc[30:40]))[0] > 0.9
    assert cal.score(line_evidence(sim.iloc[40:]))[0] < 0.1


def test_compare_section_keys() -> None:
    spec = parse_compare(Path("r.toml"), {"min_score": 0.7, "min_area_m2": {"building": 12},
                                                                 "target_precision": 0.9})
    assert spec.min_score == 0.7 and spec.min_area("building") == 12.0 and spec.min_area("shed") == 5.0
    assert parse_compare(Path("r.toml"), {"min_score": "auto"}).min_score is None
    with pytest.raises(ConfigError, match="min_score"):
        parse_compare(Path("r.toml"), {"min_score": "high"})
    with pytest.raises(ConfigError, match=r"min_area_m2\.building"):
        parse_compare(Path("r.toml"), {"min_area_m2": {"building": -1}})


def test_no_predictions_at_all() -> None:
    _, osm, _, _ = scene()
    empty = gpd.GeoDataFrame(geometry=[], crs="EPSG:4326")  # an empty predictions.geojson has no columns
    spec = CompareSpec()
    cmp = compare(empty, osm, (BUILDING,), spec)
    queue = review(cmp, empty, osm, (BUILDING,), spec, tiles_of(list(to_mercator(osm.geometry.to_numpy()))), Z, None)
    assert len(queue.layers["missing_in_osm"]) == 0 and len(queue.layers["not_seen"]) == 40


ROAD = ClassSpec("road", 2, "line", 10, (TagFilter("highway", None),), buffer_m=4.0)


def test_gap_simulation_of_roads_labels_the_hidden_ways() -> None:
    streets = [shapely.LineString([(X0, Y0 + 50 * k), (X0 + 300, Y0 + 50 * k)]) for k in range(8)]
    unmapped = shapely.LineString([(X0 + 20, Y0 - 40), (X0 + 280, Y0 - 40)])
    pred = frame([*streets, unmapped], **{"class": ["road"] * 9, "prob_mean": [0.8] * 9, "prob_max": [0.95] * 9})
    osm = frame(streets, **{"class": ["road"] * 8, "osm_type": ["way"] * 8, "osm_id": list(range(1, 9))})
    held = tiles_of([*streets, unmapped])
    sim = simulate_line_missing(pred, osm, ROAD, CompareSpec(gap_share=0.25), held, Z)
    assert sim.simulated == 8
    hits = sim.rows[sim.rows["s"] == 1]
    assert sorted(hits["change"].tolist()) == list(range(8))  # every hidden street comes back as one piece
    assert (sim.rows["s"] == 0).sum() == 4  # the unmapped street, once per round
    assert hits["length_m"].min() > 250  # ground metres (about 1.2 % shorter than mercator metres at 9° N)
    cmp = compare(pred, osm, (ROAD,), CompareSpec())
    assert len(cmp.layers["missing_in_osm"]) == 1 and cmp.summary["lines"]["road"]["missing_in_osm"] == 1


def test_a_road_running_into_the_held_out_tiles_explains_the_line_along_it() -> None:
    """A mapped road whose representative point lies outside the held-out tiles but that runs
    through them is never hidden, and the predicted centreline along it there is no (false) own
    candidate in any round."""
    streets = [shapely.LineString([(X0, Y0 + 50 * k), (X0 + 300, Y0 + 50 * k)]) for k in range(4)]
    through = shapely.LineString([(X0 - 2000, Y0 - 40), (X0 + 280, Y0 - 40)])  # mostly far to the west
    along = shapely.LineString([(X0 + 20, Y0 - 40), (X0 + 280, Y0 - 40)])
    pred = frame([*streets, along], **{"class": ["road"] * 5, "prob_mean": [0.8] * 5, "prob_max": [0.95] * 5})
    osm = frame([*streets, through], **{"class": ["road"] * 5, "osm_type": ["way"] * 5, "osm_id": list(range(1, 6))})
    held = tiles_of([*streets, along])
    sim = simulate_line_missing(pred, osm, ROAD, CompareSpec(gap_share=0.25), held, Z)
    assert sim.simulated == 4 and (sim.rows["s"] == 0).sum() == 0


def test_a_long_predicted_centreline_counts_where_it_meets_the_held_out_tiles() -> None:
    """The predicted network is one long line (a street and the road it leaves from), its
    representative point far outside the held-out tiles: its part along a hidden street still
    comes back as that street's piece (taken whole by its representative point, none would)."""
    streets = [shapely.LineString([(X0, Y0 + 50 * k), (X0 + 300, Y0 + 50 * k)]) for k in range(4)]
    network = shapely.LineString([(X0 - 3000, Y0 + 150), (X0, Y0 + 150), (X0 + 300, Y0 + 150)])
    pred = frame([*streets[:3], network], **{"class": ["road"] * 4, "prob_mean": [0.95] * 4, "prob_max": [0.99] * 4})
    osm = frame(streets, **{"class": ["road"] * 4, "osm_type": ["way"] * 4, "osm_id": list(range(1, 5))})
    held = tiles_of(streets)
    sim = simulate_line_missing(pred, osm, ROAD, CompareSpec(gap_share=0.25), held, Z)
    hits = sim.rows[sim.rows["s"] == 1]
    assert sorted(hits["change"].tolist()) == [0, 1, 2, 3]  # the fourth street found along the network
    assert hits["length_m"].max() < 500  # the piece clipped to the held-out tiles, not the 3 km line


def test_the_recall_of_hidden_streets_is_measured_by_length() -> None:
    """A predicted centreline runs along a hidden street and 300 m on past its end: the piece is
    mostly elsewhere, so it is no labelled candidate, yet it runs along the whole street; the
    estimated recall of lines is the share of the hidden ways' length the candidates run along."""
    from pipeline.review.calibration import Calibration
    from pipeline.review.review import _length_recall

    street = shapely.LineString([(X0, Y0), (X0 + 100, Y0)])
    others = [shapely.LineString([(X0, Y0 + 60 * k), (X0 + 400, Y0 + 60 * k)]) for k in range(1, 4)]
    longer = shapely.LineString([(X0, Y0), (X0 + 400, Y0)])
    pred = frame([longer, *others], **{"class": ["road"] * 4, "prob_mean": [0.9] * 4, "prob_max": [0.95] * 4})
    osm = frame([street, *others], **{"class": ["road"] * 4, "osm_type": ["way"] * 4, "osm_id": list(range(1, 5))})
    sim = simulate_line_missing(pred, osm, ROAD, CompareSpec(gap_share=0.25), tiles_of([longer, *others]), Z)
    assert sim.simulated == 4 and sim.cover is not None and sim.lengths is not None
    short = int(np.argmin(sim.lengths))
    assert sim.lengths[short] == pytest.approx(100.0 * sim.lengths.max() / 400.0, rel=0.02)  # ground metres
    assert short not in set(sim.rows.loc[sim.rows["s"] == 1, "change"].tolist())  # 100 of the piece's 400 m
    scores = np.ones(len(sim.rows))
    other = next(k for k in range(4) if k != short)
    scores[sim.rows["change"].to_numpy() == other] = 0.5  # another street's (labelled) pieces score lower
    recall = _length_recall(sim, Calibration(True, sim_scores=scores))
    assert recall is not None and recall[0] == pytest.approx(1.0, abs=0.01)  # every hidden way run along
    lost = sim.lengths[other] / sim.lengths.sum()
    assert recall[-1] == pytest.approx(1.0 - lost, abs=0.01)  # at 0.95 the lower-scored street is lost
    rows = curve(np.array([0.9]), np.empty(0), 4, recall)
    assert rows[0]["est_recall"] == pytest.approx(recall[0], abs=1e-4)


def test_centrelines_clipped_to_the_held_out_tiles_stay_lines() -> None:
    """A centreline that leaves the held-out tile and touches its corner again is clipped to its
    part inside, without the touching point (lines only); one outside the tiles is dropped."""
    from pipeline.review.gapsim import _clipped
    from pipeline.tiles.tilemath import Tile, tile_bounds

    t = mercantile.tile(*to_lonlat(np.array([shapely.Point(X0 + 1, Y0 + 1)], dtype=object))[0].coords[0], Z)
    w, s_, e, n = tile_bounds(Tile(Z, t.x, t.y))
    mx, my = (w + e) / 2, (s_ + n) / 2
    out_and_back = shapely.LineString([(mx, my), (mx, n + 20), (e, n + 20), (e, n), (e + 30, n)])
    far = shapely.LineString([(e + 500, my), (e + 600, my)])
    got = _clipped(frame([out_and_back, far], **{"class": ["road"] * 2, "prob_mean": [0.9, 0.8]}), {(t.x, t.y)}, Z)
    assert len(got) == 1 and got["prob_mean"].tolist() == [0.9]
    g = to_mercator(got.geometry.to_numpy())[0]
    assert g.geom_type == "LineString" and g.length == pytest.approx(n - my, rel=1e-6)


def test_a_share_of_zero_leaves_the_layer_uncalibrated() -> None:
    """Own candidates that all lie below the simulated changes' best: the estimated share of real
    ones is 0, which would score every candidate 0; the layer stays uncalibrated instead, its
    scores the raw evidence (still ranked), and says why."""
    from pipeline.review.calibration import NO_SHARE

    rng = np.random.default_rng(1)
    x = np.r_[rng.uniform(0.5, 1.0, 60), rng.uniform(0.0, 0.45, 40)]
    s = np.r_[np.ones(60, int), np.zeros(40, int)]
    assert real_share(x[s == 1], x[s == 0]) == 0.0
    cal = fit(x, s)
    assert not cal.fitted and cal.note == NO_SHARE and (cal.labelled, cal.unlabelled) == (60, 40)
    assert cal.score(np.array([0.4, 0.1])).tolist() == [0.4, 0.1]
    x[s == 0] = np.r_[rng.uniform(0.0, 0.45, 30), rng.uniform(0.9, 1.0, 10)]  # some look like the simulated
    fitted = fit(x, s)
    assert fitted.fitted and 0.0 < fitted.c < 1.0
