"""Property tests (hypothesis) for the tile maths: bounds, transform, shards, cover."""

from __future__ import annotations

from pathlib import Path

import mercantile
import numpy as np
import pytest
import shapely
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.core.errors import TileError
from pipeline.tiles.geo import lonlat_to_mercator, mercator_to_lonlat
from pipeline.tiles.tilemath import _EDGE_EPS_M as EDGE_EPS_M
from pipeline.tiles.tilemath import (
    Tile,
    check_tile,
    cover_bbox,
    cover_mercator,
    parent,
    quadkey,
    quadkey_to_tile,
    shard_and_neighbours,
    shard_of,
    shards_of,
    tile_bounds,
    tile_extent_m,
    tile_transform,
    tiles_in_shard,
)


@st.composite
def tiles(draw: st.DrawFn, min_z: int = 0, max_z: int = 22) -> Tile:
    z = draw(st.integers(min_z, max_z))
    n = 1 << z
    return Tile(z, draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1)))


@given(tiles())
def test_bounds_match_mercantile(t: Tile) -> None:
    ref = mercantile.xy_bounds(t.x, t.y, t.z)
    np.testing.assert_allclose(tile_bounds(t), (ref.left, ref.bottom, ref.right, ref.top), atol=1e-6)


@given(tiles(), st.sampled_from([256, 512]), st.integers(0, 64))
def test_transform_maps_pixel_corners_to_tile_corners(t: Tile, size: int, buf: int) -> None:
    left, bottom, right, top = tile_bounds(t)
    a = tile_transform(t, size, buffer_px=buf)
    x0, y0 = a @ (buf, buf)
    x1, y1 = a @ (buf + size, buf + size)
    tol = 1e-9 * max(1.0, abs(left), abs(top))
    assert abs(x0 - left) <= tol and abs(y0 - top) <= tol
    assert abs(x1 - right) <= tol + 1e-6 and abs(y1 - bottom) <= tol + 1e-6
    # the centre of pixel (0, 0) lies half a pixel inside the top-left corner
    cx, cy = tile_transform(t, size) @ (0.5, 0.5)
    res = tile_extent_m(t.z) / size
    assert cx == pytest.approx(left + res / 2) and cy == pytest.approx(top - res / 2)


@given(tiles(min_z=1))
def test_neighbouring_tiles_share_edges(t: Tile) -> None:
    if t.x + 1 < (1 << t.z):
        assert tile_bounds(t)[2] == pytest.approx(tile_bounds(Tile(t.z, t.x + 1, t.y))[0], abs=1e-6)
    if t.y + 1 < (1 << t.z):
        assert tile_bounds(t)[1] == pytest.approx(tile_bounds(Tile(t.z, t.x, t.y + 1))[3], abs=1e-6)


@given(tiles(min_z=1, max_z=20), st.data())
def test_the_neighbours_of_a_shards_tiles_lie_in_it_or_the_shards_around_it(t: Tile, data: st.DataObject) -> None:
    sz = data.draw(st.integers(max(0, t.z - 4), t.z))
    near = shard_and_neighbours(shard_of(t, sz))
    n = 1 << t.z
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            if 0 <= t.x + dx < n and 0 <= t.y + dy < n:
                assert shard_of(Tile(t.z, t.x + dx, t.y + dy), sz) in near
    p = quadkey_to_tile(shard_of(t, sz))
    inside = sum(0 <= p.x + dx < (1 << sz) for dx in (-1, 0, 1)) * sum(0 <= p.y + dy < (1 << sz) for dy in (-1, 0, 1))
    assert len(set(near)) == len(near) == inside and shard_of(t, sz) in near


@given(tiles(min_z=1, max_z=20), st.data())
def test_shard_membership(t: Tile, data: st.DataObject) -> None:
    sz = data.draw(st.integers(max(0, t.z - 4), t.z))
    qk = shard_of(t, sz)
    assert len(qk) == sz
    assert quadkey(t).startswith(qk)
    assert t in tiles_in_shard(qk, t.z)
    p = quadkey_to_tile(qk)
    assert p == parent(t, sz)
    pl, pb, pr, pt = tile_bounds(p)
    lt, b, r, tp = tile_bounds(t)
    assert pl - 1e-6 <= lt and r <= pr + 1e-6 and pb - 1e-6 <= b and tp <= pt + 1e-6
    assert shards_of(t.z, np.array([t.x]), np.array([t.y]), sz) == [qk]


@given(tiles(max_z=24))
def test_quadkey_round_trip(t: Tile) -> None:
    assert quadkey_to_tile(quadkey(t)) == t


def test_check_tile_rejects_out_of_grid() -> None:
    with pytest.raises(TileError, match="outside"):
        check_tile(Tile(3, 8, 0))
    check_tile(Tile(3, 7, 7))


@given(st.floats(-179.9, 179.9), st.floats(-85.0, 85.0))
def test_projection_round_trip(lon: float, lat: float) -> None:
    back = mercator_to_lonlat(lonlat_to_mercator(np.array([[lon, lat]])))
    np.testing.assert_allclose(back, [[lon, lat]], atol=1e-9)


