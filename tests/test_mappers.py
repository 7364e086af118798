"""Candidates for mappers from classes without OSM tag filters (vector labels, e.g.
configs/kampala.toml): the JOSM file and the MapRoulette tasks are written, with the usual OSM
tag of the class name or a fixme asking for tags, never the label files' attribute filters."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import geopandas as gpd
import shapely

from pipeline.config import ClassSpec, TagFilter
from pipeline.mappers import PRIORITY_THRESHOLDS, class_tags, maproulette_tasks, osm_xml, priority

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
