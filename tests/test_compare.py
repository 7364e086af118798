"""Vectorise and compare on the generated sample region (a 300 m town).

- Round trip: OSM buildings burnt into masks and vectorised back match their sources.
- "Predictions" that show the image's truth (truth.geojson's ``in_image`` buildings burnt into
  probability tiles, the streets it shows into the road band) make the change layers find
  exactly the buildings and streets the truth marks missing in OSM or demolished.
- Every output geometry is valid, coordinates have <= 7 decimals, the .osm file is read back by
  pyosmium and ``osmium fileinfo``, and the QGIS project opens in PyQGIS (when installed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import luigi
import numpy as np
import pytest
import shapely

from pipeline.config.region import RegionConfig, load_config
from pipeline.labels.features import read_features
from pipeline.review.compare import CompareSpec, compare, features_in_tiles, match
from pipeline.synthetic.score import object_scores, truth_scores
from pipeline.synthetic.truth import is_building
from pipeline.tiles.geo import to_mercator
from pipeline.tiles.index import read_tile_index
from pipeline.tiles.tilemath import Tile
from pipeline.vectors.finish import finish
from pipeline.vectors.vectorize import (
    VectorizeSpec,
    cached_loader,
    read_tile,
    region_pieces,
    shard_box_px,
    shard_pieces,
)
from scripts.truth_predictions import write_truth_predictions
from tests.conftest import ROOT

DEMO = ROOT / "configs" / "demo.toml"
QGIS_PYTHON = "/usr/bin/python3"


def _config(folder: Path, source: str) -> Path:
    text = DEMO.read_text().replace('"data/demo', f'"{folder}/demo').replace("size_m = 700.0", "size_m = 300.0")
    text = text.replace("seed = 7", "seed = 11") + f'\n[vectorize]\nsource = "{source}"\n'
    path = folder / f"demo-{source}.toml"
    path.write_text(text)
    return path


def _build(*tasks: luigi.Task) -> None:
    res = luigi.build(list(tasks), local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert res.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, res.summary_text


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RegionConfig]:
    """The sample region with masks and imagery (no vectors yet)."""
    from tasks.imagery import ImageryAll
    from tasks.masks import MasksAll

    folder = tmp_path_factory.mktemp("cmp")
    cfg_path = _config(folder, "masks")
    _build(MasksAll(config=str(cfg_path)), ImageryAll(config=str(cfg_path)))
    return cfg_path, load_config(cfg_path)


def _truth(cfg: RegionConfig) -> list[dict[str, Any]]:
    return json.loads((cfg.data_dir / "truth.geojson").read_text())["features"]  # type: ignore[no-any-return]


def test_round_trip_osm_buildings_through_masks(region: tuple[Path, RegionConfig]) -> None:
    _, cfg = region
    index = read_tile_index(cfg.data_dir / "masks")
    index = index[index.status == "written"]
    ids = [c.id for c in sorted(cfg.classes, key=lambda c: c.id)]
    files = {Tile(int(r.z), int(r.x), int(r.y)): cfg.data_dir / "masks" / r.path for r in index.itertuples()}
    edges = cfg.edge_ids  # touching buildings come out apart through the masks' edge bands
    assert edges == (1,)
    load = cached_loader(lambda t: read_tile(files[t].read_bytes(), "masks", ids, str(t), edges)
                         if t in files else None, cfg.classes)
    parts = []
    for k, s in enumerate(sorted(index.shard.unique())):
        tiles = [Tile(int(r.z), int(r.x), int(r.y)) for r in index[index.shard == s].itertuples()]
        parts.append(shard_pieces(tiles, load, cfg.classes, 0.5, shard_box_px(s, cfg.zoom, cfg.tile_size), k,
                                  edges))
    assert len(parts) > 1  # the town spans several shards: shard borders are crossed
    pred = finish(region_pieces(parts, edges), cfg.classes, VectorizeSpec(regularize=()), cfg.zoom,
                  cfg.tile_size)
    osm = read_features(cfg.data_dir / "features.parquet")
    osm = osm[features_in_tiles(osm.geometry.to_numpy(), set(files_xy(files)), cfg.zoom)]
    b_osm = to_mercator(osm[osm["class"] == "building"].geometry.to_numpy())
    b_pred = to_mercator(pred[pred["class"] == "building"].geometry.to_numpy())
    _, _, v = match(b_pred, b_osm, 0.3)
    assert len(v) == len(b_osm) == len(b_pred)  # one polygon per building: nothing split or fused
    assert np.median(v) >= 0.95, np.median(v)
    total = shapely.area(b_pred).sum() / shapely.area(b_osm).sum()
    assert 0.98 <= total <= 1.02, total
    res = compare(pred, osm, cfg.classes, CompareSpec())
    assert res.summary["classes"]["building"]["area_iou"] >= 0.97
    assert shapely.is_valid(pred.geometry.to_numpy()).all()
    # regularised buildings keep IoU >= 0.9 with the raw ones
    reg = finish(region_pieces(parts, edges), cfg.classes, VectorizeSpec(regularize=("building",)), cfg.zoom,
                 cfg.tile_size)
    r_reg = to_mercator(reg[reg["class"] == "building"].geometry.to_numpy())
    _, _, v_reg = match(r_reg, b_pred, 0.5)  # (finish sorts by centroid: pair them up first)
    assert len(v_reg) == len(r_reg) == len(b_pred)
    assert v_reg.min() >= 0.9
    assert shapely.get_num_coordinates(r_reg).sum() < shapely.get_num_coordinates(b_pred).sum()
    # roads come back as centrelines near the OSM roads
    roads = pred[pred["class"] == "road"]
    assert len(roads) and (roads.geometry.geom_type == "LineString").all()
    osm_roads = shapely.union_all(to_mercator(osm[osm["class"] == "road"].geometry.to_numpy())).buffer(3.0)
    inside = shapely.length(shapely.intersection(to_mercator(roads.geometry.to_numpy()), osm_roads)).sum()
    assert inside / shapely.length(to_mercator(roads.geometry.to_numpy())).sum() > 0.95


def files_xy(files: dict[Tile, Path]) -> list[tuple[int, int]]:
    return [(t.x, t.y) for t in files]


class GivenPredictions(luigi.ExternalTask):
    """Prediction tiles made outside the task graph (here: the truth burnt into tiles)."""

    folder = luigi.Parameter()

    def output(self) -> luigi.LocalTarget:
        return luigi.LocalTarget(str(Path(str(self.folder)) / "_shards"))


def given_predictions(stage_task: Any) -> Any:
    """``tasks.base.stage_task`` with GivenPredictions for the predict stage's task."""
    def task(stage: str, config: str, like: Any = None, shard: str | None = None) -> Any:
        if stage == "predict" and shard is None:
            return GivenPredictions(folder=str(load_config(config).data_dir / "predictions"))
        return stage_task(stage, config, like, shard)
    return task


