"""Vector labels (``[labels] source = "vector"``): matching, ids, CRS, geometry kinds, the
``[labels]`` config, bad input (each a clear error, nothing written) and the Luigi stage.

Label files are generated here (GeoJSON, GeoPackage, Shapefile) from a seeded grid of squares,
lines and points near Kampala.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import geopandas as gpd
import luigi
import numpy as np
import pyproj
import pytest
import shapely

from pipeline.config.region import ClassSpec, TagFilter, load_config
from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.labels.features import FEATURE_COLUMNS, read_features
from pipeline.labels.vector import LabelsConfig, load_vector_labels

LON, LAT = 32.58, 0.33


def squares(n: int = 12, seed: int = 3) -> gpd.GeoDataFrame:
    """``n`` squares of 10 m (EPSG:4326) with attributes ``kind`` (house/shed/road), ``label``
    (1 or 2), ``id`` and a seeded position."""
    rng = np.random.default_rng(seed)
    d = 10 / 111_320
    xs = LON + rng.uniform(0, 0.003, n)
    ys = LAT + rng.uniform(0, 0.003, n)
    geoms = [shapely.box(x, y, x + d, y + d) for x, y in zip(xs, ys)]
    kinds = ["house", "shed", "road"] * (n // 3) + ["house"] * (n % 3)
    return gpd.GeoDataFrame({"kind": kinds, "label": [1 + (i % 2) for i in range(n)], "id": np.arange(100, 100 + n)},
                            geometry=geoms, crs="EPSG:4326")


BUILDING_ALL = ClassSpec("building", 1, "area", 10, ())


def vector(*paths: Path, **kw: object) -> LabelsConfig:
    return LabelsConfig("vector", tuple(paths), **kw)  # type: ignore[arg-type]


def test_filters_match_attributes_like_tags(tmp_path: Path) -> None:
    path = tmp_path / "b.geojson"
    gdf = squares()
    gdf.to_file(path)
    house = ClassSpec("building", 1, "area", 10, (TagFilter.parse("kind=house|shed", "t"),),
                      exclude=(TagFilter.parse("kind=shed", "t"),))
    out, stats = load_vector_labels(vector(path), [house])
    assert list(out.columns) == [*FEATURE_COLUMNS, "geometry"]
    assert len(out) == (gdf.kind == "house").sum()
    assert set(out.osm_id) == set(gdf.id[gdf.kind == "house"])  # the file's id field
    assert json.loads(out.tags[0]) == {"kind": "house"}
    assert stats.unmatched == (gdf.kind != "house").sum()
    # no tags: every feature
    out, _ = load_vector_labels(vector(path), [BUILDING_ALL])
    assert len(out) == len(gdf)
    assert out.crs.to_epsg() == 4326


def test_attribute_values_map_to_classes(tmp_path: Path) -> None:
    path = tmp_path / "b.geojson"
    squares().to_file(path)
    a, b = ClassSpec("building", 1, "area", 10, ()), ClassSpec("shed", 2, "area", 5, ())
    by_id, _ = load_vector_labels(vector(path, attribute="label"), [a, b])  # values equal to class ids
    assert by_id.groupby("class").size().to_dict() == {"building": 6, "shed": 6}
    mapped, stats = load_vector_labels(vector(path, attribute="kind", values=(("house", "building"),)), [a, b])
    assert set(mapped["class"]) == {"building"} and len(mapped) == 4
    assert stats.unmapped_values == {"shed": 4, "road": 4}
    with pytest.raises(ConfigError, match=r"labels\.values\.house"):
        load_vector_labels(vector(path, attribute="kind", values=(("house", "castle"),)), [a, b])


def test_ids_fall_back_to_negative_row_numbers(tmp_path: Path) -> None:
    gdf = squares(4)
    gdf["osm_id"] = [5, None, 7, None]
    path = tmp_path / "b.geojson"
    gdf.drop(columns="id").to_file(path)
    out, _ = load_vector_labels(vector(path), [BUILDING_ALL])
    assert sorted(out.osm_id) == [-4, -2, 5, 7]
    assert set(out.osm_type) == {"b.geojson"}


def test_legacy_crs_member_and_utm_reprojection(tmp_path: Path) -> None:
    """A GeoJSON in UTM 36N declared with a legacy ``crs`` member lands where it should."""
    utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
    x, y = utm.transform(LON, LAT)
    doc = {"type": "FeatureCollection",
           "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32636"}},
           "features": [{"type": "Feature", "properties": {"building": "yes"},
                         "geometry": shapely.geometry.mapping(shapely.box(x, y, x + 20, y + 20))}]}
    path = tmp_path / "utm.geojson"
    path.write_text(json.dumps(doc))
    out, _ = load_vector_labels(vector(path), [BUILDING_ALL])
    w, s, _, _ = out.geometry[0].bounds
    assert abs(w - LON) < 1e-7 and abs(s - LAT) < 1e-7
    assert out.geometry[0].area == pytest.approx((20 / 111_320) ** 2, rel=0.01)


def test_lines_points_and_invalid_polygons(tmp_path: Path) -> None:
    d = 20 / 111_320
    bowtie = shapely.Polygon([(LON, LAT), (LON + d, LAT + d), (LON + d, LAT), (LON, LAT + d)])
    gdf = gpd.GeoDataFrame({"kind": ["road", "well", "house"]},
                           geometry=[shapely.LineString([(LON, LAT), (LON + d, LAT)]), shapely.Point(LON, LAT), bowtie],
                           crs="EPSG:4326")
    path = tmp_path / "mixed.gpkg"
    gdf.to_file(path, layer="things")
    road = ClassSpec("road", 2, "line", 5, (TagFilter.parse("kind=road|well", "t"),), buffer_m=2.0)
    house = ClassSpec("building", 1, "area", 10, ())
    out, stats = load_vector_labels(vector(path, layer="things"), [house, road])
    kinds = {(r["class"], r.geometry.geom_type): r.buffer_m for _, r in out.iterrows()}
    assert kinds[("road", "LineString")] == 2.0  # buffered downstream, like OSM lines
    assert kinds[("road", "Polygon")] == 0.0  # the point: a disc of 2 m already
    assert stats.repaired == 1 and stats.wrong_geometry == 2  # the line and the point are no buildings
    disc = out[(out["class"] == "road") & (out.geom_type == "Polygon")].geometry.iloc[0]
    assert disc.area == pytest.approx(np.pi * (2 / 111_320) ** 2, rel=0.05)
    assert out[out["class"] == "building"].geometry.iloc[0].is_valid


# ---------------------------------------------------------------------------------------------
# Bad input


def test_file_without_crs_is_an_error_unless_crs_is_set(tmp_path: Path) -> None:
    path = tmp_path / "nocrs.shp"
    squares().to_file(path)
    path.with_suffix(".prj").unlink()
    with pytest.raises(InputDataError, match=r"nocrs\.shp.*declares no CRS.*labels\.crs"):
        load_vector_labels(vector(path), [BUILDING_ALL])
    out, _ = load_vector_labels(vector(path, crs="EPSG:4326"), [BUILDING_ALL])
    assert len(out) == 12


def test_projected_coordinates_read_as_degrees_are_an_error_naming_labels_crs(tmp_path: Path) -> None:
    """UTM metres in a GeoJSON without a ``crs`` member (GDAL reads it as EPSG:4326) or in a
    Shapefile without ``.prj`` given ``crs = "EPSG:4326"``: an error naming the file and
    ``[labels] crs``; with ``crs`` set to the UTM zone the GeoJSON lands where it should."""
    utm = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:32636", always_xy=True)
    x, y = utm.transform(LON, LAT)
    doc = {"type": "FeatureCollection",
           "features": [{"type": "Feature", "properties": {"building": "yes"},
                         "geometry": shapely.geometry.mapping(shapely.box(x, y, x + 20, y + 20))}]}
    path = tmp_path / "utm-nocrs.geojson"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputDataError, match=r'utm-nocrs\.geojson: coordinates \(\d+.* outside the valid longitude/'
                                             r'latitude range.*set \[labels\] crs = "EPSG:xxxx"'):
        load_vector_labels(vector(path), [BUILDING_ALL])
    out, _ = load_vector_labels(vector(path, crs="EPSG:32636"), [BUILDING_ALL])
    w, s, _, _ = out.geometry[0].bounds
    assert abs(w - LON) < 1e-7 and abs(s - LAT) < 1e-7
    # a Shapefile without .prj, wrongly declared as degrees in the config
    shp = tmp_path / "utm.shp"
    gpd.GeoDataFrame({"kind": ["house"]}, geometry=[shapely.box(x, y, x + 20, y + 20)], crs="EPSG:32636").to_file(shp)
    shp.with_suffix(".prj").unlink()
    with pytest.raises(InputDataError, match=r'utm\.shp: coordinates .*\[labels\] crs = "EPSG:xxxx"'):
        load_vector_labels(vector(shp, crs="EPSG:4326"), [BUILDING_ALL])
    # a file that declares EPSG:4326 itself: its CRS is wrong, labels.crs would not apply
    gpkg = tmp_path / "wrong.gpkg"
    gpd.GeoDataFrame({"kind": ["house"]}, geometry=[shapely.box(x, y, x + 20, y + 20)], crs="EPSG:4326").to_file(gpkg)
    with pytest.raises(InputDataError, match=r"wrong\.gpkg: coordinates .*declares that CRS: fix the file's CRS"):
        load_vector_labels(vector(gpkg, crs="EPSG:32636"), [BUILDING_ALL])


def test_unknown_layer_and_missing_attribute_name_them(tmp_path: Path) -> None:
    path = tmp_path / "two.gpkg"
    squares().to_file(path, layer="houses")
    squares(3).to_file(path, layer="sheds")
    with pytest.raises(InputDataError, match=r"two\.gpkg: no layer 'roofs'; its layers are houses, sheds"):
        load_vector_labels(vector(path, layer="roofs"), [BUILDING_ALL])
    bad = ClassSpec("building", 1, "area", 10, (TagFilter.parse("building=*", "t"),))
    with pytest.raises(InputDataError, match=r"two\.gpkg layer 'sheds': no attribute 'building'.*kind"):
        load_vector_labels(vector(path, layer="sheds"), [bad])
    with pytest.raises(InputDataError, match="no attribute 'colour'"):
        load_vector_labels(vector(path, layer="sheds", attribute="colour"), [BUILDING_ALL])
    with pytest.raises(MissingInputError, match=r"absent\.geojson"):
        load_vector_labels(vector(tmp_path / "absent.geojson"), [BUILDING_ALL])


def test_class_matching_nothing_is_a_warning_with_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "b.geojson"
    squares().to_file(path)
    castle = ClassSpec("castle", 3, "area", 10, (TagFilter.parse("kind=castle", "t"),))
    with caplog.at_level(logging.WARNING, logger="pipeline.labels.vector"):
        _, stats = load_vector_labels(vector(path), [BUILDING_ALL, castle])
    assert stats.rows_per_class == {"building": 12, "castle": 0}
    assert "'castle' matches none of the 12 features" in caplog.text


# ---------------------------------------------------------------------------------------------
# Config and the Luigi stage


def region(tmp: Path, labels: str, classes_toml: str = 'name = "building"\nid = 1\nkind = "area"\n',
           osm: str = "") -> Path:
    cfg = tmp / "r.toml"
    cfg.write_text(f"""
