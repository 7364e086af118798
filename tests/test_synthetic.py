"""The synthetic sample region: deterministic, valid OSM, a COG in UTM, truth that matches
the OSM extraction, and masks that agree with the rendered buildings."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import shapely
from numpy.typing import NDArray
from rasterio.warp import Resampling, reproject

from pipeline.config.region import RegionConfig, SyntheticConfig, load_config
from pipeline.synthetic import (
    Scene,
    Town,
    building_footprint,
    make_town,
    sample_paths,
    utm_epsg,
    write_sample_region,
)
from pipeline.synthetic.model import Road
from pipeline.synthetic.truth import is_building
from pipeline.synthetic.walls import shared_length, touching_pairs
from pipeline.tiles.tilemath import Tile, cover_lonlat, tile_transform

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.toml"
SIZE_M = 300.0  # small towns keep the tests fast
SEED = 11  # a 300 m town with a courtyard building, terraces, a lake, a car park and a roundabout


def _syn(**kw: object) -> SyntheticConfig:
    base = load_config(DEMO).synthetic
    assert base is not None
    return dataclasses.replace(base, **{"size_m": SIZE_M, "seed": SEED, **kw})  # type: ignore[arg-type]


def _write(folder: Path, syn: SyntheticConfig) -> dict[Path, int]:
    return write_sample_region(syn, folder / "demo.osm.pbf", folder / "orthophoto.tif", folder / "truth.geojson")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticConfig]:
    folder = tmp_path_factory.mktemp("sample")
    syn = _syn()
    _write(folder, syn)
    return folder, syn


@pytest.fixture(scope="module")
def town() -> Town:
    return make_town(_syn())


def _rows(folder: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads((folder / "truth.geojson").read_text())["features"]
    return rows


def _truth(folder: Path) -> list[dict[str, Any]]:
    """The truth's building rows."""
    return [f for f in _rows(folder) if is_building(f["properties"])]


def test_config_section(tmp_path: Path) -> None:
    from pipeline.core.errors import ConfigError

    syn = load_config(DEMO).synthetic
    assert syn is not None and syn.size_m == 700.0 and syn.centre == (32.58, 0.33)
    bad = tmp_path / "bad.toml"
    bad.write_text(DEMO.read_text().replace("jpeg_quality = 90", "jpeg_quality = 0"))
    with pytest.raises(ConfigError, match=r"synthetic\.jpeg_quality"):
        load_config(bad)


def test_same_seed_same_bytes_other_seed_other_town(sample: tuple[Path, SyntheticConfig], tmp_path: Path) -> None:
    folder, syn = sample
    again = tmp_path / "again"
    _write(again, syn)
    for name in ("demo.osm.pbf", "orthophoto.tif", "truth.geojson"):
        assert _sha(folder / name) == _sha(again / name), name
    other = tmp_path / "other"
    _write(other, dataclasses.replace(syn, seed=syn.seed + 1))
    for name in ("demo.osm.pbf", "orthophoto.tif", "truth.geojson"):
        assert _sha(folder / name) != _sha(other / name), name
    a = {f["properties"]["shape"] + str(f["geometry"]["coordinates"][0][0]) for f in _truth(folder)}
    b = {f["properties"]["shape"] + str(f["geometry"]["coordinates"][0][0]) for f in _truth(other)}
    assert not a & b


def test_town_has_the_promised_features(town: Town) -> None:
    highways = {r.highway for r in town.roads}
    assert {"primary", "residential"} <= highways and len(highways) >= 4
    assert any(r.junction == "roundabout" for r in town.roads)
    kinds = {a.kind for a in town.areas}
    assert "park" in kinds
    shapes = {b.shape for b in town.buildings}
    assert {"rect", "L"} <= shapes
    assert len(town.trees) > 50 and len(town.cars) > 5  # (none on the demolished streets)
    big = make_town(_syn(size_m=700.0, seed=3))
    assert {"water", "parking"} <= {a.kind for a in big.areas}
    assert any(b.geom.interiors for b in big.buildings)  # courtyards
    assert any(a.geom.interiors for a in big.areas if a.kind == "water")  # lake with an island
    areas = [b.geom.area for b in big.buildings]
    assert min(areas) < 20 and max(areas) > 1000  # sheds to industrial halls