@pytest.fixture(scope="module")
def compared(region: tuple[Path, RegionConfig]) -> tuple[Path, RegionConfig]:
    import tasks.base
    from tasks.compare import CompareWithOSM

    cfg_path, cfg = region
    write_truth_predictions(cfg)
    pred_path = _config(cfg_path.parent, "predictions")
    with pytest.MonkeyPatch.context() as mp:  # the truth stands in for PredictAll (no model is trained)
        mp.setattr(tasks.base, "stage_task", given_predictions(tasks.base.stage_task))
        _build(CompareWithOSM(config=str(pred_path)))
    return pred_path, load_config(pred_path)


def _ids(path: Path, key: str) -> set[Any]:
    return {f["properties"][key] for f in json.loads(path.read_text())["features"]}


def test_change_layers_find_exactly_the_truth(compared: tuple[Path, RegionConfig]) -> None:
    _, cfg = compared
    out = cfg.data_dir / "compare"
    truth = _truth(cfg)
    truth = [f for f in truth if is_building(f["properties"])]  # (the truth's roads: see test_compare_lines)
    demolished = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in truth
                  if f["properties"]["status"] == "demolished"}
    missing = [shapely.geometry.shape(f["geometry"]) for f in truth if f["properties"]["status"] == "missing_in_osm"]
    assert demolished and missing
    # not seen = exactly the demolished buildings (by OSM type and id)
    not_seen = {(f["properties"]["osm_type"], f["properties"]["osm_id"])
                for f in json.loads((out / "not_seen.geojson").read_text())["features"]
                if f["properties"]["class"] == "building"}
    assert not_seen == demolished
    # missing in OSM = exactly the buildings the truth marks missing (matched one-to-one by IoU)
    found = [shapely.geometry.shape(f["geometry"]) for f in json.loads((out / "missing_in_osm.geojson").read_text())[
        "features"] if f["properties"]["class"] == "building"]
    _, _, v = match(to_mercator(np.array(found, dtype=object)), to_mercator(np.array(missing, dtype=object)), 0.5)
    precision, recall = len(v) / len(found), len(v) / len(missing)
    assert (precision, recall) == (1.0, 1.0)
    # shifted OSM buildings come out as "offset", with the shift measured
    shifted = {(f["properties"]["osm_type"], f["properties"]["osm_id"]): f["properties"]["offset_m"] for f in truth
               if f["properties"]["status"] == "mapped" and f["properties"]["offset_m"] > 0}
    offset = {(f["properties"]["osm_type"], f["properties"]["osm_id"]): f["properties"]["offset_m"]
              for f in json.loads((out / "offset.geojson").read_text())["features"]}
    assert set(offset) == set(shifted)
    for k, d in offset.items():
        assert d == pytest.approx(shifted[k], abs=0.35)
    scores = truth_scores(cfg.data_dir)  # the script a closing note uses for a trained model's run
    assert all(scores[k]["precision"] == scores[k]["recall"] == 1.0 for k in ("missing_in_osm", "not_seen", "offset")
               ), scores
    objects = object_scores(cfg.data_dir, cfg.zoom)  # every building one polygon, terraces included
    assert objects["all"]["f1"] == objects["dense"]["f1"] == 1.0 and objects["dense"]["truth"] > 20, objects
    roads = scores["roads"]  # the streets OSM lacks and the ones gone from the image, by length and by id
    assert min(roads["missing_in_osm"]["precision"], roads["missing_in_osm"]["recall"]) > 0.99, roads  # by length
    assert roads["missing_in_osm"]["recall_in_imagery"] > 0.99, roads
    assert roads["not_seen"]["precision"] == roads["not_seen"]["recall"] == 1.0, roads
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["building"]["missing_in_osm"] == len(missing)
    road = summary["lines"]["road"]  # centrelines of the streets the image shows against the OSM roads
    assert road["correctness"] > 0.9 and road["completeness"] > 0.85, road
    assert road["missing_in_osm"] >= 1 and road["not_seen"] >= 1
    assert (out / "report.md").read_text().count("| building |") == 1
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG"