def _brute_cover(g: shapely.Geometry, z: int) -> set[tuple[int, int]]:
    """Every tile of the geometry's bbox whose intersection with it has positive area/length."""
    e = tile_extent_m(z)
    half = e * (1 << z) / 2
    minx, miny, maxx, maxy = g.bounds
    out = set()
    for x in range(max(0, int((minx + half) // e) - 1), int((maxx + half) // e) + 2):
        for y in range(max(0, int((half - maxy) // e) - 1), int((half - miny) // e) + 2):
            # the cover ignores overlaps thinner than its edge tolerance (1 mm): so does this
            inter = g.intersection(shapely.box(*tile_bounds(Tile(z, x, y))).buffer(-EDGE_EPS_M, join_style="mitre"))
            if inter.area > 1e-9 or (g.geom_type.endswith("LineString") and inter.length > 1e-4):
                out.add((x, y))
    return out


@st.composite
def mercator_shapes(draw: st.DrawFn) -> tuple[shapely.Geometry, int]:
    z = draw(st.integers(14, 19))
    e = tile_extent_m(z)
    cx = draw(st.floats(-2e6, 2e6))
    cy = draw(st.floats(-2e6, 2e6))
    w = draw(st.floats(0.01, 4.0)) * e
    h = draw(st.floats(0.01, 4.0)) * e
    kind = draw(st.sampled_from(["box", "triangle", "line", "ring"]))
    if kind == "box":
        g = shapely.box(cx, cy, cx + w, cy + h)
    elif kind == "triangle":
        g = shapely.Polygon([(cx, cy), (cx + w, cy), (cx, cy + h)])
    elif kind == "line":
        g = shapely.LineString([(cx, cy), (cx + w, cy + h), (cx + 2 * w, cy)])
    else:  # a frame: cover must include tiles under the ring, not necessarily the hole
        g = shapely.box(cx, cy, cx + 3 * w, cy + 3 * h).difference(shapely.box(cx + w, cy + h, cx + 2 * w, cy + 2 * h))
    return g, z


@given(mercator_shapes())
@example((shapely.Polygon([(0.062, 0), (4892.032, 0), (0.062, 305.748)]), 14))  # a 4 mm sliver across a tile edge
def test_cover_is_exact(shape: tuple[shapely.Geometry, int]) -> None:
    g, z = shape
    got = {(int(x), int(y)) for x, y in cover_mercator(np.array([g]), z)}
    assert got == _brute_cover(g, z)


def test_cover_sorted_unique_and_skips_empty() -> None:
    e = tile_extent_m(18)
    g1 = shapely.box(0, 0, 2.5 * e, 0.5 * e)
    g2 = shapely.box(0.1 * e, 0.1 * e, 0.2 * e, 0.2 * e)
    xy = cover_mercator(np.array([g1, g2, shapely.Polygon(), None], dtype=object), 18)
    keys = [tuple(r) for r in xy.tolist()]
    assert keys == sorted(set(keys)) and len(keys) == 3


def test_edge_touching_feature_does_not_pull_in_neighbour() -> None:
    t = Tile(18, 1000, 1000)
    left, bottom, right, top = tile_bounds(t)
    g = shapely.box(left, bottom, right, top)  # exactly the tile: touches 8 neighbours
    assert cover_mercator(np.array([g]), 18).tolist() == [[1000, 1000]]


@given(st.floats(-170, 170), st.floats(-80, 80), st.floats(0.001, 0.05), st.floats(0.001, 0.05),
       st.integers(10, 17))
def test_cover_bbox_matches_mercantile(w: float, s: float, dw: float, ds: float, z: int) -> None:
    n = min(s + ds, 85.0)
    got = {(int(x), int(y)) for x, y in cover_bbox((w, s, w + dw, n), z)}
    (x0, y0), (x1, y1) = lonlat_to_mercator(np.array([[w, s], [w + dw, n]]))
    box = shapely.box(x0, y0, x1, y1)
    # mercantile also lists tiles the box only touches along an edge (or overlaps by less than
    # the cover's 1 mm edge tolerance); ours must not
    ref = {(t.x, t.y) for t in mercantile.tiles(w, s, w + dw, n, z)
           if box.intersection(shapely.box(*tile_bounds(Tile(z, t.x, t.y))).buffer(-EDGE_EPS_M, join_style="mitre"))
           .area > 1e-6}
    assert got == ref


def test_tile_list_writes_the_same_csv_as_the_table(tmp_path: Path) -> None:
    """CoverTiles writes a pandas-free TileList: the same bytes as the DataFrame it replaced, and
    the same table read back."""
    from pipeline.tiles.cover import read_tiles_csv, tile_list, tiles_table, write_tiles_csv

    xy = np.array([[149229, 75867], [149229, 75868], [149300, 75001], [3, 7]], dtype=np.int64)
    lst, df = tile_list(xy, 18, 14), tiles_table(xy, 18, 14)
    write_tiles_csv(lst, tmp_path / "a.csv")
    write_tiles_csv(df, tmp_path / "b.csv")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_text().splitlines()[1] == "18,149229,75867,12012021101312"
    assert read_tiles_csv(tmp_path / "a.csv").equals(lst.frame())
    assert len(lst) == 4 and lst.n_shards() == 3
    empty = tile_list(np.empty((0, 2), dtype=np.int64), 18, 14)
    assert len(empty) == 0 and empty.n_shards() == 0
