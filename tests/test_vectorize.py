"""Vectorisation: tile tracing in global pixels, merging across tile and shard borders (one
polygon, no seam slivers), centrelines joined across tiles, filters, regularisation, outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize

from pipeline.config.region import ClassSpec, ConfigError, TagFilter
from pipeline.inference.probs import encode_probs
from pipeline.model.metrics import iou
from pipeline.tiles.geo import to_lonlat, to_mercator
from pipeline.tiles.tilemath import Tile, shard_of, tile_bounds, tile_transform
from pipeline.vectors.finish import finish, finish_shard, sort_features
from pipeline.vectors.merge import empty_pieces
from pipeline.vectors.regularize import regularize
from pipeline.vectors.vector_io import geojson_bytes, read_pieces, write_gpkg, write_pieces
from pipeline.vectors.vectorize import (
    VectorizeSpec,
    cached_loader,
    is_building_class,
    mask_to_probs,
    parse_vectorize,
    read_tile,
    region_pieces,
    regularized_classes,
    shard_box_px,
    shard_pieces,
    threshold_u8,
)

Z, SIZE, SHARD_Z = 19, 64, 18
BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
ROAD = ClassSpec("road", 2, "line", 10, (TagFilter("highway", ("residential",)),), buffer_m=4.0)
CLASSES = (BUILDING, ROAD)
# four tiles around a corner that is also the corner of four z18 shards (x, y = 2k-1 | 2k)
X0, Y0 = 2 * 150_000 - 1, 2 * 130_000 - 1
TILES = [Tile(Z, X0 + i, Y0 + j) for i in range(2) for j in range(2)]


def burn(geoms_3857: list[shapely.Geometry], band: int, tiles: list[Tile] = TILES) -> dict[Tile, np.ndarray]:
    """Probability tiles (2 bands) with the geometries burnt at 255 into ``band``, 0 elsewhere."""
    out = {}
    for t in tiles:
        arr = np.zeros((2, SIZE, SIZE), dtype=np.uint8)
        arr[band] = rasterize(geoms_3857, (SIZE, SIZE), transform=tile_transform(t, SIZE), default_value=255)
        out[t] = arr
    return out


def vectorise(probs: dict[Tile, np.ndarray], spec: VectorizeSpec | None = None) -> Any:
    """Shard by shard (z18 shards), then the region merge, then finish -> EPSG:4326 features."""
    spec = spec or VectorizeSpec()
    load = cached_loader(probs.get, CLASSES)
    shards = sorted({shard_of(t, SHARD_Z) for t in probs})
    done, open_parts = [], []
    for k, s in enumerate(shards):  # as Vectorize (per shard) and MergeFeatures do
        pieces = shard_pieces([t for t in probs if shard_of(t, SHARD_Z) == s], load, CLASSES, spec.threshold,
                              shard_box_px(s, Z, SIZE), k)
        finished, still_open = finish_shard(pieces, CLASSES, spec, Z, SIZE)
        done.append(finished)
        open_parts.append(still_open)
    return sort_features([*done, finish(region_pieces(open_parts), CLASSES, spec, Z, SIZE)])


def corner() -> tuple[float, float]:
    left, _, _, top = tile_bounds(TILES[-1])
    return left, top  # the shared corner of the four tiles (EPSG:3857)


def test_mask_adapter_and_threshold() -> None:
    mask = np.array([[0, 1, 2], [255, 1, 0]], dtype=np.uint8)
    p = mask_to_probs(mask, [1, 2])
    assert p.shape == (2, 2, 3) and p.dtype == np.uint8
    assert p[0].tolist() == [[0, 255, 0], [0, 255, 0]]
    assert p[1].tolist() == [[0, 0, 255], [0, 0, 0]]  # ignore (255) is 0 in every band
    assert threshold_u8(0.5) == 128 and threshold_u8(0.0) == 1 and threshold_u8(1.0) == 255
    sq = mask_to_probs(np.tile(mask, (2, 1))[:3, :3], [1, 2])  # tiles are square
    assert np.array_equal(read_tile(encode_probs(sq), "predictions", [1, 2], "t"), sq)


def test_building_over_a_tile_and_shard_corner_is_one_polygon_without_slivers() -> None:
    cx, cy = corner()
    res = (tile_bounds(TILES[0])[2] - tile_bounds(TILES[0])[0]) / SIZE
    # an L-shaped courtyard building across the corner, with a hole that straddles it too
    outer = shapely.Polygon([(cx - 20 * res, cy - 15 * res), (cx + 25 * res, cy - 15 * res),
                             (cx + 25 * res, cy + 5 * res), (cx + 5 * res, cy + 5 * res),
                             (cx + 5 * res, cy + 18 * res), (cx - 20 * res, cy + 18 * res)])
    hole = shapely.box(cx - 6 * res, cy - 6 * res, cx + 4 * res, cy + 3 * res)
    building = outer.difference(hole)
    out = vectorise(burn([building], 0), VectorizeSpec(simplify_m=0.0, min_hole_m2=0.0))
    polys = out[out["class"] == "building"]
    assert len(polys) == 1
    g = to_mercator(polys.geometry.to_numpy())[0]
    assert g.geom_type == "Polygon" and shapely.is_valid(g)
    assert len(g.interiors) == 1  # the hole, merged from four tiles' pieces
    assert iou(np.array([g]), np.array([building]))[0] > 0.999
    # no seam sliver: every vertex is a real corner of the outline (none left on the tile borders)
    ring = shapely.get_coordinates(g.exterior)[:-1]
    assert len(ring) == 6
    assert polys["prob_mean"].iloc[0] == 1.0 and polys["prob_max"].iloc[0] == 1.0


def test_only_border_pieces_are_merged_and_counts_add_up() -> None:
    cx, cy = corner()
    res = (tile_bounds(TILES[0])[2] - tile_bounds(TILES[0])[0]) / SIZE
    inside = shapely.box(cx - 40 * res, cy + 30 * res, cx - 30 * res, cy + 40 * res)  # in one tile
    across = shapely.box(cx - 5 * res, cy + 10 * res, cx + 5 * res, cy + 20 * res)  # across one border
    diagonal = [shapely.box(cx - 8 * res, cy - 8 * res, cx, cy), shapely.box(cx, cy, cx + 8 * res, cy + 8 * res)]
    out = vectorise(burn([inside, across, *diagonal], 0), VectorizeSpec(simplify_m=0.0, min_area_m2=0.0))
    areas = sorted(out["area_m2"].round(1))
    # corner-only contact is not a connection (4-connectivity, as traced): two squares stay apart
    assert len(out) == 4
    assert areas[-1] == pytest.approx(areas[0] * 100 / 64, rel=0.02)


def test_centreline_crosses_tiles_as_one_line() -> None:
    cx, cy = corner()
    res = (tile_bounds(TILES[0])[2] - tile_bounds(TILES[0])[0]) / SIZE
    road = shapely.LineString([(cx - 60 * res, cy - 20 * res), (cx + 60 * res, cy + 25 * res)]).buffer(
        4 * res, cap_style="flat")
    out = vectorise(burn([road], 1), VectorizeSpec(line_simplify_m=0.5, min_length_m=0.0))
    lines = out[out["class"] == "road"]
    assert len(lines) == 1, lines
    g = to_mercator(lines.geometry.to_numpy())[0]
    assert g.geom_type == "LineString"
    expect = np.hypot(120, 45) * res / 1.0
    scale = 1 / np.cos(np.radians(to_lonlat(np.array([g]))[0].centroid.y))
    assert lines["length_m"].iloc[0] == pytest.approx(expect / scale, rel=0.08)
    # the line runs inside the road band
    assert shapely.length(shapely.intersection(g, road.buffer(res))) / g.length > 0.99


def test_filters_and_regularisation() -> None:
    cx, cy = corner()
    res = (tile_bounds(TILES[0])[2] - tile_bounds(TILES[0])[0]) / SIZE
    tiny = shapely.box(cx - 40 * res, cy - 40 * res, cx - 39 * res, cy - 39 * res)  # one 1.2 m pixel
    # a rotated house with a small courtyard hole
    house = shapely.affinity.rotate(shapely.box(cx + 5 * res, cy + 5 * res, cx + 45 * res, cy + 30 * res), 20)
    house = house.difference(shapely.box(cx + 20 * res, cy + 15 * res, cx + 21 * res, cy + 16 * res))
    spec = VectorizeSpec(min_area_m2=2.0, min_hole_m2=2.0, regularize=("building",))
    out = vectorise(burn([tiny, house], 0), spec)
    assert len(out) == 1  # the tiny square (1.4 m²) is gone
    g = to_mercator(out.geometry.to_numpy())[0]
    assert len(g.interiors) == 0  # the hole (1.4 m²) is filled
    raw = vectorise(burn([tiny, house], 0), VectorizeSpec(min_area_m2=2.0, min_hole_m2=2.0, simplify_m=0.0,
                                                          regularize=()))
    r = to_mercator(raw.geometry.to_numpy())[0]
    assert iou(np.array([g]), np.array([r]))[0] >= 0.9
    assert shapely.get_num_coordinates(g) < shapely.get_num_coordinates(r)
    # regularise() keeps the raw polygon when the result would drift below the IoU floor
    kept = regularize(np.array([r]), min_iou=1.01)
    assert kept[0].equals(r)
    # buildings are regularised by default (the key left out); ``regularize = []`` turns it off
    by_default = vectorise(burn([tiny, house], 0), VectorizeSpec(min_area_m2=2.0, min_hole_m2=2.0))
    assert to_mercator(by_default.geometry.to_numpy())[0].equals(g)


def test_outputs_geojson_gpkg_pieces(tmp_path: Path) -> None:
    import pyogrio

    cx, cy = corner()
    out = vectorise(burn([shapely.box(cx - 3, cy - 3, cx + 4, cy + 2)], 0))
    data = json.loads(geojson_bytes(out, "predictions"))
    assert data["type"] == "FeatureCollection" and len(data["features"]) == 1
    props = data["features"][0]["properties"]
    assert set(props) >= {"class", "prob_mean", "prob_max", "area_m2"}
    for x, y in data["features"][0]["geometry"]["coordinates"][0]:
        assert len(repr(x).split(".")[1]) <= 7 and len(repr(y).split(".")[1]) <= 7
        assert -180 <= x <= 180 and -90 <= y <= 90
    write_gpkg({"building": out, "road": out.iloc[:0]}, tmp_path / "p.gpkg")
    assert [name for name, _ in pyogrio.list_layers(tmp_path / "p.gpkg")] == ["building"]
    write_pieces(empty_pieces(), tmp_path / "e.parquet")
    assert len(read_pieces(tmp_path / "e.parquet")) == 0


def test_config_section(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    assert parse_vectorize(p, {}) == VectorizeSpec()
    assert parse_vectorize(p, {"source": "masks", "simplify_m": 0.5}).source == "masks"
    with pytest.raises(ConfigError, match=r"vectorize\.source"):
        parse_vectorize(p, {"source": "probs"})
    with pytest.raises(ConfigError, match="simplfy_m"):
        parse_vectorize(p, {"simplfy_m": 0.5})
    # regularize: left out -> every building class; [] -> none; a list -> those classes
    houses = ClassSpec("houses", 3, "area", 20, (TagFilter("building", ("house", "detached")),))
    parts = ClassSpec("parts", 4, "area", 20, (TagFilter("building:part", None),))
    water = ClassSpec("water", 5, "area", 5, (TagFilter("natural", ("water",)),))
    classes = (BUILDING, ROAD, houses, parts, water)
    assert regularized_classes(parse_vectorize(p, {}), classes) == ("building", "houses", "parts")
    assert regularized_classes(parse_vectorize(p, {"regularize": []}), classes) == ()
    assert regularized_classes(parse_vectorize(p, {"regularize": ["water"]}), classes) == ("water",)
    assert not is_building_class(ClassSpec("building", 6, "line", 1, (TagFilter("building", None),)))


def test_merge_union_falls_back_to_snap_rounding_when_geos_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A TopologyException on real pieces (nepal) is no crash: valid pieces, unioned on a fine grid."""
    import shapely.errors

    from pipeline.vectors import merge

    a = np.array([shapely.box(0, 0, 2, 2)], dtype=object)
    b = np.array([shapely.box(2, 0, 4, 2)], dtype=object)
    real = shapely.union
    calls: list[int] = []

    def flaky(x: object, y: object, **kw: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise shapely.errors.GEOSException("TopologyException: unable to assign free hole to a shell")
        return real(x, y, **kw)

    monkeypatch.setattr(shapely, "union", flaky)
    out = merge._union(a, b)
    assert len(calls) == 2 and shapely.area(out[0]) == pytest.approx(8.0) and shapely.is_valid(out[0])