def _coords(obj: Any) -> list[float]:
    if isinstance(obj, (int, float)):
        return [float(obj)]
    return [v for o in obj for v in _coords(o)]


def test_every_output_geometry_is_valid_with_seven_decimals(compared: tuple[Path, RegionConfig]) -> None:
    _, cfg = compared
    paths = [cfg.data_dir / "predictions.geojson", *sorted((cfg.data_dir / "compare").glob("*.geojson"))]
    for path in paths:
        data = json.loads(path.read_text())
        assert data["type"] == "FeatureCollection" and "crs" not in data
        geoms = [shapely.geometry.shape(f["geometry"]) for f in data["features"]]
        assert all(g.is_valid for g in geoms), path
        for f in data["features"]:
            for c in _coords(f["geometry"]["coordinates"]):
                assert len(repr(c).split(".")[-1]) <= 7 or "." not in repr(c), (path, c)
        for g in geoms:
            if g.geom_type == "Polygon":  # RFC 7946: exterior rings counterclockwise
                assert g.exterior.is_ccw
    lines = (cfg.data_dir / "compare" / "maproulette.geojsonl").read_text().rstrip("\n").split("\n")
    assert len(lines) == sum(len(json.loads((cfg.data_dir / "compare" / f"missing_in_osm{k}.geojson").read_text())[
        "features"]) for k in ("", "_lines"))  # buildings and roads
    assert all(line.startswith("\x1e") for line in lines)  # RFC 7464 record separators, as MapRoulette reads them
    task = json.loads(lines[0][1:])
    assert task["type"] == "FeatureCollection" and len(task["features"]) == 1
    layer = [f for k in ("", "_lines") for f in json.loads(
        (cfg.data_dir / "compare" / f"missing_in_osm{k}.geojson").read_text())["features"]]
    first = next(f for f in layer if task["features"][0]["id"] == f"osmsat-demo-{f['properties']['id']}")
    assert first["properties"]["score"] == max(f["properties"]["score"] for f in layer)  # highest score first
    assert shapely.geometry.shape(task["features"][0]["geometry"]).is_valid


