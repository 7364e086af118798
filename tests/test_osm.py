"""pipeline.labels.osm: feature extraction from generated PBFs and from real Helsinki data."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.labels.features import FEATURE_COLUMNS
from pipeline.labels.osm import ExtractStats, extract_features, extract_features_with_stats
from tests.pbf_fixtures import PbfBuilder, Sample, helsinki_like_classes, rect, write_grid, write_sample

HELSINKI = Path(__file__).parents[1] / ".." / "shared" / "data" / "osm" / "helsinki.osm.pbf"
CLASSES = helsinki_like_classes()
BUILDING = tuple(c for c in CLASSES if c.name == "building")
Extracted = tuple[gpd.GeoDataFrame, ExtractStats]


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Sample:
    return write_sample(tmp_path_factory.mktemp("osm") / "sample.osm.pbf")


@pytest.fixture(scope="module")
def extracted(sample: Sample) -> Extracted:
    return extract_features_with_stats(sample.path, CLASSES)


def rows(gdf: gpd.GeoDataFrame, name: str, ids: dict[str, int], osm_type: str = "way") -> gpd.GeoDataFrame:
    """The rows of the fixture object called ``name``."""
    return gdf[(gdf.osm_type == osm_type) & (gdf.osm_id == ids[name])]


def test_columns_types_order_and_crs(extracted: Extracted) -> None:
    gdf, _ = extracted
    assert list(gdf.columns) == [*FEATURE_COLUMNS, "geometry"]
    assert gdf.crs.to_epsg() == 4326
    assert gdf.osm_id.dtype == np.int64 and gdf.class_id.dtype == np.uint8 and gdf.buffer_m.dtype == np.float64
    assert set(gdf.osm_type) <= {"way", "relation", "node"}
    keys = list(zip(gdf.class_id, gdf.osm_type, gdf.osm_id))
    assert keys == sorted(keys)
    assert gdf.index.tolist() == list(range(len(gdf)))
    assert all(isinstance(json.loads(t), dict) for t in gdf.tags)


def test_closed_way_building(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    r = rows(gdf, "building", sample.ids)
    assert len(r) == 1 and r["class"].iloc[0] == "building" and r.class_id.iloc[0] == 1
    g = r.geometry.iloc[0]
    assert g.geom_type == "Polygon" and g.is_valid
    assert json.loads(r.tags.iloc[0]) == {"building": "yes"}  # only keys the class reads
    assert r.buffer_m.iloc[0] == 0.0
    lon, lat = g.centroid.x, g.centroid.y
    assert 24.940 < lon < 24.9403 and 60.170 < lat < 60.1701  # 10 m east, 7.5 m north of the origin


def test_multipolygon_courtyard_has_a_hole(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    r = rows(gdf, "courtyard", sample.ids, "relation")
    assert len(r) == 1 and r["class"].iloc[0] == "building"
    g = r.geometry.iloc[0]
    assert g.geom_type == "Polygon" and len(g.interiors) == 1 and g.is_valid
    assert shapely.Polygon(g.exterior).area == pytest.approx(16 * g.area / 15, rel=0.01)  # 1600 - 100 m²
    assert json.loads(r.tags.iloc[0]) == {"building": "apartments"}
    # its member ways carry no tags: no rows of their own
    assert len(gdf[gdf.osm_type == "way"]) == len(gdf[gdf.osm_type == "way"].drop_duplicates(["osm_id", "class"]))


def test_riverbank_of_two_outer_rings(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    r = rows(gdf, "riverbank", sample.ids, "relation")
    assert r["class"].tolist() == ["water"] and r.class_id.tolist() == [3]
    g = r.geometry.iloc[0]
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2 and g.is_valid


def test_tag_filters_and_exclusions(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    for name in ("building_no", "tunnel", "pedestrian_area", "untagged", "area_no"):
        assert rows(gdf, name, sample.ids).empty, name
    # a closed highway is still a line
    r = rows(gdf, "roundabout", sample.ids)
    assert r["class"].tolist() == ["road"] and r.geometry.iloc[0].geom_type == "LineString"
    assert r.geometry.iloc[0].is_closed


def test_line_buffers_by_value(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    for name, buffer_m in (("motorway", 10.0), ("residential", 4.0), ("living_street", 3.0)):
        r = rows(gdf, name, sample.ids)
        assert r["class"].tolist() == ["road"], name
        assert r.buffer_m.tolist() == [buffer_m], name
        assert r.geometry.iloc[0].geom_type == "LineString"
    assert len(rows(gdf, "motorway", sample.ids).geometry.iloc[0].coords) == 3
    assert json.loads(rows(gdf, "motorway", sample.ids).tags.iloc[0]) == {"highway": "motorway"}


def test_one_feature_in_two_classes(extracted: Extracted, sample: Sample) -> None:
    gdf, _ = extracted
    r = rows(gdf, "park_building", sample.ids)
    assert r["class"].tolist() == ["building", "park"]
    assert json.loads(r.tags.iloc[0]) == {"building": "yes"}
    assert json.loads(r.tags.iloc[1]) == {"leisure": "park"}
    assert r.geometry.iloc[0].equals(r.geometry.iloc[1])


def test_missing_nodes_and_members_are_skipped_and_counted(extracted: Extracted, sample: Sample) -> None:
    gdf, stats = extracted
    for name in ("missing_node_road", "missing_node_building"):
        assert rows(gdf, name, sample.ids).empty
    assert rows(gdf, "missing_member", sample.ids, "relation").empty
    assert stats.skipped_missing_nodes == 2
    assert stats.skipped_relations == 1


def test_broken_geometries_repaired_or_dropped_and_counted(extracted: Extracted, sample: Sample) -> None:
    gdf, stats = extracted
    r = rows(gdf, "bowtie", sample.ids)
    assert len(r) == 1
    g = r.geometry.iloc[0]
    assert g.is_valid and g.geom_type in ("Polygon", "MultiPolygon") and g.area > 0
    assert stats.repaired == 1
    assert rows(gdf, "degenerate", sample.ids).empty and stats.degenerate == 1
    assert rows(gdf, "two_point_ring", sample.ids).empty and stats.dropped_invalid == 1
    areas = gdf[gdf["class"].isin(["building", "water", "park"])].geometry
    assert areas.is_valid.all() and (~areas.is_empty).all()
    assert set(areas.geom_type) <= {"Polygon", "MultiPolygon"}


def test_stats_count_rows_per_class(extracted: Extracted) -> None:
    gdf, stats = extracted
    assert stats.rows_per_class == gdf["class"].value_counts().to_dict() | {
        c.name: 0 for c in CLASSES if c.name not in set(gdf["class"])}
    assert stats.relations_pass == "full"
    assert json.dumps(stats.as_dict())


def test_sorted_and_unsorted_headers_give_the_same_rows(tmp_path: Path) -> None:
    fast = write_grid(tmp_path / "sorted.osm.pbf", 40, sorted_header=True)
    slow = write_grid(tmp_path / "plain.osm.pbf", 40, sorted_header=False)
    a, sa = extract_features_with_stats(fast, CLASSES)
    b, sb = extract_features_with_stats(slow, CLASSES)
    assert (sa.relations_pass, sb.relations_pass) == ("full", "full")
    assert len(a) == 1600 + 40 and (a.osm_type == "relation").sum() == 534
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry"))
    assert shapely.equals_exact(a.geometry.values, b.geometry.values, tolerance=0).all()
    assert (shapely.get_num_interior_rings(a[a.osm_type == "relation"].geometry.values) == 1).all()


def test_deterministic(sample: Sample, extracted: Extracted) -> None:
    again = extract_features(sample.path, CLASSES)
    assert again.to_wkb().equals(extracted[0].to_wkb())


def test_node_index_on_disk(sample: Sample, extracted: Extracted, tmp_path: Path) -> None:
    idx = tmp_path / "idx" / "nodes.idx"
    gdf = extract_features(sample.path, CLASSES, node_index=f"sparse_file_array,{idx}")
    assert gdf.to_wkb().equals(extracted[0].to_wkb())
    assert not idx.exists()  # scratch file removed


def test_bad_node_index(sample: Sample) -> None:
    with pytest.raises(ConfigError, match=r"node_index.*no_such_map"):
        extract_features(sample.path, CLASSES, node_index="no_such_map")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nowhere\.osm\.pbf.*osm\.path"):
        extract_features(tmp_path / "nowhere.osm.pbf", CLASSES)


@pytest.mark.parametrize("damage", ["truncated", "random", "empty", "tail_cut"])
def test_corrupt_file(sample: Sample, tmp_path: Path, damage: str) -> None:
    raw = sample.path.read_bytes()
    bad = tmp_path / f"{damage}.osm.pbf"
    data = {
        "truncated": raw[: len(raw) // 2],
        "random": random.Random(3).randbytes(4000),
        "empty": b"",
        "tail_cut": raw[:-7],
    }[damage]
    bad.write_bytes(data)
    with pytest.raises(InputDataError, match=rf"{bad.name}.*(truncated|corrupt).*download"):
        extract_features(bad, CLASSES)


def test_only_line_classes(sample: Sample) -> None:
    roads = tuple(c for c in CLASSES if c.name == "road")
    gdf, stats = extract_features_with_stats(sample.path, roads)
    assert set(gdf["class"]) == {"road"} and stats.relations_pass == "none"
    assert len(gdf) == 4  # motorway, residential, living_street, roundabout


def test_no_classes(sample: Sample) -> None:
    gdf = extract_features(sample.path, ())
    assert gdf.empty and list(gdf.columns) == [*FEATURE_COLUMNS, "geometry"]


def test_a_file_without_relations(tmp_path: Path) -> None:
    b = PbfBuilder(4)
    b.ring(rect(0, 0, 10, 10), {"building": "yes"})
    b.line([(0, 20), (50, 20)], {"highway": "residential"})
    path = b.write(tmp_path / "flat.osm.pbf")
    gdf, stats = extract_features_with_stats(path, CLASSES)
    assert stats.relations_pass == "full" and sorted(gdf["class"]) == ["building", "road"]


# ---------------------------------------------------------------------------------------------
# Real data: central Helsinki, against osmium-tool


@pytest.fixture(scope="module")
def helsinki() -> Path:
    if not HELSINKI.is_file():
        pytest.skip(f"real test data not found: {HELSINKI} (../shared/data is not checked out)")
    return HELSINKI


def osmium_export_buildings(src: Path, tmp: Path) -> set[tuple[str, int]]:
    """(type, id) of the polygon features ``osmium export`` makes from building=* (not no)."""
    filtered, out = tmp / "buildings.osm.pbf", tmp / "buildings.geojsonseq"
    subprocess.run(["osmium", "tags-filter", "--overwrite", "-o", str(filtered), str(src), "wr/building"],
                   check=True, capture_output=True)
    subprocess.run(["osmium", "export", "--overwrite", "-f", "geojsonseq", "-a", "type,id", "-o", str(out),
                    str(filtered)], check=True, capture_output=True)
    found = set()
    for line in out.read_text().split("\n"):  # records start with RS (0x1e), which splitlines splits at
        if not line.strip("\x1e"):
            continue
        feat = json.loads(line.strip("\x1e"))
        props = feat["properties"]
        if feat["geometry"]["type"] in ("Polygon", "MultiPolygon") and props.get("building", "no") != "no":
            found.add((props["@type"], int(props["@id"])))
    return found


def test_helsinki_buildings_match_osmium_export(helsinki: Path, tmp_path: Path) -> None:
    if shutil.which("osmium") is None:
        pytest.skip("osmium-tool (the osmium command) is not installed")
    gdf = extract_features(helsinki, BUILDING)
    ours = set(zip(gdf.osm_type, gdf.osm_id.astype(int)))
    theirs = osmium_export_buildings(helsinki, tmp_path)
    assert len(gdf) == len(theirs) > 400
    assert ours == theirs


def test_helsinki_all_classes(helsinki: Path) -> None:
    gdf, stats = extract_features_with_stats(helsinki, CLASSES)
    buildings = gdf[gdf["class"] == "building"]
    assert buildings.geometry.is_valid.all()
    assert (buildings.osm_type == "relation").sum() > 0  # multipolygon buildings are there
    assert set(stats.rows_per_class) == {"water", "park", "road", "building"}
    assert all(n > 0 for n in stats.rows_per_class.values())
    assert stats.skipped_missing_nodes > 0  # ways leave the extract at its edges
    roads = gdf[gdf["class"] == "road"]
    assert (roads.geometry.geom_type == "LineString").all() and (roads.buffer_m > 0).all()
    w, s, e, n = gdf.total_bounds
    assert 24.90 < w < e < 24.99 and 60.15 < s < n < 60.19
