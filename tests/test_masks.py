"""Label masks: exact alignment with the tile grid, priorities, line buffers, ignore ring, PNG."""

from __future__ import annotations

import io
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely
from PIL import Image

from pipeline.config.region import IGNORE_VALUE, load_config
from pipeline.core.errors import InputDataError
from pipeline.labels.features import read_features, write_features
from pipeline.tiles.geo import mercator_scale, to_lonlat
from pipeline.tiles.masks import (
    PngEncoder,
    burn_tile,
    decode_mask_png,
    prepare_burn,
    rasterize_tiles,
    shard_read_bbox,
)
from pipeline.tiles.tilemath import Tile, quadkey, tile_bounds, tile_extent_m
from tests.town import write_town_config

Z = 19
T = Tile(Z, 296_000, 151_000)  # near 23.2 E, 60.2 N
SIZE = 256


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("cfg")
    return load_config(write_town_config(d / "c.toml", d / "x.pbf", d)).classes


def _px_box(t: Tile, c0: float, r0: float, c1: float, r1: float) -> shapely.Polygon:
    """A box in EPSG:3857 from pixel column/row coordinates of tile ``t`` (pixel edges)."""
    left, _, _, top = tile_bounds(t)
    res = tile_extent_m(t.z) / SIZE
    return shapely.box(left + c0 * res, top - r1 * res, left + c1 * res, top - r0 * res)


def _gdf(geoms_3857: list[shapely.Geometry], names: list[str], buffers: list[float] | None = None) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"class": names, "buffer_m": buffers or [0.0] * len(names)},
                            geometry=list(to_lonlat(np.array(geoms_3857, dtype=object))), crs=4326)


def test_polygon_lands_on_exact_pixels(classes) -> None:  # type: ignore[no-untyped-def]
    burn = prepare_burn(_gdf([_px_box(T, 10, 20, 20, 30)], ["building"]), classes)
    m = burn_tile(burn, T, SIZE)
    expect = np.zeros((SIZE, SIZE), np.uint8)
    expect[20:30, 10:20] = 1
    np.testing.assert_array_equal(m, expect)


def test_pixel_centre_rule(classes) -> None:  # type: ignore[no-untyped-def]
    # covers 40 % of pixel column 9 and 60 % of column 20: only centres inside count
    burn = prepare_burn(_gdf([_px_box(T, 9.6, 20, 20.6, 30)], ["building"]), classes)
    cols = np.flatnonzero(burn_tile(burn, T, SIZE).any(axis=0))
    assert cols.tolist() == list(range(10, 21))


def test_polygon_across_tile_border_splits_exactly(classes) -> None:  # type: ignore[no-untyped-def]
    right = Tile(Z, T.x + 1, T.y)
    below = Tile(Z, T.x, T.y + 1)
    g = _px_box(T, 250, 250, 262, 270)  # 6 px into the right neighbour, 14 px into the one below
    burn = prepare_burn(_gdf([g], ["building"]), classes)
    got = {t: m for t, m in rasterize_tiles(burn, [T, right, below, Tile(Z, T.x + 1, T.y + 1)], SIZE)}
    assert got[T][250:, 250:].all() and got[T].sum() == 6 * 6
    assert got[right][250:, :6].all() and got[right].sum() == 6 * 6
    assert got[below][:14, 250:].all() and got[below].sum() == 6 * 14
    assert got[Tile(Z, T.x + 1, T.y + 1)].sum() == 6 * 14
    # the block path and the single-tile path agree
    for t, m in got.items():
        np.testing.assert_array_equal(m, burn_tile(burn, t, SIZE))


def test_priority_wins_regardless_of_row_order(classes) -> None:  # type: ignore[no-untyped-def]
    park, bldg = _px_box(T, 0, 0, 100, 100), _px_box(T, 40, 40, 60, 60)
    for geoms, names in (([park, bldg], ["park", "building"]), ([bldg, park], ["building", "park"])):
        m = burn_tile(prepare_burn(_gdf(geoms, names), classes), T, SIZE)
        assert (m[40:60, 40:60] == 1).all() and m[0, 0] == 3 and m[99, 99] == 3 and m[100, 100] == 0


def test_line_buffer_in_ground_metres(classes) -> None:  # type: ignore[no-untyped-def]
    left, bottom, right, top = tile_bounds(T)
    ymid = (bottom + top) / 2
    line = shapely.LineString([(left - 50, ymid), (right + 50, ymid)])
    m = burn_tile(prepare_burn(_gdf([line], ["road"], [3.0]), classes), T, SIZE)
    lat = math.degrees(2 * math.atan(math.exp(ymid / 6378137.0)) - math.pi / 2)
    ground_px_m = tile_extent_m(Z) / SIZE * math.cos(math.radians(lat))
    width_px = m[:, 128].sum() / 2  # class id 2
    assert width_px == pytest.approx(6.0 / ground_px_m, abs=1.0)
    assert set(np.unique(m)) == {0, 2}


def test_ignore_ring_surrounds_area_edges(classes) -> None:  # type: ignore[no-untyped-def]
    burn = prepare_burn(_gdf([_px_box(T, 100, 100, 140, 140)], ["building"]), classes)
    m = burn_tile(burn, T, SIZE, ignore_ring_px=2)
    assert (m[102:138, 102:138] == 1).all()          # interior kept
    assert (m[100:102, 105:135] == IGNORE_VALUE).all()  # inside the edge
    assert (m[98:100, 105:135] == IGNORE_VALUE).all()   # outside the edge
    assert m[96, 120] == 0 and m[120, 96] == 0