def test_osm_file_reads_back(compared: tuple[Path, RegionConfig]) -> None:
    import osmium

    _, cfg = compared
    path = cfg.data_dir / "compare" / "missing_in_osm.osm"
    head = path.read_text()[:200]
    assert 'upload="never"' in head
    ways = []
    nodes = 0
    for obj in osmium.FileProcessor(str(path)):
        if obj.is_node():
            nodes += 1
            assert obj.id < 0
        elif obj.is_way() and "building" in obj.tags:
            ways.append((obj.id, dict(obj.tags), [n.ref for n in obj.nodes]))
    n = len(json.loads((cfg.data_dir / "compare" / "missing_in_osm.geojson").read_text())["features"])
    assert len(ways) == n and nodes > 3 * n
    for wid, tags, refs in ways:
        assert wid < 0 and tags["building"] == "yes" and tags["source"] == "osmsat"
        assert refs[0] == refs[-1] and len(refs) >= 4  # closed rings
    if shutil.which("osmium") is None:
        pytest.skip("osmium-tool is not installed (make install adds it when root and apt-get are there)")
    info = subprocess.run(["osmium", "fileinfo", "-e", "-j", str(path)], capture_output=True, text=True, check=True)
    data = json.loads(info.stdout)["data"]
    assert data["count"]["ways"] >= n and data["minid"]["ways"] < 0


def _has_pyqgis() -> bool:
    if not Path(QGIS_PYTHON).exists():
        return False
    res = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core"], capture_output=True, check=False)
    return res.returncode == 0


