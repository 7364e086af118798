"""Candidates for mappers from classes without OSM tag filters (vector labels, e.g.
configs/kampala.toml): the JOSM file and the MapRoulette tasks are written, with the usual OSM
tag of the class name or a fixme asking for tags, never the label files' attribute filters."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import geopandas as gpd
import shapely

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.review.mappers import (
    PRIORITY_THRESHOLDS,
    candidate_tags,
    class_tags,
    maproulette_tasks,
    osm_xml,
    priority,
)

# classes as configs/kampala.toml writes them: no tags, the class takes every labelled feature
BUILDING = ClassSpec("building", 1, "area", 10, ())
SOLAR = ClassSpec("solar_panel", 2, "area", 5, ())
# a vector-label class filtered on the label files' own attribute (not an OSM tag)
HOUSE = ClassSpec("building", 1, "area", 10, (TagFilter.parse("kind=house|shed", "t"),))


def _missing() -> gpd.GeoDataFrame:
    square = shapely.box(32.58, 0.31, 32.5801, 0.3101)
    courtyard = shapely.box(32.59, 0.31, 32.5903, 0.3103).difference(shapely.box(32.5901, 0.3101, 32.5902, 0.3102))
    return gpd.GeoDataFrame({"class": ["building", "solar_panel", "building"], "prob_mean": [0.9, float("nan"), 0.7]},
                            geometry=[square, shapely.box(32.60, 0.31, 32.6001, 0.3101), courtyard], crs="EPSG:4326")


def _tags(el: ET.Element) -> dict[str, str]:
    return {str(t.get("k")): str(t.get("v")) for t in el.findall("tag")}


def test_class_tags_without_tag_filters() -> None:
    assert class_tags(BUILDING) == {"building": "yes"}
    assert class_tags(SOLAR) == {}
    assert class_tags(HOUSE) == {"kind": "house"}  # OSM labels: the filter is an OSM tag
    assert class_tags(HOUSE, osm_labels=False) == {"building": "yes"}  # vector labels: it is an attribute


def test_osm_xml_for_classes_without_tags() -> None:
    root = ET.fromstring(osm_xml(_missing(), (BUILDING, SOLAR)))
    assert root.get("upload") == "never"
    ways = [w for w in root.findall("way") if _tags(w)]
    assert [_tags(w) for w in ways] == [
        {"building": "yes", "source": "osmsat", "fixme": "osmsat candidate (building, p=0.90): check against imagery"},
        {"source": "osmsat", "fixme": "osmsat candidate (solar_panel): check against imagery and tag it as a "
                                      "solar_panel"}]
    rel = root.find("relation")
    assert rel is not None and _tags(rel)["type"] == "multipolygon" and _tags(rel)["building"] == "yes"


def test_osm_xml_from_vector_attribute_filters() -> None:
    root = ET.fromstring(osm_xml(_missing().iloc[:1], (HOUSE,), osm_labels=False))
    assert _tags(root.findall("way")[0])["building"] == "yes" and "kind" not in _tags(root.findall("way")[0])


def test_maproulette_tasks_for_classes_without_tags() -> None:
    lines = maproulette_tasks(_missing(), "kampala").decode().rstrip("\n").split("\n")  # (splitlines splits at RS)
    assert all(line.startswith("\x1e") for line in lines)
    tasks = [json.loads(line[1:], parse_constant=_no_nan)["features"][0] for line in lines]
    # highest priority first: p 0.9 high, p 0.7 medium, no probability low
    assert [t["id"] for t in tasks] == ["osmsat-kampala-building-1", "osmsat-kampala-building-3",
                                        "osmsat-kampala-solar_panel-2"]
    assert [t["properties"]["priority"] for t in tasks] == ["high", "medium", "low"]
    assert "solar_panel" in tasks[2]["properties"]["instruction"]
    assert "prob_mean" not in tasks[2]["properties"] and tasks[0]["properties"]["prob_mean"] == 0.9


def test_maproulette_priority_from_the_score() -> None:
    assert [priority(p) for p in (0.99, 0.85, 0.849, 0.70, 0.69, 0.1, None, float("nan"))] == [
        "high", "high", "medium", "medium", "low", "low", "low", "low"]
    assert [t for _, t in PRIORITY_THRESHOLDS] == sorted((t for _, t in PRIORITY_THRESHOLDS), reverse=True)
    square = [shapely.box(32.58 + k / 1000, 0.31, 32.5801 + k / 1000, 0.3101) for k in range(4)]
    missing = gpd.GeoDataFrame({"id": ["b-a", "b-b", "b-c", "b-d"], "class": ["building"] * 4,
                                "prob_mean": [0.6, 0.95, 0.75, 0.9]}, geometry=square, crs="EPSG:4326")
    lines = maproulette_tasks(missing, "r").decode().rstrip("\n").split("\n")
    props = [json.loads(line[1:])["features"][0]["properties"] for line in lines]
    assert [(p["id"], p["priority"]) for p in props] == [
        ("osmsat-r-b-b", "high"), ("osmsat-r-b-d", "high"), ("osmsat-r-b-c", "medium"), ("osmsat-r-b-a", "low")]


def _no_nan(word: str) -> None:
    raise AssertionError(f"{word} is no JSON")


ROAD = ClassSpec("road", 2, "line", 10, (TagFilter.parse("highway=primary|secondary|residential|service", "t"),),
                 buffer_m=4.0)
ROAD_NO_TAGS = ClassSpec("road", 2, "line", 10, ())
RAIL = ClassSpec("rail", 3, "line", 5, (TagFilter.parse("railway=rail|tram", "t"),))


def _roads() -> gpd.GeoDataFrame:
    """Two road candidates and a building, with scores (one NaN) that rank them otherwise than
    their probabilities; the user's class name needs escaping in XML."""
    bent = shapely.LineString([(32.58, 0.31), (32.581, 0.31), (32.581, 0.311)])
    split = shapely.MultiLineString([[(32.59, 0.31), (32.5905, 0.31)], [(32.591, 0.31), (32.592, 0.31)]])
    return gpd.GeoDataFrame({"id": ["road-a", "road-b", "building-c"], "class": ["road", "road", "building"],
                             "prob_mean": [0.95, 0.6, 0.9], "score": [0.4, 0.876, float("nan")],
                             "length_m": [222.61, 166.96, float("nan")], "area_m2": [float("nan")] * 2 + [123.0]},
                            geometry=[bent, split, shapely.box(32.60, 0.31, 32.6001, 0.3101)], crs="EPSG:4326")