def test_buildings_do_not_overlap_and_lie_inside_the_image(town: Town) -> None:
    geoms = np.array([b.geom for b in town.buildings], dtype=object)
    assert shapely.is_valid(geoms).all()
    a, b = touching_pairs(geoms)
    assert len(a)  # terraces and perimeter blocks touch: they may, but never overlap
    assert shapely.area(shapely.intersection(geoms[a], geoms[b])).max() < 0.01
    assert shapely.box(0, 0, town.size_m, town.size_m).contains(shapely.union_all(geoms))


def _walls(town: Town) -> tuple[NDArray[np.object_], NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Footprints, the pairs that touch, and the length (m) of the wall each pair shares."""
    geoms = np.array([b.geom for b in town.buildings], dtype=object)
    a, b = touching_pairs(geoms)
    return geoms, a, b, np.array([shared_length(geoms[i], geoms[j]) for i, j in zip(a, b)])


def test_dense_quarters_share_walls(town: Town) -> None:
    _, a, b, length = _walls(town)
    assert (length > 3.0).sum() > 15  # terraced houses side by side
    dense = set(a.tolist()) | set(b.tolist())
    kinds = {"demolished", "missing_in_osm"}
    assert kinds <= {town.buildings[i].status for i in dense}
    assert any(town.buildings[i].offset != (0.0, 0.0) for i in dense)


def test_demo_town_has_terraces_and_courtyard_blocks() -> None:
    syn = load_config(DEMO).synthetic
    assert syn is not None
    town = make_town(syn)
    geoms, a, b, length = _walls(town)
    assert (length > 3.0).sum() > 120
    dense = np.zeros(len(geoms), dtype=bool)
    dense[a], dense[b] = True, True
    share = shapely.area(geoms[dense]).sum() / shapely.area(geoms).sum()
    assert 0.18 < share < 0.32, share
    assert {"house", "apartments"} <= {town.buildings[i].use for i in np.flatnonzero(dense)}
    blocks = shapely.get_parts(shapely.union_all(shapely.buffer(geoms[dense], 0.05, join_style="mitre")))
    yards = [p for p in blocks if any(shapely.Polygon(r).area > 100.0 for r in p.interiors)]
    assert len(yards) >= 3  # rings of buildings around an open yard


def test_party_walls_are_drawn_darker(town: Town) -> None:
    scene = Scene(town)
    img = scene.render(0, 0, town.size_px, town.size_px).astype(float).mean(axis=2)
    segs = scene.roofs.party.reshape(-1, 4)
    segs = segs[np.isfinite(segs[:, 0])]
    assert len(segs) > 20
    d = segs[:, 2:] - segs[:, :2]
    normal = np.column_stack([-d[:, 1], d[:, 0]]) / np.hypot(d[:, 0], d[:, 1])[:, None]
    mid = (segs[:, :2] + segs[:, 2:]) / 2

    def lum(xy: NDArray[np.float64]) -> NDArray[np.float64]:
        col, row = ~town.local_transform @ (xy[:, 0], xy[:, 1])
        return img[np.floor(row).astype(int), np.floor(col).astype(int)]

    step = (lum(mid + 1.2 * normal) + lum(mid - 1.2 * normal)) / 2 - lum(mid)
    # a thin darker line between the roofs, as between real terraced houses: there, but faint
    assert 3.0 < np.median(step) < 30.0, np.median(step)


def test_status_shares(town: Town) -> None:
    syn = _syn()
    n = len(town.buildings)
    status = [b.status for b in town.buildings]
    n_dem = status.count("demolished")
    assert n_dem == round(syn.share_demolished * n)
    assert status.count("missing_in_osm") == round(syn.share_missing * (n - n_dem))
    offsets = [np.hypot(*b.offset) for b in town.buildings if b.offset != (0.0, 0.0)]
    assert offsets and all(1.0 <= o <= 2.0 for o in offsets)
    assert all(b.status == "mapped" for b in town.buildings if b.offset != (0.0, 0.0))


def test_osmium_reads_the_pbf(sample: tuple[Path, SyntheticConfig]) -> None:
    osmium_bin = shutil.which("osmium")
    if osmium_bin is None:
        pytest.skip("osmium-tool is not installed (apt-get install osmium-tool)")
    pbf = sample[0] / "demo.osm.pbf"
    info = subprocess.run([osmium_bin, "fileinfo", "-e", "-j", str(pbf)], capture_output=True, text=True, check=True)
    data = json.loads(info.stdout)["data"]
    assert data["objects_ordered"] is True and data["multiple_versions"] is False
    assert data["count"]["nodes"] > 100 and data["count"]["ways"] > 20 and data["count"]["relations"] >= 1
    refs = subprocess.run([osmium_bin, "check-refs", "-r", str(pbf)], capture_output=True, text=True, check=False)
    assert refs.returncode == 0, refs.stderr


def test_orthophoto_is_a_utm_cog(sample: tuple[Path, SyntheticConfig]) -> None:
    folder, syn = sample
    with rasterio.open(folder / "orthophoto.tif") as src:
        assert src.crs.to_epsg() == utm_epsg(*syn.centre) == 32636
        assert src.count == 3 and src.dtypes == ("uint8",) * 3
        assert src.res == pytest.approx((syn.resolution_m, syn.resolution_m))
        assert src.width == round(SIZE_M / syn.resolution_m)
        assert src.profile["tiled"] and src.compression.name.lower() == "jpeg"
        assert src.overviews(1)
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        rgb = src.read()
    # an aerial photo, not a flat diagram: many distinct colours, texture everywhere
    assert len(np.unique(rgb.reshape(3, -1)[:, ::7], axis=1).T) > 5000
    assert rgb[:, 1:, :].astype(int).__sub__(rgb[:, :-1, :]).std() > 4


def test_truth_matches_the_osm_extraction(sample: tuple[Path, SyntheticConfig]) -> None:
    import osmium

    from pipeline.labels.osm import extract_features
    from pipeline.tiles.geo import to_mercator

    folder, _ = sample
    cfg = load_config(DEMO)
    feats = extract_features(folder / "demo.osm.pbf", cfg.classes)
    got = feats[feats["class"] == "building"]
    truth = _truth(folder)
    in_osm = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in truth
              if f["properties"]["status"] in ("mapped", "demolished")}
    assert {(t, int(i)) for t, i in zip(got["osm_type"], got["osm_id"])} == in_osm
    assert all(f["properties"]["osm_id"] is None for f in truth if f["properties"]["status"] == "missing_in_osm")
    assert "relation" in set(got["osm_type"])  # courtyard multipolygons are found
    # geometry: what OSM has equals the truth, except the shifted ones
    by_key = {(f["properties"]["osm_type"], f["properties"]["osm_id"]): f for f in truth}
    for t, i, g in zip(got["osm_type"], got["osm_id"], got.geometry):
        f = by_key[(t, int(i))]
        tg = shapely.geometry.shape(f["geometry"])
        iou = shapely.intersection(g, tg).area / shapely.union(g, tg).area
        assert iou > 0.999 if f["properties"]["offset_m"] == 0 else iou < 0.97
    roads = feats[feats["class"] == "road"]
    assert len(roads) > 5
    # terraced houses are separate ways, side by side, sharing the nodes of their common wall
    merc = to_mercator(np.array(got.geometry, dtype=object))
    a, b = touching_pairs(merc)
    assert sum(shared_length(merc[i], merc[j]) > 3.0 for i, j in zip(a, b)) > 10
    refs: dict[int, int] = {}
    for w in osmium.FileProcessor(str(folder / "demo.osm.pbf")).with_filter(osmium.filter.KeyFilter("building")):
        if isinstance(w, osmium.osm.Way):
            for n in {r.ref for r in w.nodes}:
                refs[n] = refs.get(n, 0) + 1
    assert sum(c > 1 for c in refs.values()) > 20


def test_masks_agree_with_rendered_buildings(sample: tuple[Path, SyntheticConfig], town: Town) -> None:
    from pipeline.labels.osm import extract_features
    from pipeline.tiles.masks import burn_tile, prepare_burn

    folder, _ = sample
    cfg = load_config(DEMO)
    building = cfg.class_by_name("building")
    feats = extract_features(folder / "demo.osm.pbf", cfg.classes)
    truth = _truth(folder)
    exact = {f["properties"]["id"] for f in truth
             if f["properties"]["status"] == "mapped" and f["properties"]["offset_m"] == 0}
    exact_osm = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in truth
                 if f["properties"]["id"] in exact}
    keep = [(t, int(i)) in exact_osm and c == "building"
            for t, i, c in zip(feats["osm_type"], feats["osm_id"], feats["class"])]
    burn = prepare_burn(feats[keep], (building,))
    ids = building_footprint(town)
    drawn = np.isin(ids, list(exact)).astype(np.uint8)
    tiles = [Tile(cfg.zoom, int(x), int(y)) for x, y in cover_lonlat(np.array(
        [shapely.geometry.shape(f["geometry"]) for f in truth], dtype=object), cfg.zoom)]
    ious = []
    for t in tiles:
        dst = np.zeros((cfg.tile_size, cfg.tile_size), dtype=np.uint8)
        reproject(drawn, dst, src_transform=town.utm_transform, src_crs=f"EPSG:{town.epsg}",
                  dst_transform=tile_transform(t, cfg.tile_size), dst_crs="EPSG:3857", resampling=Resampling.nearest)
        mask = burn_tile(burn, t, cfg.tile_size) == building.id
        if mask.sum() < 2000:  # tiles cut by the image edge or with few buildings
            continue
        ious.append((mask & (dst > 0)).sum() / (mask | (dst > 0)).sum())
    assert len(ious) >= 3
    assert min(ious) >= 0.95, ious


def test_footprint_is_what_the_renderer_paints(town: Town) -> None:
    scene = Scene(town)
    ids = scene.footprint(100, 200, 300, 400)
    full = building_footprint(town, scene)
    assert np.array_equal(ids, full[100:400, 200:600])
    drawn = {b.id for b in town.buildings if b.in_image}
    assert set(np.unique(full)) - {0} <= drawn
    assert not set(np.unique(full)) & {b.id for b in town.buildings if not b.in_image}


def test_windows_join_without_seams(town: Town) -> None:
    scene = Scene(town)
    whole = scene.render(0, 0, 256, 256)
    top = np.concatenate([scene.render(0, 0, 128, 128), scene.render(0, 128, 128, 128)], axis=1)
    bottom = np.concatenate([scene.render(128, 0, 128, 128), scene.render(128, 128, 128, 128)], axis=1)
    assert np.array_equal(whole, np.concatenate([top, bottom], axis=0))


def test_make_sample_region_task(tmp_path: Path) -> None:
    import luigi

    from tasks.synthetic import MakeSampleRegion

    text = DEMO.read_text().replace('"data/demo', f'"{tmp_path}/demo').replace("size_m = 700.0", f"size_m = {SIZE_M}")
    text = text.replace("seed = 7", f"seed = {SEED}")
    cfg_path = tmp_path / "demo.toml"
    cfg_path.write_text(text)
    cfg: RegionConfig = load_config(cfg_path)
    task = MakeSampleRegion(config=str(cfg_path))
    assert luigi.build([task], local_scheduler=True, detailed_summary=True).status.name == "SUCCESS"
    assert task.complete()
    manifest = json.loads(task.manifest_path().read_text())
    assert task.manifest_path() == cfg.data_dir / "_manifests" / "synthetic.json"
    assert set(manifest["files"]) == {"demo.osm.pbf", "orthophoto.tif", "truth.geojson"}
    for p in sample_paths(cfg):
        assert p.stat().st_size == manifest["files"][p.name]["size"]
    # a changed generator parameter makes the task incomplete again
    other = tmp_path / "demo-seed8.toml"  # (luigi caches task instances by parameters)
    other.write_text(text.replace(f"seed = {SEED}", f"seed = {SEED + 1}"))
    assert not MakeSampleRegion(config=str(other)).complete()


def test_some_side_streets_are_missing_from_osm_and_some_gone_from_the_image(
        sample: tuple[Path, SyntheticConfig], town: Town) -> None:
    from pipeline.labels.osm import extract_features
    from pipeline.synthetic.generate import _SIDE_STREETS
    from pipeline.tiles.geo import to_mercator

    folder, syn = sample
    by_status = {s: [r for r in town.roads if r.status == s] for s in ("missing_in_osm", "demolished")}
    side = [r for r in town.roads if r.highway in _SIDE_STREETS and r.junction is None and r.name and
            r.line.length >= 30.0]
    n = max(1, round(syn.share_roads * len(side)))
    assert len(by_status["missing_in_osm"]) == len(by_status["demolished"]) == n >= 1
    assert all(r.highway in _SIDE_STREETS and r.junction is None for rs in by_status.values() for r in rs)
    roads = [f for f in _rows(folder) if f["properties"].get("class") == "road"]
    assert [f["properties"]["status"] for f in roads].count("missing_in_osm") == n
    assert [f["properties"]["status"] for f in roads].count("demolished") == n
    assert all(f["geometry"]["type"] == "LineString" and f["properties"]["length_m"] >= 30.0 for f in roads)
    assert all(f["properties"]["osm_id"] is None for f in roads if f["properties"]["status"] == "missing_in_osm")
    # the OSM file has the removed roads (by id, same line) and lacks the missing ones
    feats = extract_features(folder / "demo.osm.pbf", load_config(DEMO).classes)
    osm = feats[feats["class"] == "road"]
    osm_geoms = {(t, int(i)): g for t, i, g in zip(osm["osm_type"], osm["osm_id"], osm.geometry)}
    for f in roads:
        line = to_mercator(np.array([shapely.geometry.shape(f["geometry"])], dtype=object))[0]
        if f["properties"]["status"] == "demolished":
            g = osm_geoms[(f["properties"]["osm_type"], f["properties"]["osm_id"])]
            assert shapely.hausdorff_distance(to_mercator(np.array([g], dtype=object))[0], line) < 0.01
        else:  # no OSM road runs along it (only the streets it joins touch its ends)
            near = shapely.union_all(shapely.buffer(to_mercator(osm.geometry.to_numpy()), 2.0))
            assert shapely.length(shapely.intersection(line, near)) < 0.2 * line.length
    # the image paints the missing roads and not the removed ones: asphalt (grey) or grass (green) at their middle
    img = Scene(town).render(0, 0, town.size_px, town.size_px).astype(float)

    def greenness(r: Road) -> float:
        mid = shapely.line_interpolate_point(r.line, 0.5, normalized=True)
        col, row = ~town.local_transform @ (mid.x, mid.y)
        px = img[int(row) - 2:int(row) + 3, int(col) - 2:int(col) + 3].reshape(-1, 3).mean(axis=0)
        return float(px[1] - (px[0] + px[2]) / 2)

    assert max(greenness(r) for r in by_status["missing_in_osm"]) < min(greenness(r) for r in by_status["demolished"])


def test_painted_roads_against_the_osm_file_find_exactly_the_road_truth(
        sample: tuple[Path, SyntheticConfig], town: Town, tmp_path: Path) -> None:
    """The image's streets standing in for predicted centrelines: compare_lines finds exactly the
    roads the truth marks missing in OSM and demolished, and the truth score says so."""
    import geopandas as gpd
    from pyproj import Transformer

    from pipeline.labels.osm import extract_features
    from pipeline.review.compare_lines import compare_lines
    from pipeline.synthetic.score import flat_scores, truth_scores

    folder, _ = sample
    cfg = load_config(DEMO)
    road = cfg.class_by_name("road")
    tr = Transformer.from_crs(town.epsg, 4326, always_xy=True)
    painted = [shapely.transform(r.line, lambda c: np.column_stack(tr.transform(c[:, 0] + town.left,
                                                                                  c[:, 1] + town.bottom)))
               for r in town.roads if r.in_image]
    n = len(painted)
    pred = gpd.GeoDataFrame({"class": ["road"] * n, "prob_mean": [1.0] * n, "prob_max": [1.0] * n}, geometry=painted,
                            crs=4326)
    feats = extract_features(folder / "demo.osm.pbf", cfg.classes)
    missing, not_seen = compare_lines(pred, feats[feats["class"] == "road"], road, road.buffer_m, 10.0, 0.5)
    truth = [f["properties"] for f in _rows(folder) if f["properties"].get("class") == "road"]
    removed = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "demolished"}
    assert set(zip(not_seen["osm_type"], not_seen["osm_id"])) == removed
    assert len(missing) == sum(t["status"] == "missing_in_osm" for t in truth)
    # the truth score on these layers (written as the compare stage would), buildings left out
    (tmp_path / "compare").mkdir()
    shutil.copy(folder / "truth.geojson", tmp_path / "truth.geojson")
    for name, rows in (("missing_in_osm", missing), ("not_seen", not_seen), ("offset", missing.iloc[:0])):
        gpd.GeoDataFrame(rows, geometry="geometry", crs=4326).to_file(tmp_path / "compare" / f"{name}.geojson")
    scores = truth_scores(tmp_path, road_tol_m=road.buffer_m)
    roads = scores["roads"]
    assert roads["missing_in_osm"]["precision"] == roads["missing_in_osm"]["recall"] == 1.0, roads
    assert roads["not_seen"]["precision"] == roads["not_seen"]["recall"] == 1.0, roads
    assert scores["missing_in_osm"]["found"] == 0 and scores["missing_in_osm"]["recall"] == 0.0
    assert {"roads missing_in_osm", "roads not_seen", "missing_in_osm"} <= set(flat_scores(scores))


def _copied_config(tmp_path: Path, data: Path, osm: Path) -> Path:
    """The demo config with its own ``data_dir`` but ``[osm] path`` at ``osm``."""
    text = DEMO.read_text().replace('data_dir = "data/demo"', f'data_dir = "{data}"')
    text = text.replace('"data/demo/demo.osm.pbf"', f'"{osm}"').replace('"data/demo/', f'"{data}/')
    p = tmp_path / f"{data.name}.toml"
    p.write_text(text)
    return p


def test_a_copied_config_cannot_rewrite_another_regions_inputs(tmp_path: Path) -> None:
    import luigi

    from pipeline.core.errors import ConfigError
    from pipeline.synthetic import check_sample_outputs
    from tasks.synthetic import MakeSampleRegion

    other = tmp_path / "demo" / "demo.osm.pbf"  # another region's generated extract
    other.parent.mkdir()
    other.write_bytes(b"the other region's extract")
    cfg = load_config(_copied_config(tmp_path, tmp_path / "copy", other))
    with pytest.raises(ConfigError, match=r"\[osm\] path .*demo\.osm\.pbf lies outside this region's data_dir"):
        check_sample_outputs(cfg, set())
    check_sample_outputs(cfg, {other})  # the region's own earlier output: rewritten
    res = luigi.build([MakeSampleRegion(config=str(cfg.path))], local_scheduler=True, detailed_summary=True,
                      log_level="CRITICAL")
    assert not res.scheduling_succeeded
    assert other.read_bytes() == b"the other region's extract"
    assert not (tmp_path / "copy" / "orthophoto.tif").exists()  # nothing generated
    inside = load_config(_copied_config(tmp_path, tmp_path / "d2", tmp_path / "d2" / "x.osm.pbf"))
    (tmp_path / "d2").mkdir()
    (tmp_path / "d2" / "x.osm.pbf").write_bytes(b"old")
    check_sample_outputs(inside, set())  # inside its own data_dir: its to rewrite
    check_sample_outputs(load_config(_copied_config(tmp_path, tmp_path / "d3", tmp_path / "new.osm.pbf")), set())


def test_score_command_bad_input_is_one_line(tmp_path, capsys):
    from pipeline.synthetic.score import main

    assert main([str(tmp_path / "none.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none.toml" in err[0]
    assert main(["--help"]) == 2 and "usage:" in capsys.readouterr().err


def test_road_recall_counts_what_the_imagery_shows():
    """A missing road half outside the tiles with imagery, found where the imagery is: recall 0.5
    over its whole length, 1.0 over what a model could see."""
    from pipeline.synthetic.score import road_scores
    from pipeline.tiles.geo import to_lonlat

    road = np.array([shapely.LineString([(0, 0), (200, 0)])], dtype=object)  # EPSG:3857 metres
    cand = np.array([shapely.LineString([(0, 0), (100, 0)])], dtype=object)
    ll = [shapely.geometry.mapping(g) for g in to_lonlat(np.r_[road, cand])]
    truth = [{"status": "missing_in_osm", "geometry": ll[0], "osm_type": None, "osm_id": None}]
    layer = {"missing_in_osm": [{"geometry": ll[1], "properties": {"class": "road"}}], "not_seen": []}
    imagery = shapely.box(-50, -50, 100, 50)
    got = road_scores(truth, layer, 4.0, imagery)["missing_in_osm"]
    assert got["recall"] == pytest.approx(0.5, abs=0.03) and got["recall_in_imagery"] == pytest.approx(1.0, abs=0.01)
    assert got["precision"] == 1.0
    assert road_scores(truth, layer, 4.0)["missing_in_osm"]["recall_in_imagery"] is None