[region]
name = "r"
zoom = 18
shard_zoom = 14
data_dir = "{tmp / 'data'}"
{osm}
[labels]
{labels}

[[classes]]
{classes_toml}
""")
    return cfg


def test_labels_config(tmp_path: Path) -> None:
    cfg = load_config(region(tmp_path, 'source = "vector"\npaths = ["a.geojson"]\ncrs = "EPSG:32636"'))
    lab = cfg.labels
    assert lab.source == "vector" and lab.paths == (Path("a.geojson"),) and cfg.osm is None
    assert cfg.classes[0].tags == ()
    with pytest.raises(ConfigError, match=r"labels\.paths is required"):
        load_config(region(tmp_path, 'source = "vector"'))
    with pytest.raises(ConfigError, match=r"labels\.crs = 'EPSG:99999'"):
        load_config(region(tmp_path, 'source = "vector"\npaths = ["a.geojson"]\ncrs = "EPSG:99999"'))
    with pytest.raises(ConfigError, match=r"unknown key.*\[labels\].*pats"):
        load_config(region(tmp_path, 'source = "vector"\npaths = ["a"]\npats = ["b"]'))
    # OSM labels (the default): [osm] is required and every class needs tags
    with pytest.raises(ConfigError, match=r"\[osm\] path is required"):
        load_config(region(tmp_path, 'source = "osm"'))
    with pytest.raises(ConfigError, match=r"tags needs at least one tag filter"):
        load_config(region(tmp_path, "", osm='[osm]\npath = "x.osm.pbf"\n'))


def build(*tasks: luigi.Task) -> luigi.execution_summary.LuigiRunResult:
    return luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")


def test_extract_stage_reads_vector_labels_and_writes_nothing_on_bad_input(tmp_path: Path) -> None:
    from tasks.extract import ExtractFeatures
    from tasks.masks import MasksAll

    path = tmp_path / "b.geojson"
    squares().to_file(path)
    cfg = region(tmp_path, f'source = "vector"\npaths = ["{path}"]')
    assert build(MasksAll(config=str(cfg))).status.name == "SUCCESS"
    feats = read_features(tmp_path / "data" / "features.parquet")
    assert len(feats) == 12 and set(feats["class"]) == {"building"}
    manifest = json.loads((tmp_path / "data" / "_manifests" / "extract.json").read_text())
    assert manifest["stats"]["files"] == {"b.geojson": 12}
    assert len(list((tmp_path / "data" / "masks").glob("18/*/*.png"))) >= 1
    # changing the labels config reruns extraction (its digest covers [labels])
    digest = ExtractFeatures(config=str(cfg)).digest()
    cfg.write_text(cfg.read_text().replace('source = "vector"', 'source = "vector"\nid_field = "id"'))
    assert ExtractFeatures(config=str(cfg)).digest() != digest
    # bad input: a missing attribute fails the stage, and no features file is left
    bad = tmp_path / "bad"
    bad.mkdir()
    cfg2 = region(bad, f'source = "vector"\npaths = ["{path}"]',
                  'name = "building"\nid = 1\nkind = "area"\ntags = ["building=yes"]\n')
    res = build(ExtractFeatures(config=str(cfg2)))
    assert res.status.name == "FAILED"
    assert not (bad / "data" / "features.parquet").exists()
    assert not (bad / "data" / "_manifests" / "extract.json").exists()
    assert not list(bad.rglob("*.tmp"))


def test_example_configs_parse_and_the_geopackage_example_runs(tmp_path: Path) -> None:
    """configs/examples/*.toml load; the GeoTIFF + GeoPackage one runs on generated files."""
    import rasterio
    from rasterio.warp import transform_bounds

    from tasks.imagery import ImageryAll
    from tasks.masks import MasksAll
    from tests.conftest import ROOT
    from tests.tileserver import write_test_geotiff

    examples = sorted((ROOT / "configs" / "examples").glob("*.toml"))
    assert len(examples) >= 2
    for ex in examples:
        assert load_config(ex).labels.source == "vector"
    tif = write_test_geotiff(tmp_path / "ortho.tif", size_px=600)
    with rasterio.open(tif) as ds:
        w, s, e, n = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds)
    cx, cy, d = (w + e) / 2, (s + n) / 2, (e - w) / 10
    gdf = gpd.GeoDataFrame(
        {"category": ["BLD", "12", "BLD", "RD", "XX"], "status": ["", "", "demolished", "", ""]},
        geometry=[shapely.box(cx, cy, cx + d, cy + d), shapely.box(cx - 2 * d, cy, cx - d, cy + d),
                  shapely.box(cx, cy - 2 * d, cx + d, cy - d), shapely.LineString([(w + d, cy), (e - d, cy)]),
                  shapely.box(cx + 2 * d, cy, cx + 3 * d, cy + d)], crs="EPSG:4326")
    gdf.to_file(tmp_path / "city.gpkg", layer="landcover")
    text = (ROOT / "configs" / "examples" / "geotiff-geopackage.toml").read_text()
    text = (text.replace("datasets/my-city/city.gpkg", str(tmp_path / "city.gpkg"))
            .replace("datasets/my-city/ortho.tif", str(tif)).replace("data/my-city", str(tmp_path / "data")))
    cfg = tmp_path / "city.toml"
    cfg.write_text(text)
    assert build(MasksAll(config=str(cfg)), ImageryAll(config=str(cfg))).status.name == "SUCCESS"
    feats = read_features(tmp_path / "data" / "features.parquet")
    assert feats.groupby("class").size().to_dict() == {"building": 2, "road": 1}
    manifest = json.loads((tmp_path / "data" / "_manifests" / "extract.json").read_text())
    assert manifest["stats"]["unmapped_values"] == {"XX": 1}