def test_line_classes_get_highway_road() -> None:
    assert class_tags(ROAD) == {"highway": "road"}  # not highway=primary: the mapper picks the class
    assert class_tags(ROAD_NO_TAGS) == {"highway": "road"}  # by its name
    assert class_tags(RAIL) == {"railway": "rail"}  # other line classes keep their first filter
    assert candidate_tags(ROAD, 0.8, score=0.456) == {
        "highway": "road", "source": "osmsat", "fixme": "osmsat candidate (road, p=0.80): check against imagery and "
                                                         "set its highway class", "osmsat:score": "0.46"}


def test_osm_xml_writes_roads_as_open_ways_best_score_first() -> None:
    root = ET.fromstring(osm_xml(_roads(), (ROAD, BUILDING)))
    nodes = {int(str(n.get("id"))): (float(str(n.get("lon"))), float(str(n.get("lat")))) for n in root.findall("node")}
    ways = root.findall("way")
    # score order: road-b (0.88: two parts, two ways), road-a (0.40), then the building (NaN score: last)
    assert [_tags(w).get("osmsat:score") for w in ways] == [
        "0.88", "0.88", "0.40", None]
    assert [_tags(w).get("highway") for w in ways] == ["road", "road", "road", None]
    assert _tags(ways[2])["fixme"] == "osmsat candidate (road, p=0.95): check against imagery and set its highway class"
    refs = [[int(str(nd.get("ref"))) for nd in w.findall("nd")] for w in ways]
    assert [len(r) for r in refs] == [2, 2, 3, 5]
    assert refs[2][0] != refs[2][-1] and refs[3][0] == refs[3][-1]  # roads are open ways, the building a ring
    assert [nodes[r] for r in refs[2]] == [(32.58, 0.31), (32.581, 0.31), (32.581, 0.311)]
    assert _tags(ways[3])["building"] == "yes"
    # without a score column: the probability ranks them, and no score tag is written
    root = ET.fromstring(osm_xml(_roads().drop(columns=["score"]), (ROAD, BUILDING)))
    assert [_tags(w).get("fixme", "")[:28] for w in root.findall("way")] == [
        "osmsat candidate (road, p=0.", "osmsat candidate (building, ", "osmsat candidate (road, p=0.",
        "osmsat candidate (road, p=0."]
    assert not any("osmsat:score" in _tags(w) for w in root.findall("way"))


def test_osm_xml_escapes_user_class_names() -> None:
    odd = ClassSpec('a "b" <c> & d', 4, "line", 1, ())
    layer = _roads().iloc[:1].assign(**{"class": [odd.name]})
    root = ET.fromstring(osm_xml(layer, (odd,)))
    assert _tags(root.findall("way")[0])["fixme"].startswith('osmsat candidate (a "b" <c> & d, p=0.95)')


def test_maproulette_tasks_for_roads_by_score() -> None:
    lines = maproulette_tasks(_roads(), "demo").decode().rstrip("\n").split("\n")
    props = [json.loads(line[1:], parse_constant=_no_nan)["features"][0]["properties"] for line in lines]
    feats = [json.loads(line[1:])["features"][0] for line in lines]
    # priority from the score: 0.876 high, 0.4 low, NaN low (after it: no value)
    assert [(p["id"], p["priority"]) for p in props] == [
        ("osmsat-demo-road-b", "high"), ("osmsat-demo-road-a", "low"), ("osmsat-demo-building-c", "low")]
    assert props[0]["score"] == 0.876 and props[0]["length_m"] == 166.96 and "area_m2" not in props[0]
    assert "score" not in props[2] and props[2]["area_m2"] == 123.0 and "length_m" not in props[2]
    assert "road" in props[0]["instruction"] and "highway class" in props[0]["instruction"]
    assert "highway" not in props[2]["instruction"]
    assert [f["geometry"]["type"] for f in feats] == ["MultiLineString", "LineString", "Polygon"]
    on_line = shapely.Point(props[1]["lon"], props[1]["lat"])
    assert shapely.distance(on_line, shapely.geometry.shape(feats[1]["geometry"])) < 1e-7  # a point on the road
    # without scores: prob_mean orders them and sets the priority
    lines = maproulette_tasks(_roads().drop(columns=["score"]), "demo").decode().rstrip("\n").split("\n")
    props = [json.loads(line[1:])["features"][0]["properties"] for line in lines]
    assert [(p["id"], p["priority"]) for p in props] == [
        ("osmsat-demo-road-a", "high"), ("osmsat-demo-building-c", "high"), ("osmsat-demo-road-b", "low")]
