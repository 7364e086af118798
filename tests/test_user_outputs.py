"""Outputs a person reads (issue 17, item 10): one palette for the QGIS project, the report page,
``map.png`` and the README; a QGIS project whose every path is relative (imagery included, with
the tiles' real extension, the raster itself beside the tiles) in layer groups, checked in a real
QGIS when PyQGIS is installed; a ``status`` on every change-layer feature; ``run.json`` with the
code's commit, one config digest, output checksums and GDAL/PROJ versions; a log-scale loss plot."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.review.qgis import (
    GROUPS,
    RasterLayer,
    gdal_layer,
    project_xml,
    region_layers,
    tile_extension,
    write_project,
    xyz_source,
)
from pipeline.review.statuses import COLORS, OSM, PREDICTED, STATUS_STYLES, legend_text, with_status
from pipeline.vectors.vector_io import geojson_bytes
from tests.conftest import ROOT

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),), color="#e31a1c")
ROAD = ClassSpec("road", 2, "line", 10, (TagFilter("highway", None),), buffer_m=4.0)
QGIS_PYTHON = "/usr/bin/python3"


def test_one_palette_for_qgis_the_report_and_the_readme() -> None:
    import pipeline.review.region_report
    from pipeline.review import compare_report

    assert compare_report.COLORS is COLORS and {k: s.label for k, s in STATUS_STYLES.items()} == compare_report.LABELS
    layers = region_layers((BUILDING, ROAD), STATUS_STYLES, ["building", "road"], ["building", "road"])
    by_name = {lyr.name: lyr for lyr in layers}
    # OSM outlines have their own neutral colour, never the red of "missing in OSM" (nor the class's red)
    assert by_name["OSM building"].color == OSM.color != COLORS["missing_in_osm"]
    assert {lyr.color for lyr in layers if lyr.group == "OSM"} == {OSM.color}
    # blue means the predictions, in QGIS and on the report page alike
    assert {lyr.color for lyr in layers if lyr.group == "predictions"} == {PREDICTED.color}
    report = {name: color for name, _, color, _ in pipeline.review.region_report.map_layers()}
    assert report[PREDICTED.label] == PREDICTED.color
    for status in ("missing_in_osm", "not_seen", "offset"):  # same name, same colour in both
        assert report[STATUS_STYLES[status].label] == by_name[STATUS_STYLES[status].label].color == COLORS[status]
    assert PREDICTED.color not in {OSM.color, *COLORS.values()} and len(set(COLORS.values())) == len(COLORS)
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert legend_text() in readme  # the README's legend says what the code draws


def test_report_osm_layer_is_grey(tmp_path: Path) -> None:
    from pipeline.labels.features import write_features
    from pipeline.review.region_report import osm_layer

    gdf = gpd.GeoDataFrame({"class": ["building"], "osm_type": ["way"], "osm_id": [1]},
                           geometry=[shapely.box(32.58, 0.33, 32.5801, 0.3301)], crs="EPSG:4326")
    write_features(gdf, tmp_path / "features.parquet")
    layer = osm_layer(tmp_path / "features.parquet")
    assert layer is not None and layer.color == OSM.color


def test_tile_extension_is_the_majority_and_says_so() -> None:
    assert tile_extension([]) == ("png", None)
    assert tile_extension(["19/1/2.jpg", "19/1/3.jpg"]) == ("jpg", None)
    ext, note = tile_extension(["19/1/2.jpg", "19/1/3.jpg", "19/1/4.png"])
    assert ext == "jpg" and note is not None and "2 .jpg" in note and "1 .png" in note
    with pytest.raises(ValueError, match="relative"):
        xyz_source("/data/r/images", "png", 19, 19)


def _region(folder: Path) -> tuple[Path, list[RasterLayer]]:
    """A small region folder: one JPEG tile, a change layer, a UTM raster beside the folder."""
    import rasterio
    from PIL import Image
    from rasterio.transform import from_origin

    d = folder / "region"
    (d / "images" / "19" / "316000").mkdir(parents=True)
    (d / "compare").mkdir()
    Image.fromarray(np.full((256, 256, 3), 120, np.uint8)).save(d / "images" / "19" / "316000" / "262000.jpg")
    with rasterio.open(folder / "ortho.tif", "w", driver="GTiff", width=32, height=32, count=3, dtype="uint8",
                       crs="EPSG:32636", transform=from_origin(453000, 36000, 0.3, 0.3)) as dst:
        dst.write(np.full((3, 32, 32), 100, np.uint8))
    missing = gpd.GeoDataFrame({"id": ["building-1"], "class": ["building"]},
                               geometry=[shapely.box(32.58, 0.33, 32.5801, 0.3301)], crs="EPSG:4326")
    (d / "compare" / "missing_in_osm.geojson").write_bytes(geojson_bytes(with_status(missing, "missing_in_osm")))
    ext, _ = tile_extension(["19/316000/262000.jpg"])
    return d, [RasterLayer("imagery", xyz_source("./images", ext, 19, 19), "wms"), gdal_layer(folder / "ortho.tif", d)]


def test_qgis_project_is_relative_and_grouped(tmp_path: Path) -> None:
    _, imagery = _region(tmp_path)
    assert imagery[1].source == "../ortho.tif" and imagery[1].authid == "EPSG:32636"
    layers = region_layers((BUILDING,), ["missing_in_osm"], ["building"], ["building"])
    xml = project_xml("r", layers, imagery, (0.0, 0.0, 10.0, 10.0)).decode()
    assert "file:///" not in xml and str(tmp_path) not in xml  # nothing absolute
    assert "url=file:./images/%7Bz%7D/%7Bx%7D/%7By%7D.jpg" in xml
    root = ET.fromstring(xml.split("\n", 1)[1])
    groups = root.findall("layer-tree-group/layer-tree-group")
    assert [g.get("name") for g in groups] == list(GROUPS)
    members = {g.get("name"): [e.get("name") for e in g.findall("layer-tree-layer")] for g in groups}
    assert members == {"change layers": ["missing in OSM"], "predictions": ["predicted building"],
                       "OSM": ["OSM building"], "imagery": ["imagery", "ortho.tif"]}
    gdal = [m for m in root.findall("projectlayers/maplayer") if m.findtext("provider") == "gdal"]
    assert [m.findtext("datasource") for m in gdal] == ["../ortho.tif"]
    # the predictions dropped for low confidence: beside the predictions, unchecked
    low = region_layers((BUILDING,), ["missing_in_osm"], ["building"], ["building"], low=True)
    root = ET.fromstring(project_xml("r", low, imagery, (0.0, 0.0, 10.0, 10.0)).decode().split("\n", 1)[1])
    pred = next(g for g in root.findall("layer-tree-group/layer-tree-group") if g.get("name") == "predictions")
    assert [(e.get("name"), e.get("checked")) for e in pred.findall("layer-tree-layer")] == [
        ("predicted building", "Qt::Checked"), ("predicted, low confidence", "Qt::Unchecked")]


def _has_pyqgis() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    return subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False).returncode == 0


def test_qgis_opens_the_project_after_it_moved(tmp_path: Path) -> None:
    if not _has_pyqgis():
        pytest.skip("PyQGIS is not installed (Debian: apt-get install python3-qgis)")
    d, imagery = _region(tmp_path / "made")
    layers = region_layers((BUILDING,), ["missing_in_osm"], [], [])
    write_project(d / "r.qgs", "r", layers, imagery, (3627000.0, 36000.0, 3628000.0, 37000.0))
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "made", moved)  # shared or moved as a whole: it must still show everything
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    env.pop("PYTHONPATH", None)
    os.chmod(tmp_path, 0o700)
    res = subprocess.run([QGIS_PYTHON, str(ROOT / "scripts" / "qgis_check.py"), str(moved / "region" / "r.qgs")],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.returncode == 0, report
    got = report["layers"]
    assert all(v["valid"] for v in got.values()), got
    assert str(moved / "region" / "images") in got["imagery"]["source"].replace("%7B", "{")
    assert got["imagery"]["source"].endswith(".jpg&zmax=19&zmin=19") or ".jpg" in got["imagery"]["source"]
    assert got["ortho.tif"]["source"] == str(moved / "ortho.tif") and got["ortho.tif"]["crs"] == "EPSG:32636"
    assert got["missing in OSM"]["features"] == 1 and got["missing in OSM"]["group"] == "change layers"
    assert report["groups"] == ["change layers", "imagery"]


def test_every_change_layer_feature_carries_its_status() -> None:
    layer = gpd.GeoDataFrame({"id": ["b-1", "b-2"], "class": ["building"] * 2, "coverage": [0.1, 0.0],
                              "area_m2": [50.0, 60.0]},
                             geometry=[shapely.box(0, 0, 1e-4, 1e-4), shapely.box(1, 1, 1.0001, 1.0001)],
                             crs="EPSG:4326")
    out = with_status(layer, "not_seen")
    assert list(out.columns[:2]) == ["id", "status"] and "status" not in layer.columns
    feats = json.loads(geojson_bytes(out))["features"]
    assert [f["properties"]["status"] for f in feats] == ["not_seen"] * 2
    assert feats[0]["properties"]["area_m2"] == 50.0 and feats[0]["properties"]["coverage"] == 0.1
    empty = with_status(gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs="EPSG:4326"), "matched")
    assert json.loads(geojson_bytes(empty))["features"] == []
    # the task writes every layer through with_status
    src = (ROOT / "tasks" / "compare.py").read_text()
    assert re.search(r"write_geojson\(with_status\(layer, status\)", src)


def test_run_manifest_names_the_code_one_digest_output_checksums_and_gdal_proj(tmp_path: Path) -> None:
    import hashlib

    from pipeline.core.runinfo import NOT_A_CHECKOUT, code_commit, output_checksums, run_manifest

    repo = tmp_path / "code"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert code_commit(repo) == {"commit": head, "dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert code_commit(repo)["dirty"] is True
    plain = tmp_path / "unpacked"
    plain.mkdir()
    assert code_commit(plain) == {"commit": NOT_A_CHECKOUT}

    d = tmp_path / "data"
    (d / "compare").mkdir(parents=True)
    (d / "model").mkdir()
    (d / "model" / "best.pt").write_bytes(b"weights")
    (d / "compare" / "missing_in_osm.geojson").write_text("{}")
    (d / "r.qgs").write_text("<qgis/>")
    (d / "compare" / "scratch.tmp").write_text("not an output")
    sums = output_checksums(d, "r")
    assert sums == {"compare/missing_in_osm.geojson": hashlib.sha256(b"{}").hexdigest(),
                    "model/best.pt": hashlib.sha256(b"weights").hexdigest(),
                    "r.qgs": hashlib.sha256(b"<qgis/>").hexdigest()}
    body = run_manifest("r", "configs/r.toml", "abcd", [], {}, None, outputs=sums,
                        stage_digests={"train": "t1", "evaluate": "e1"})
    assert body["config_digest"] == "abcd" and "run stage" in body["config_digest_is"]
    assert [k for k in body if "digest" in k and k != "stage_digests"] == ["config_digest", "config_digest_is"]
    assert body["stage_digests"] == {"train": "t1", "evaluate": "e1"} and body["outputs"] == sums
    assert re.fullmatch(r"[0-9a-f]{40}", body["code"]["commit"])  # this project is a git checkout
    libs = body["libraries"]
    assert re.match(r"\d+\.\d+", libs["gdal"]) and re.match(r"\d+\.\d+", libs["proj"])
    json.dumps(body, allow_nan=False)
    # RunManifest writes the output checksums and the per-stage digests into run.json
    src = (ROOT / "tasks" / "report.py").read_text()
    assert "outputs=output_checksums(self.data_dir, cfg.name)" in src and "stage_digests=digests" in src


def test_training_plot_has_a_log_loss_axis(tmp_path: Path) -> None:
    from pipeline.model.trainlog import write_plot

    hist = [{"epoch": e, "train_loss": 18.4 if e == 3 else 1.0 / (e + 1), "val_loss": 0.8 / (e + 1),
             "iou": {"background": 0.9, "building": 0.5 + e / 40}} for e in range(10)]
    fig = write_plot(tmp_path / "training.png", hist)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_ylabel() == "loss (log scale)"
    assert fig.axes[1].get_yscale() == "linear" and (tmp_path / "training.png").stat().st_size > 1000
    # a loss of 0 cannot be drawn on a log axis: the plot falls back to linear instead of failing
    flat = [{**h, "train_loss": 0.0} for h in hist]
    assert write_plot(tmp_path / "flat.png", flat).axes[0].get_yscale() == "linear"
