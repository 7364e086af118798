"""The registries where the project grows: an imagery source and a comparison status, each added
here in a few lines, flow through everything that lists them.

* A source ``solid`` (every tile one colour, its own key ``color``): config parsing and its errors,
  the imagery stage's digest (its input files, its own key), and the Luigi imagery stage on a tiny
  region (shards, manifests, no plan, no server resource).
* A status ``demolished``: the comparison's layers and counts, the compare task's outputs, the QGIS
  layer list, the report page's layers and legend, ``map.png``'s legend and ``report.md``.
* The README's legend and its list of change layers are the registry's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import luigi
import pytest

from pipeline.config.region import load_config
from pipeline.config.section import Section
from pipeline.core.errors import ConfigError
from pipeline.core.stages import stage_digest, stage_inputs
from pipeline.imagery.registry import ImagerySource, Location, ShardJob, ShardResult, register_source, unregister_source
from pipeline.review.statuses import Status, legend_text, register_status, status_names, unregister_status
from pipeline.tiles.tilemath import Tile
from tests.conftest import ROOT
from tests.test_imagery_task import SHARD_ZOOM, ZOOM, region
from tests.town import write_town_config

TILES = [Tile(ZOOM, 305000 + dx, 190000 + dy) for dx in range(3) for dy in range(2)]


def _solid_check(sec: Section, loc: Location) -> dict[str, Any]:
    color = sec.take("color", list)
    if len(color) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in color):
        raise ConfigError(f"{sec.key('color')} must be [r, g, b] with values 0-255")
    return {"color": color}


def _solid_shard(job: ShardJob) -> ShardResult:
    import numpy as np

    from pipeline.imagery.common import TileRecord, encode_tile
    from pipeline.tiles.writer import TileStatus

    rgb = np.array(job.icfg.option("color"), dtype=np.uint8)[:, None, None]
    data = encode_tile(np.broadcast_to(rgb, (3, job.size, job.size)).copy(), "png")
    records = []
    for t in job.tiles:
        sha = job.out.write(t, data, "png")
        records.append(TileRecord(t, TileStatus.OK, "png", len(data), sha))
    return ShardResult(records)


@pytest.fixture
def solid() -> Iterator[ImagerySource]:
    """The source ``solid``, registered for one test."""
    src = register_source(ImagerySource(
        "solid", "every tile one colour (`color` = [r, g, b]); `paths`: files that enter the digest",
        _solid_shard, lambda icfg: {"type": "solid", "color": icfg.option("color")},
        keys=("paths",), check=_solid_check, inputs=lambda icfg: list(icfg.paths), tile_exts=("png",)))
    yield src
    unregister_source("solid")


def test_a_registered_source_parses_and_enters_the_digest(tmp_path: Path, solid: ImagerySource) -> None:
    licence = tmp_path / "licence.txt"
    licence.write_text("CC0")

    def cfg(imagery: str) -> Any:
        return load_config(write_town_config(tmp_path / "r.toml", tmp_path / "x.pbf", tmp_path / "d",
                                             extra="\n[imagery]\n" + imagery))

    c = cfg(f'source = "solid"\ncolor = [10, 200, 30]\npaths = ["{licence}"]')
    assert c.imagery is not None and c.imagery.source == "solid" and c.imagery.option("color") == [10, 200, 30]
    assert stage_inputs(c, "imagery") == [licence]
    other = cfg(f'source = "solid"\ncolor = [10, 200, 31]\npaths = ["{licence}"]')
    assert stage_digest(c, "imagery") != stage_digest(other, "imagery")  # its own key is in the digest
    assert stage_digest(c, "cover") == stage_digest(other, "cover")  # and only in the imagery stage's
    with pytest.raises(ConfigError, match=r"imagery\.color must be \[r, g, b\]"):
        cfg('source = "solid"\ncolor = [1, 2]')
    with pytest.raises(ConfigError, match=r"imagery\.url is only for source = 'xyz' or 'wms'"):
        cfg('source = "solid"\ncolor = [1, 2, 3]\nurl = "https://t.example/{z}/{x}/{y}.png"')
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[imagery\]: colour"):
        cfg('source = "solid"\ncolor = [1, 2, 3]\ncolour = [1, 2, 3]')
    unregister_source("solid")
    with pytest.raises(ConfigError, match=r"imagery\.source = 'solid'; choose one of raster, xyz, wms, tiles"):
        cfg('source = "solid"\ncolor = [1, 2, 3]')


def test_a_registered_source_makes_the_imagery_stage(tmp_path: Path, solid: ImagerySource) -> None:
    from pipeline.imagery.shard import refetch_cutoff, server_resource
    from pipeline.tiles.index import read_tile_index
    from tasks.imagery import FetchImagery, ImageryAll, ImageryPlan
    cfg = region(tmp_path, 'source = "solid"\ncolor = [0, 128, 255]', TILES)
    icfg = load_config(cfg).imagery
    assert server_resource(icfg) is None and refetch_cutoff(icfg, 1.0, True, 0.0) is None
    shard = FetchImagery(config=str(cfg), shard=_shard(TILES[0]))
    assert not any(isinstance(t, ImageryPlan) for t in shard.requires()) and shard.resources == {}
    assert luigi.build([ImageryAll(config=str(cfg))], local_scheduler=True, log_level="WARNING")
    index = read_tile_index(tmp_path / "data" / "images")
    assert len(index) == len(TILES) and set(index.path.astype(str).str[-4:]) == {".png"}
    manifest = json.loads(next((tmp_path / "data" / "images" / "_shards").glob("*.json")).read_text())
    assert manifest["source"] == {"type": "solid", "color": [0, 128, 255]}


def _shard(t: Tile) -> str:
    from pipeline.tiles.tilemath import shard_of

    return shard_of(t, SHARD_ZOOM)


@pytest.fixture
def demolished() -> Iterator[Status]:
    """The status ``demolished`` (cyan, between missing in OSM and not seen), registered for one test."""
    status = register_status(Status("#00ffff", "cyan", "demolished", "demolished", 15))
    yield status
    unregister_status("demolished")


def test_a_registered_status_flows_through_every_list(tmp_path: Path, demolished: Status) -> None:
    import geopandas as gpd
    import shapely

    from pipeline.config.region import ClassSpec, TagFilter
    from pipeline.review.compare_report import map_png, report_md
    from pipeline.review.qgis import region_layers
    from pipeline.review.region_report import map_layers

    assert status_names()[:3] == ("missing_in_osm", "demolished", "not_seen")
    building = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
    layers = region_layers((building,), ["demolished", "not_seen"], [], [])
    assert [(lyr.name, lyr.color, lyr.source) for lyr in layers[:2]] == [
        ("demolished", "#00ffff", "./compare/demolished.geojson"), ("in OSM, not seen", "#ffd92f",
                                                                     "./compare/not_seen.geojson")]
    assert ("demolished", "compare/demolished.geojson", "#00ffff", True) in map_layers()  # the report page
    assert "red = missing in OSM; cyan = demolished; yellow = in OSM, not seen;" in legend_text()
    summary = {"match_iou": 0.5, "offset_m": 2, "score_iou": 0.5, "classes": {}}
    assert "`demolished.geojson` (cyan)" in report_md("r", summary, "map.png")
    square = gpd.GeoDataFrame({"class": ["building"]}, geometry=[shapely.box(25.0, 60.0, 25.0001, 60.0001)],
                              crs="EPSG:4326")
    assert map_png({"demolished": square})[:4] == b"\x89PNG"
    cfg = write_town_config(tmp_path / "r.toml", tmp_path / "x.pbf", tmp_path / "d")
    from tasks.compare import CompareWithOSM

    owned = {p.name for p in CompareWithOSM(config=str(cfg)).owned_files()}
    assert {"demolished.geojson", "demolished.qml", "demolished_lines.geojson"} <= owned


def test_a_registered_status_gets_a_layer_and_a_count(demolished: Status) -> None:
    import geopandas as gpd
    import shapely

    from pipeline.config.region import ClassSpec, TagFilter
    from pipeline.review.compare import CompareSpec, compare

    building = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
    box = shapely.box(25.0, 60.0, 25.0002, 60.0001)
    pred = gpd.GeoDataFrame({"class": ["building"], "prob_mean": [0.9], "prob_max": [0.99]}, geometry=[box],
                            crs="EPSG:4326")
    osm = gpd.GeoDataFrame({"class": ["building"], "osm_type": ["way"], "osm_id": [1]}, geometry=[box],
                           crs="EPSG:4326")
    res = compare(pred, osm, (building,), CompareSpec())
    assert list(res.layers) == list(status_names()) and len(res.layers["demolished"]) == 0
    assert res.summary["counts"]["demolished"] == 0 and res.summary["counts"]["matched"] == 1


def test_the_readme_legend_is_the_registry() -> None:
    """Every legend in words in the README is exactly :func:`legend_text`, and its list of change
    layers is the registry's, in order."""
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    legend = legend_text()
    starts = [m.start() for m in re.finditer(r"\b\w+ = missing in OSM; ", readme)]  # not a figure's "cyan = ..., "
    assert starts, "the README has no legend"
    for i in starts:
        assert readme[i:i + len(legend)] == legend
    assert "compare/{" + ",".join(status_names()) + "}.geojson" in readme