def test_empty_tile_and_unknown_class(classes) -> None:  # type: ignore[no-untyped-def]
    burn = prepare_burn(_gdf([], []), classes)
    assert not burn_tile(burn, T, SIZE).any()
    with pytest.raises(InputDataError, match="does not define"):
        prepare_burn(_gdf([_px_box(T, 0, 0, 1, 1)], ["lake"]), classes)


def test_png_is_palette_and_round_trips(classes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg_pal = [0] * 768
    cfg_pal[3:6] = [228, 26, 28]
    enc = PngEncoder(cfg_pal)
    arr = np.zeros((SIZE, SIZE), np.uint8)
    arr[5:9, 7:11] = 1
    data = enc.encode(arr)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "P" and im.size == (SIZE, SIZE)
        assert im.getpalette()[3:6] == [228, 26, 28]
    np.testing.assert_array_equal(decode_mask_png(data), arr)
    assert enc.encode(arr) == data  # deterministic
    empty = np.zeros((SIZE, SIZE), np.uint8)
    assert enc.encode(empty) is enc.encode(empty.copy())  # constant tiles encoded once
    with pytest.raises(ValueError, match="corrupt PNG"):
        decode_mask_png(data[: len(data) // 2])


@pytest.mark.parametrize("lat", [0.5, 60.0, 75.0, 80.0, -80.0, 85.0])
def test_shard_read_margin_holds_at_any_latitude(classes, lat: float, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A road just outside a shard's poleward edge whose buffer reaches into the shard is read
    for that shard (above ~75°, a fixed 4x margin lost it) and burns pixels in its edge tile."""
    import mercantile

    widest = max([c.buffer_m for c in classes] + [b for c in classes for _, b in c.buffer_m_by_value])
    st = mercantile.tile(10.0, lat, 14)
    shard = Tile(14, st.x, st.y)
    left, bottom, right, top = tile_bounds(shard)
    edge = top if lat > 0 else bottom
    gap = 0.9 * widest * float(mercator_scale(edge))  # mercator metres outside; the buffer reaches 10 % in
    y = edge + gap if lat > 0 else edge - gap
    road = shapely.LineString([(left - 100, y), (right + 100, y)])
    path = tmp_path / "f.parquet"
    feats = _gdf([road], ["road"], [widest])
    feats["osm_type"], feats["osm_id"], feats["class_id"], feats["tags"] = "w", 1, 2, "{}"
    write_features(feats, path)
    got = read_features(path, bbox=shard_read_bbox(quadkey(shard), classes))
    assert len(got) == 1
    edge_tile = Tile(19, st.x * 32 + 16, st.y * 32 if lat > 0 else st.y * 32 + 31)  # the shard's poleward row
    m = burn_tile(prepare_burn(got, classes), edge_tile, SIZE)
    assert (m == 2).any()


def test_touching_buildings_get_edge_bands_that_keep_interiors_apart(classes) -> None:  # type: ignore[no-untyped-def]
    # two buildings sharing the wall at column 30, a third standing apart
    geoms = [_px_box(T, 10, 20, 30, 40), _px_box(T, 30, 20, 50, 40), _px_box(T, 70, 70, 80, 80)]
    burn = prepare_burn(_gdf(geoms, ["building"] * 3), classes, edge_ids=(1,))
    m = burn_tile(burn, T, SIZE, edge_px=2)
    edge = 255 - 1
    assert set(np.unique(m).tolist()) == {0, 1, edge}
    # footprints unchanged: class or edge exactly where the buildings are
    foot = np.zeros((SIZE, SIZE), bool)
    foot[20:40, 10:50] = foot[70:80, 70:80] = True
    np.testing.assert_array_equal((m == 1) | (m == edge), foot)
    # a 2 px band inside every outline, on both sides of the shared wall
    assert (m[20:22, 10:50] == edge).all() and (m[30, 28:32] == edge).all()
    assert (m[24:36, 27] == 1).all() and (m[24:36, 32] == 1).all()
    # the interiors of the touching pair are two components
    from scipy import ndimage

    assert ndimage.label(m[:60, :60] == 1)[1] == 2
    # without edge_px the mask is the plain class mask
    np.testing.assert_array_equal(burn_tile(burn, T, SIZE), foot.astype(np.uint8))


def test_edge_bands_do_not_depend_on_the_blocking(classes) -> None:  # type: ignore[no-untyped-def]
    # a pair sharing a wall that lies exactly on the border between T and its right neighbour
    right = Tile(Z, T.x + 1, T.y)
    geoms = [_px_box(T, 200, 20, 256, 60), _px_box(right, 0, 20, 40, 60)]
    burn = prepare_burn(_gdf(geoms, ["building"] * 2), classes, edge_ids=(1,))
    together = dict(rasterize_tiles(burn, [T, right], SIZE, edge_px=2))
    for t in (T, right):
        np.testing.assert_array_equal(burn_tile(burn, t, SIZE, edge_px=2), together[t])
    assert (together[T][30, 254:] == 254).all() and (together[right][30, :2] == 254).all()