def test_qgis_project_opens_with_every_layer_valid(compared: tuple[Path, RegionConfig]) -> None:
    _, cfg = compared
    qgs = cfg.data_dir / f"{cfg.name}.qgs"
    text = qgs.read_text()
    assert "type=xyz&amp;url=file:./images/%7Bz%7D/%7Bx%7D/%7By%7D.png" in text  # relative, the tiles' extension
    assert "file:///" not in text and "./compare/missing_in_osm.geojson" in text and "<provider>gdal</provider>" in text
    for status in ("missing_in_osm", "not_seen", "offset", "matched"):  # every feature says its status
        feats = json.loads((cfg.data_dir / "compare" / f"{status}.geojson").read_text())["features"]
        assert feats and all(f["properties"]["status"] == status for f in feats)
    for status in ("missing_in_osm", "not_seen", "offset"):
        assert (cfg.data_dir / "compare" / f"{status}.qml").is_file()
    if not _has_pyqgis():
        pytest.skip("PyQGIS is not installed (Debian: apt-get install python3-qgis; make install does it as root)")
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": "/tmp"}
    env.pop("PYTHONPATH", None)
    res = subprocess.run([QGIS_PYTHON, str(ROOT / "scripts" / "qgis_check.py"), str(qgs)], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    report = json.loads(res.stdout[res.stdout.index("{"):])
    assert res.returncode == 0, report
    layers = report["layers"]
    assert {"missing in OSM", "in OSM, not seen", "offset", "imagery", "orthophoto.tif", "OSM building"} <= set(layers)
    assert all(v["valid"] for v in layers.values())
    assert report["groups"] == ["change layers", "predictions", "OSM", "imagery"]
    assert layers["orthophoto.tif"]["group"] == "imagery" and layers["OSM building"]["group"] == "OSM"
    assert all(v["features"] > 0 for v in layers.values() if v["type"] == "vector")


def test_config_change_reruns_compare_only(compared: tuple[Path, RegionConfig],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import tasks.base
    from tasks.compare import CompareWithOSM
    from tasks.vectorize import MergeFeatures, Vectorize

    path, cfg = compared
    # the truth stands in for PredictAll here too (MergeFeatures requires its source task)
    monkeypatch.setattr(tasks.base, "stage_task", given_predictions(tasks.base.stage_task))
    assert CompareWithOSM(config=str(path)).complete() and MergeFeatures(config=str(path)).complete()
    other = path.with_name("demo-compare-changed.toml")
    other.write_text(path.read_text() + "\n[compare]\nmatch_iou = 0.4\n")
    assert MergeFeatures(config=str(other)).complete()  # [compare] is not a vectorise key
    assert not CompareWithOSM(config=str(other)).complete()
    third = path.with_name("demo-vectorize-changed.toml")
    third.write_text(path.read_text().replace('source = "predictions"', 'source = "predictions"\nsimplify_m = 0.5'))
    shard = sorted(read_tile_index(cfg.data_dir / "masks").shard.unique())[0]
    assert not Vectorize(config=str(third), shard=shard).complete()
    assert not CompareWithOSM(config=str(third)).complete()


def test_compared_in_blocks_as_a_whole(compared: tuple[Path, RegionConfig], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same region compared in blocks of 2 x 2 tiles (read block by block from its files):
    still exactly the truth, and every OSM feature with the status the whole-region run gave it."""
    import tasks.base
    from tasks.compare import CompareWithOSM

    path, cfg = compared
    copy = tmp_path / "demo"
    shutil.copytree(cfg.data_dir, copy, ignore=shutil.ignore_patterns("compare", "*.lock"))
    blocks = tmp_path / "demo-blocks.toml"
    blocks.write_text(path.read_text().replace(f'"{cfg.data_dir}"', f'"{copy}"') + "\n[compare]\nblock_tiles = 2\n")
    assert load_config(blocks).data_dir == copy
    monkeypatch.setattr(tasks.base, "stage_task", given_predictions(tasks.base.stage_task))
    _build(CompareWithOSM(config=str(blocks)))
    summary = json.loads((copy / "compare" / "summary.json").read_text())
    assert summary["blocks"] > 4
    scores = truth_scores(copy)
    assert all(scores[k]["precision"] == scores[k]["recall"] == 1.0 for k in ("missing_in_osm", "not_seen", "offset")
               ), scores

    def statuses(folder: Path) -> dict[tuple[str, int], str]:
        return {(f["properties"]["osm_type"], f["properties"]["osm_id"]): s
                for s in ("matched", "offset", "not_seen", "unknown", "not_seen_lines")
                if (folder / f"{s}.geojson").is_file()
                for f in json.loads((folder / f"{s}.geojson").read_text())["features"]}

    assert statuses(copy / "compare") == statuses(cfg.data_dir / "compare")
    whole = json.loads((cfg.data_dir / "compare" / "summary.json").read_text())
    assert summary["classes"]["building"]["osm"] == whole["classes"]["building"]["osm"]
    assert summary["classes"]["building"]["f1"] == pytest.approx(whole["classes"]["building"]["f1"], abs=1e-3)
