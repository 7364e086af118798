"""Pure parts of the comparison: one-to-one matching, statuses and figures, the .osm writer
(polygons with holes as multipolygons), the QGIS project XML and the config section."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.config.region import ClassSpec, ConfigError, TagFilter
from pipeline.review.compare import CompareSpec, compare, match, parse_compare
from pipeline.review.mappers import class_tags, maproulette_tasks, osm_xml
from pipeline.review.qgis import RasterLayer, VectorLayer, project_xml, qml, xyz_source
from pipeline.tiles.geo import to_lonlat, to_mercator

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
PARK = ClassSpec("park", 3, "area", 5, (TagFilter("leisure", ("park", "garden")),))
X0, Y0 = 3_000_000.0, 1_000_000.0  # EPSG:3857 metres, about 27° E, 9° N


def box(x: float, y: float, w: float = 10.0, h: float = 10.0) -> shapely.Polygon:
    return shapely.box(X0 + x, Y0 + y, X0 + x + w, Y0 + y + h)


def frame(geoms: list[shapely.Geometry], **cols: list[object]) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(cols, geometry=list(to_lonlat(np.array(geoms, dtype=object))), crs="EPSG:4326")


def test_match_is_one_to_one_by_best_iou() -> None:
    pred = np.array([box(0, 0), box(1, 0), box(100, 0)], dtype=object)
    osm = np.array([box(0.5, 0), box(300, 0)], dtype=object)
    i, j, v = match(pred, osm, 0.3)
    assert len(i) == 1 and j[0] == 0 and v[0] == pytest.approx(0.9048, abs=1e-3)  # both overlap: one wins
    assert match(pred, osm[:0], 0.3)[0].size == 0


def test_statuses_and_figures() -> None:
    pred = frame([box(0, 0), box(50, 0), box(100, 1.5), box(200, 0)], **{
        "class": ["building"] * 4, "prob_mean": [0.9] * 4, "prob_max": [1.0] * 4, "area_m2": [100.0] * 4})
    osm = frame([box(0, 0), box(100, 0), box(300, 0)], **{
        "class": ["building"] * 3, "osm_type": ["way"] * 3, "osm_id": [1, 2, 3]})
    res = compare(pred, osm, (BUILDING,), CompareSpec(offset_m=0.75))
    counts = res.summary["counts"]
    assert counts == {"matched": 1, "offset": 1, "missing_in_osm": 2, "not_seen": 1, "unknown": 0}
    assert list(res.layers["not_seen"]["osm_id"]) == [3]
    off = res.layers["offset"].iloc[0]
    assert off["osm_id"] == 2 and off["offset_north_m"] == pytest.approx(1.5 / 1.0125, abs=0.02)
    f = res.summary["classes"]["building"]
    assert (f["precision"], f["recall"]) == (0.5, pytest.approx(2 / 3, abs=1e-4))
    assert f["mean_iou"] == pytest.approx((1 + 8.5 / 11.5) / 2, abs=1e-3)


def test_offset_is_a_displacement_not_another_shape() -> None:
    """``offset`` only where moving the OSM outline by the centroid offset fits the prediction
    better (``offset_gain``): a house drawn 2 m off is offset; a prediction that also covers the
    garage beside a house (its centroid 2.5 m away, but the house moved there fits no better)
    is matched. With ``offset_gain = 0`` (the distance alone) both were offset."""
    pred = frame([box(0, 2, 10, 10), box(100, 0, 15, 10)], **{
        "class": ["building"] * 2, "prob_mean": [0.9] * 2, "prob_max": [1.0] * 2, "area_m2": [100.0, 150.0]})
    osm = frame([box(0, 0, 10, 10), box(100, 0, 10, 10)], **{
        "class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [1, 2]})
    res = compare(pred, osm, (BUILDING,), CompareSpec(explain_m=0.0, missing_min_m2=1000.0))
    off, matched = res.layers["offset"], res.layers["matched"]
    assert off["osm_id"].tolist() == [1] and matched["osm_id"].tolist() == [2]
    assert off["iou_shifted"].iloc[0] == pytest.approx(1.0, abs=1e-3) and off["iou"].iloc[0] < 0.7
    assert matched["iou_shifted"].iloc[0] <= matched["iou"].iloc[0] + 0.05
    assert res.summary["classes"]["building"]["offset"] == 1
    plain = compare(pred, osm, (BUILDING,), CompareSpec(explain_m=0.0, missing_min_m2=1000.0, offset_gain=0.0))
    assert sorted(plain.layers["offset"]["osm_id"].tolist()) == [1, 2]


def test_a_block_of_touching_buildings_is_covered_and_its_unmapped_part_missing() -> None:
    # a terrace of four 8 x 10 m houses (scale 1.0125 m per ground m here): OSM maps three, the
    # model outlines the whole row as one block; a lone shed stands apart and is unmapped
    houses = [box(8 * k, 0, 8, 10) for k in range(4)]
    block = shapely.union_all(houses)
    pred = frame([block, box(100, 0, 4, 4)], **{
        "class": ["building"] * 2, "prob_mean": [0.9, 0.8], "prob_max": [1.0, 1.0], "area_m2": [320.0, 16.0]})
    osm = frame([*houses[:3], box(300, 0)], **{
        "class": ["building"] * 4, "osm_type": ["way"] * 4, "osm_id": [1, 2, 3, 9]})
    res = compare(pred, osm, (BUILDING,), CompareSpec())
    matched = res.layers["matched"]
    assert sorted(matched["osm_id"]) == [1, 2, 3]  # every mapped house is seen, none "not seen"
    assert set(matched["match"]) == {"covered"} and (matched["coverage"] == 1.0).all()
    assert list(res.layers["not_seen"]["osm_id"]) == [9] and res.layers["not_seen"]["coverage"].iloc[0] == 0
    miss = res.layers["missing_in_osm"]
    # the unmapped fourth house (not the block) and the shed are the candidates
    assert len(miss) == 2
    assert sorted(miss["source_area_m2"]) == pytest.approx([16 / 1.0125**2, 320 / 1.0125**2], rel=0.01)
    parts = to_mercator(miss.geometry.to_numpy())
    fourth = next(g for g in parts if g.intersects(houses[3]))
    assert shapely.area(shapely.intersection(fourth, houses[3])) / shapely.area(houses[3]) > 0.85
    assert not fourth.intersects(houses[1])
    f = res.summary["classes"]["building"]
    assert (f["covered"], f["not_seen"], f["missing_in_osm"], f["seen_share"]) == (3, 1, 2, 0.75)
    assert f["tp_at_score_iou"] == 0  # one-to-one figures stay as figures: the block matches no house


def test_slivers_along_misaligned_outlines_are_no_candidates() -> None:
    # predictions 0.8 m wider than OSM on one side (a misaligned outline): no candidate
    pred = frame([box(0, 0, 10.8, 10)], **{"class": ["building"], "prob_mean": [0.9], "prob_max": [1.0],
                                           "area_m2": [108.0]})
    osm = frame([box(0, 0, 10, 10)], **{"class": ["building"], "osm_type": ["way"], "osm_id": [1]})
    assert compare(pred, osm, (BUILDING,), CompareSpec(max_offset_m=0)).summary["counts"]["missing_in_osm"] == 0
    # ... but a 3 m wide annex is one
    pred = frame([box(0, 0, 13, 10)], **{"class": ["building"], "prob_mean": [0.9], "prob_max": [1.0],
                                         "area_m2": [130.0]})
    res = compare(pred, osm, (BUILDING,), CompareSpec(max_offset_m=0))
    assert res.summary["counts"]["missing_in_osm"] == 1
    assert res.layers["missing_in_osm"]["area_m2"].iloc[0] == pytest.approx(2.5 * 10 / 1.0125**2, rel=0.1)


def test_osm_xml_new_objects_with_holes() -> None:
    ring = box(0, 0, 30, 30).difference(box(10, 10))
    missing = frame([box(100, 0), ring], **{"class": ["building", "park"], "prob_mean": [0.8, 0.7]})
    root = ET.fromstring(osm_xml(missing, (BUILDING, PARK)))
    assert root.get("upload") == "never" and root.get("version") == "0.6"
    ids = [int(e.get("id")) for e in root]  # type: ignore[arg-type]
    assert all(i < 0 for i in ids) and len(set(ids)) == len(ids)
    rel = root.find("relation")
    assert rel is not None
    tags = {t.get("k"): t.get("v") for t in rel.findall("tag")}
    assert tags["type"] == "multipolygon" and tags["leisure"] == "park" and tags["source"] == "osmsat"
    assert sorted(m.get("role") for m in rel.findall("member")) == ["inner", "outer"]
    assert class_tags(BUILDING) == {"building": "yes"}
    assert maproulette_tasks(missing, "r").count(b"\n") == 2


def test_qgis_project_xml() -> None:
    layers = [VectorLayer("missing in OSM", "./compare/missing_in_osm.geojson", "Polygon", "#e31a1c"),
              VectorLayer("roads", "./predictions.gpkg|layername=road", "Line", "#1f78b4", group="predictions")]
    src = xyz_source("./images", "png", 19, 19)
    assert src.startswith("type=xyz&url=file:./images/%7Bz%7D/%7Bx%7D/%7By%7D.png")
    imagery = [RasterLayer("imagery", src, "wms")]
    root = ET.fromstring(project_xml("r", layers, imagery, (0.0, 0.0, 10.0, 10.0)).split(b"\n", 1)[1])
    maps = root.findall("projectlayers/maplayer")
    assert [m.findtext("layername") for m in maps] == ["missing in OSM", "roads", "imagery"]
    assert maps[2].findtext("provider") == "wms" and maps[0].findtext("provider") == "ogr"
    assert root.findtext("projectCrs/spatialrefsys/authid") == "EPSG:3857"
    fill = maps[0].find("renderer-v2/symbols/symbol/layer")
    assert fill is not None and fill.get("class") == "SimpleFill"
    assert ET.fromstring(qml(layers[1]).split(b"\n", 1)[1]).find("renderer-v2/symbols/symbol").get("type") == "line"  # type: ignore[union-attr]


def test_compare_section(tmp_path: Path) -> None:
    assert parse_compare(tmp_path / "c.toml", {}) == CompareSpec()
    assert parse_compare(tmp_path / "c.toml", {"match_iou": 0.5, "classes": ["building"]}).classes == ("building",)
    with pytest.raises(ConfigError, match="match_iou"):
        parse_compare(tmp_path / "c.toml", {"match_iou": 2})


def test_small_shifted_building_is_offset_not_missing() -> None:
    # a 2.5 m shed shifted 1.5 m: IoU 0.25 < match_iou, found by the second pass
    pred = frame([box(0, 1.5, 2.5, 2.5), box(20, 0, 2.5, 2.5)], **{
        "class": ["building"] * 2, "prob_mean": [0.9] * 2, "prob_max": [1.0] * 2, "area_m2": [6.0] * 2})
    osm = frame([box(0, 0, 2.5, 2.5), box(30, 0, 2.5, 2.5)], **{
        "class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [7, 8]})
    res = compare(pred, osm, (BUILDING,), CompareSpec(missing_min_m2=4.0))
    assert res.summary["counts"] == {"matched": 0, "offset": 1, "missing_in_osm": 1, "not_seen": 1, "unknown": 0}
    # the moved partner explains the shifted shed whole; the lone one is the candidate, whole
    assert res.layers["missing_in_osm"]["area_m2"].tolist() == [pytest.approx(6.25, rel=0.05)]
    # below missing_min_m2 it is no candidate
    assert compare(pred, osm, (BUILDING,), CompareSpec(missing_min_m2=7.0)).summary["counts"]["missing_in_osm"] == 0
    assert res.layers["offset"]["osm_id"].tolist() == [7]
    assert res.layers["offset"]["iou"].iloc[0] < 0.3
    off = compare(pred, osm, (BUILDING,), CompareSpec(max_offset_m=0.0, missing_min_m2=4.0, explain_m=0.0))
    # the second pass can be switched off: without a tolerance the shed is then not seen (40 %
    # covered), and what of it OSM does not explain is a 1.5 m sliver, no candidate
    counts = off.summary["counts"]
    assert counts["offset"] == 0 and counts["not_seen"] == 2 and counts["missing_in_osm"] == 1
    # counting its parts within explain_m (0.5 m) of the prediction, 60 % of it is covered: seen
    near = compare(pred, osm, (BUILDING,), CompareSpec(max_offset_m=0.0, missing_min_m2=4.0)).summary["counts"]
    assert near["offset"] == 0 and near["not_seen"] == 1 and near["matched"] == 1


def test_coverage_counts_what_lies_within_the_tolerance_once() -> None:
    from pipeline.review.coverage import coverage, ground_scale

    osm = np.array([box(0, 0), box(100, 0)], dtype=object)
    s = ground_scale(osm)
    # a prediction 0.4 ground metres short of the outline on one side; nothing on the other feature
    pred = np.array([box(0.4 * s, 0)], dtype=object)
    exact = coverage(osm, pred)
    assert exact[0] == pytest.approx(1 - 0.4 * s / 10, rel=1e-6) and exact[1] == 0.0
    assert coverage(osm, pred, 0.5)[0] == pytest.approx(1.0)
    # two predictions over the lower half whose grown outlines overlap: the overlap counts once
    halves = np.array([box(0, 0, 4.9, 5), box(5.1, 0, 4.9, 5)], dtype=object)
    assert coverage(osm[:1], halves)[0] == pytest.approx(0.49, rel=1e-6)
    assert coverage(osm[:1], halves, 0.5)[0] == pytest.approx(10 * (5 + 0.5 * s) / 100, rel=1e-6)


def test_no_prediction_at_all_leaves_every_osm_feature_not_seen() -> None:
    import geopandas as gpd

    osm = frame([box(0, 0), box(30, 0)], **{"class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [1, 2]})
    res = compare(gpd.GeoDataFrame(geometry=[], crs="EPSG:4326"), osm, (BUILDING,), CompareSpec())
    assert res.summary["counts"] == {"missing_in_osm": 0, "not_seen": 2, "unknown": 0, "matched": 0, "offset": 0}


def test_candidates_have_stable_ids_and_come_most_probable_first() -> None:
    pred = frame([box(0, 0), box(50, 0), box(100, 0)], **{
        "class": ["building"] * 3, "prob_mean": [0.6, 0.9, 0.7], "prob_max": [1.0] * 3, "area_m2": [100.0] * 3})
    osm = frame([box(300, 0)], **{"class": ["building"], "osm_type": ["way"], "osm_id": [1]})
    first = compare(pred, osm, (BUILDING,), CompareSpec()).layers["missing_in_osm"]
    assert list(first["prob_mean"]) == [0.9, 0.7, 0.6]
    again = compare(pred.iloc[::-1].reset_index(drop=True), osm, (BUILDING,), CompareSpec()).layers["missing_in_osm"]
    assert list(again["id"]) == list(first["id"]) and len(set(first["id"])) == 3
    assert all(i.startswith("building-") for i in first["id"])


def test_an_overlay_geos_cannot_do_exactly_is_redone_snapped_element_by_element() -> None:
    """A TopologyException in one element of a vectorised overlay (as the 25 km² town raised)
    costs that element a snap-rounded retry on valid inputs, not the whole comparison."""
    import shapely

    from pipeline.review.coverage import overlay

    a = np.array([shapely.box(0, 0, 2, 2), shapely.box(10, 10, 12, 12)], dtype=object)
    b = np.array([shapely.box(1, 1, 3, 3), shapely.box(11, 11, 13, 13)], dtype=object)
    calls: list[object] = []

    def flaky(x: object, y: object, grid_size: float | None = None) -> object:
        calls.append(grid_size)
        if isinstance(x, np.ndarray) or (grid_size is None and x is a[1]):
            raise shapely.errors.GEOSException("TopologyException: side location conflict")
        return shapely.intersection(x, y, grid_size=grid_size)

    out = overlay(flaky, a, b, 0.5)
    assert [round(shapely.area(g), 6) for g in out] == [1.0, 1.0]
    assert calls == [None, None, None, 0.5]  # the array, element 0, element 1, element 1 snapped
    # the retry keeps only the area of an input make_valid turns into polygons and lines
    bow = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)])  # a self-crossing ring
    spiked = shapely.Polygon([(0, 0), (2, 0), (2, 2), (3, 3), (2, 2), (0, 2)])  # a zero-width spike

    def exact_fails(x: object, y: object, grid_size: float | None = None) -> object:
        if grid_size is None:
            raise shapely.errors.GEOSException("TopologyException")
        return shapely.intersection(x, y, grid_size=grid_size)

    for bad in (bow, spiked):
        got = overlay(exact_fails, bad, a[0], 0.01)
        assert shapely.get_type_id(got) in (3, 6) and shapely.area(got) > 0


def test_low_confidence_predictions_cover_osm_but_are_no_candidates() -> None:
    """A polygon dropped for low confidence (pipeline.vectors.confidence) still shows the model saw
    the mapped building under it; over unmapped ground it is no missing_in_osm candidate."""
    pred = frame([box(0, 0)], **{"class": ["building"], "prob_mean": [0.9], "prob_max": [1.0], "area_m2": [100.0]})
    low = frame([box(100, 0), box(200, 0)], **{"class": ["building"] * 2, "prob_mean": [0.55] * 2,
                                                "prob_max": [0.6] * 2, "area_m2": [100.0] * 2})
    osm = frame([box(0, 0), box(100, 0)], **{"class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [1, 2]})
    without = compare(pred, osm, (BUILDING,), CompareSpec()).summary["counts"]
    assert without["not_seen"] == 1 and without["missing_in_osm"] == 0
    res = compare(pred, osm, (BUILDING,), CompareSpec(), low=low)
    assert res.summary["counts"]["not_seen"] == 0 and res.summary["classes"]["building"]["covered"] == 1
    assert res.summary["counts"]["missing_in_osm"] == 0  # the low polygon at x = 200 is no candidate
    assert res.low is low


def test_an_offset_low_confidence_outline_still_shows_the_building() -> None:
    """Less than half covered, but the one-to-one partner of a low-confidence polygon: seen."""
    pred = frame([box(0, 0)], **{"class": ["building"], "prob_mean": [0.9], "prob_max": [1.0], "area_m2": [100.0]})
    low = frame([box(105.25, 0)], **{"class": ["building"], "prob_mean": [0.55], "prob_max": [0.6], "area_m2": [100.0]})
    osm = frame([box(0, 0), box(100, 0)], **{"class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [1, 2]})
    spec = CompareSpec()
    assert compare(pred, osm, (BUILDING,), spec).summary["counts"]["not_seen"] == 1
    res = compare(pred, osm, (BUILDING,), spec, low=low)
    assert res.summary["counts"]["not_seen"] == 0 and res.summary["classes"]["building"]["covered"] == 1


def test_a_building_reaching_in_from_beyond_the_tiles_explains_its_part_and_gets_no_status() -> None:
    """A mapped building across the edge of the compared tiles (its representative point on a tile
    without imagery): the predicted part inside is no candidate when the building comes as context,
    and the building itself is neither seen nor not seen; left out altogether, the part is a
    (false) missing candidate."""
    from pipeline.review.compare import in_and_touching
    from pipeline.tiles.tilemath import tile_extent_m

    z = 19
    e = tile_extent_m(z)
    tx, ty = int((X0 + 20037508.342789244) // e), int((20037508.342789244 - Y0) // e)
    left = tx * e - 20037508.342789244  # west edge of tile (tx, ty), EPSG:3857
    top = 20037508.342789244 - ty * e
    edge = shapely.box(left - 14.0, top - 20.0, left + 6.0, top - 10.0)  # 70 % of it west of the tile
    inner = shapely.box(left + 20.0, top - 30.0, left + 30.0, top - 20.0)
    osm = frame([edge, inner], **{"class": ["building"] * 2, "osm_type": ["way"] * 2, "osm_id": [1, 2]})
    pred = frame([shapely.intersection(edge, shapely.box(left, top - e, left + e, top)), inner], **{
        "class": ["building"] * 2, "prob_mean": [0.9] * 2, "prob_max": [1.0] * 2, "area_m2": [60.0, 100.0]})
    compared, context = in_and_touching(osm, {(tx, ty)}, z)
    assert list(compared["osm_id"]) == [2] and list(context["osm_id"]) == [1]
    spec = CompareSpec(missing_min_m2=4.0)
    res = compare(pred, compared, (BUILDING,), spec, context=context)
    assert res.summary["counts"]["missing_in_osm"] == 0
    assert set(res.layers["matched"]["osm_id"]) == {2} and len(res.layers["not_seen"]) == 0
    assert compare(pred, compared, (BUILDING,), spec).summary["counts"]["missing_in_osm"] == 1


def test_line_lengths_within_the_zones_equal_those_within_their_union() -> None:
    from pipeline.review.figures import _length_within, line_figures

    rng = np.random.default_rng(5)
    starts = rng.uniform(0, 500, size=(60, 2))
    ends = starts + rng.uniform(-80, 80, size=(60, 2))
    lines = np.array([shapely.LineString([(X0 + a, Y0 + b), (X0 + c, Y0 + d), (X0 + c + 5, Y0 + d + 30)])
                      for (a, b), (c, d) in zip(starts, ends)], dtype=object)
    zones = shapely.buffer(lines[::3], 6.0, cap_style="flat")
    whole = float(shapely.length(shapely.intersection(lines, shapely.union_all(zones))).sum())
    assert 0 < whole < float(shapely.length(lines).sum())
    assert _length_within(lines, zones) == pytest.approx(whole, rel=1e-9)
    assert _length_within(lines, zones[:0]) == 0.0
    f = line_figures(to_lonlat(lines[::3]), to_lonlat(lines), 6.0)  # OSM has every line, predictions a third
    assert f["correctness"] == pytest.approx(1.0, abs=1e-3) and 0.3 < f["completeness"] < 1.0


def test_placebos_land_on_empty_ground_and_apart() -> None:
    from pipeline.review.gapsim import placebos
    from pipeline.tiles.tilemath import cover_mercator

    om = np.array([box(x, y, 8, 8) for x in range(0, 400, 40) for y in range(0, 400, 40)], dtype=object)
    z = 17
    held = {(int(x), int(y)) for x, y in cover_mercator(np.array([box(-100, -100, 600, 600)], dtype=object), z)}
    moved = placebos(om, 0.5, 3, held, z)
    assert len(moved) > 10  # most find room
    hits = shapely.STRtree(moved).query(moved, predicate="intersects")
    assert (hits[0] == hits[1]).all()  # no two placebos meet
    assert not len(shapely.STRtree(shapely.buffer(om, 1.9)).query(moved, predicate="intersects")[0])
    assert [g.wkb for g in placebos(om, 0.5, 3, held, z)] == [g.wkb for g in moved]  # seeded
