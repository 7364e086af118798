"""Pure slippy-map tile maths in EPSG:3857 (web mercator, metres; tile y counted from the north).

Pixel convention: tile ``(z, x, y)`` of ``size`` pixels spans exactly
``tile_bounds(z, x, y)``; pixel ``(row, col)`` is the square
``[left + col*res, left + (col+1)*res] x [top - (row+1)*res, top - row*res]`` with
``res = tile_extent_m(z) / size``, and its centre lies at ``+0.5`` pixel. Rasterising burns a
pixel when its centre lies inside a polygon (GDAL's rule), so a polygon covering whole pixels
burns exactly those pixels.

Tile arithmetic imports no numpy, shapely or affine (the vectorised functions import them when
called): :class:`Tile` is in every completeness check of a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mercantile

from pipeline.core.errors import TileError

if TYPE_CHECKING:
    import numpy as np
    from affine import Affine
    from numpy.typing import NDArray

#: x of the antimeridian in EPSG:3857 metres: :data:`pipeline.tiles.geo.HALF_WORLD_M`, the same value
#: (tests/test_tiles.py checks), computed here so that this module needs no numpy
HALF_WORLD_M = math.pi * 6378137.0

# Shrink tile boxes by this many metres when testing cover, so that a feature that only touches
# a tile's edge or corner does not pull that tile in.
_EDGE_EPS_M = 1e-3


@dataclass(frozen=True, order=True)
class Tile:
    """A slippy-map tile; orders by (z, x, y)."""

    z: int
    x: int
    y: int

    def __str__(self) -> str:
        return f"{self.z}/{self.x}/{self.y}"


def tile_extent_m(z: int) -> float:
    """Side of a tile at zoom ``z`` in EPSG:3857 metres."""
    return 2 * HALF_WORLD_M / (1 << z)


def check_tile(t: Tile) -> None:
    """Raise TileError unless ``t`` is a valid tile (0 <= x, y < 2**z, 0 <= z <= 30)."""
    if not (0 <= t.z <= 30 and 0 <= t.x < (1 << t.z) and 0 <= t.y < (1 << t.z)):
        raise TileError(f"tile {t} is outside the slippy-map grid at zoom {t.z}")


def tile_bounds(t: Tile) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of tile ``t`` in EPSG:3857 metres."""
    e = tile_extent_m(t.z)
    left = -HALF_WORLD_M + t.x * e
    top = HALF_WORLD_M - t.y * e
    return (left, top - e, left + e, top)


def tile_transform(t: Tile, size: int, buffer_px: int = 0) -> Affine:
    """Affine from pixel (col, row) to EPSG:3857 for tile ``t`` of ``size`` pixels.

    With ``buffer_px`` > 0 the raster grows by that many pixels on every side (for buffered
    inference); pixel ``(buffer_px, buffer_px)`` is then the tile's top-left pixel.
    """
    from affine import Affine

    res = tile_extent_m(t.z) / size
    left, _, _, top = tile_bounds(t)
    return Affine(res, 0.0, left - buffer_px * res, 0.0, -res, top + buffer_px * res)


def block_transform(z: int, x0: int, y0: int, size: int) -> Affine:
    """Affine of a raster whose top-left tile is ``(z, x0, y0)``, tiles of ``size`` pixels."""
    return tile_transform(Tile(z, x0, y0), size)


def quadkey(t: Tile) -> str:
    """Bing quadkey of ``t`` (one digit per zoom level; '' for z0)."""
    return str(mercantile.quadkey(t.x, t.y, t.z)) if t.z else ""


def quadkey_to_tile(qk: str) -> Tile:
    """Inverse of :func:`quadkey`."""
    if qk == "":
        return Tile(0, 0, 0)
    m = mercantile.quadkey_to_tile(qk)
    return Tile(m.z, m.x, m.y)


def parent(t: Tile, z: int) -> Tile:
    """The ancestor of ``t`` at zoom ``z`` (<= t.z)."""
    if z > t.z:
        raise ValueError(f"zoom {z} is deeper than tile {t}")
    s = t.z - z
    return Tile(z, t.x >> s, t.y >> s)


def shard_of(t: Tile, shard_zoom: int) -> str:
    """Shard name of ``t``: the quadkey of its parent at ``shard_zoom``."""
    return quadkey(parent(t, shard_zoom))


def shards_of(z: int, xs: NDArray[np.int64], ys: NDArray[np.int64], shard_zoom: int) -> list[str]:
    """Vectorised :func:`shard_of` for many tiles at one zoom."""
    import numpy as np

    s = z - shard_zoom
    px, py = np.asarray(xs) >> s, np.asarray(ys) >> s
    keys = px.astype(np.int64) * (1 << shard_zoom) + py
    uniq, inv = np.unique(keys, return_inverse=True)
    names = [quadkey(Tile(shard_zoom, int(k // (1 << shard_zoom)), int(k % (1 << shard_zoom)))) for k in uniq]
    return [names[i] for i in inv.ravel()]


def shard_and_neighbours(qk: str) -> list[str]:
    """Shard ``qk`` and the shards around it (8, fewer at the edges of the world; no wrap across
    the antimeridian): where the 8 neighbours of each of its tiles lie, at any deeper zoom."""
    p = quadkey_to_tile(qk)
    n = 1 << p.z
    return [quadkey(Tile(p.z, p.x + dx, p.y + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)
            if 0 <= p.x + dx < n and 0 <= p.y + dy < n]


def tiles_in_shard(qk: str, z: int) -> list[Tile]:
    """All tiles at zoom ``z`` inside shard ``qk`` (sorted by x, then y)."""
    p = quadkey_to_tile(qk)
    n = 1 << (z - p.z)
    return [Tile(z, p.x * n + i, p.y * n + j) for i in range(n) for j in range(n)]


def tile_ranges(bounds: NDArray[np.float64], z: int) -> tuple[NDArray[np.int64], ...]:
    """Tile index ranges [x0, x1] x [y0, y1] (inclusive) that EPSG:3857 ``bounds`` (N, 4) touch
    with a positive area (a box ending exactly on a tile edge does not reach the next tile)."""
    import numpy as np

    e = tile_extent_m(z)
    n = (1 << z) - 1
    fx0 = (bounds[:, 0] + HALF_WORLD_M) / e
    fx1 = (bounds[:, 2] + HALF_WORLD_M) / e
    fy0 = (HALF_WORLD_M - bounds[:, 3]) / e
    fy1 = (HALF_WORLD_M - bounds[:, 1]) / e
    x0 = np.clip(np.floor(fx0), 0, n).astype(np.int64)
    y0 = np.clip(np.floor(fy0), 0, n).astype(np.int64)
    x1 = np.clip(np.maximum(np.ceil(fx1) - 1, x0), 0, n).astype(np.int64)
    y1 = np.clip(np.maximum(np.ceil(fy1) - 1, y0), 0, n).astype(np.int64)
    return x0, x1, y0, y1


def cover_mercator(geoms_3857: NDArray[np.object_], z: int) -> NDArray[np.int64]:
    """Exact cover: the tiles at zoom ``z`` whose interior the geometries (EPSG:3857) intersect.

    Returns an (M, 2) int64 array of unique ``(x, y)``, sorted by x then y. Features whose
    bounding box lies in one tile are taken directly; the others are tested against every tile
    of their bounding box with vectorised shapely predicates on prepared geometries.
    """
    import numpy as np
    import shapely

    geoms = np.asarray(geoms_3857, dtype=object)
    geoms = geoms[~(shapely.is_missing(geoms) | shapely.is_empty(geoms))]
    if len(geoms) == 0:
        return np.empty((0, 2), dtype=np.int64)
    x0, x1, y0, y1 = tile_ranges(shapely.bounds(geoms), z)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    count = w * h
    single = count == 1
    keys = [x0[single] * (1 << z) + y0[single]]
    multi = np.flatnonzero(~single)
    if len(multi):
        cnt = count[multi]
        fi = np.repeat(multi, cnt)
        off = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        tx = x0[fi] + off % w[fi]
        ty = y0[fi] + off // w[fi]
        e = tile_extent_m(z)
        left = -HALF_WORLD_M + tx * e
        top = HALF_WORLD_M - ty * e
        boxes = shapely.box(left + _EDGE_EPS_M, top - e + _EDGE_EPS_M, left + e - _EDGE_EPS_M, top - _EDGE_EPS_M)
        shapely.prepare(geoms)
        hit = shapely.intersects(geoms[fi], boxes)
        keys.append(tx[hit] * (1 << z) + ty[hit])
    uniq = np.unique(np.concatenate(keys))
    return np.column_stack([uniq // (1 << z), uniq % (1 << z)]).astype(np.int64)


def cover_lonlat(geoms_4326: NDArray[np.object_], z: int) -> NDArray[np.int64]:
    """:func:`cover_mercator` for geometries in EPSG:4326."""
    from pipeline.tiles.geo import to_mercator

    return cover_mercator(to_mercator(geoms_4326), z)


def cover_bbox(bbox: tuple[float, float, float, float], z: int) -> NDArray[np.int64]:
    """All tiles at zoom ``z`` that the lon/lat box (W, S, E, N) overlaps, as (M, 2) x, y."""
    import numpy as np
    import shapely

    return cover_lonlat(np.array([shapely.box(*bbox)], dtype=object), z)


def features_in_tiles(geoms_4326: np.ndarray, tiles: set[tuple[int, int]], z: int) -> np.ndarray:
    """True where a geometry's representative point lies in one of ``tiles`` ((x, y) at zoom ``z``):
    OSM features outside the vectorised tiles are left out of the comparison."""
    import numpy as np
    import shapely

    from pipeline.tiles.geo import to_mercator

    return points_in_tiles(to_mercator(shapely.point_on_surface(np.asarray(geoms_4326, dtype=object))), tiles, z)


def features_touching_tiles(geoms_4326: np.ndarray, tiles: set[tuple[int, int]], z: int) -> np.ndarray:
    """True where a geometry (EPSG:4326) intersects one of ``tiles`` ((x, y) at zoom ``z``), its
    representative point there or not."""
    import numpy as np
    import shapely

    from pipeline.tiles.geo import to_mercator

    g = to_mercator(np.asarray(geoms_4326, dtype=object))
    out = np.zeros(len(g), dtype=bool)
    if not len(g) or not tiles:
        return out
    e = tile_extent_m(z)
    xy = np.array(sorted(tiles), dtype=np.float64)
    boxes = shapely.box(xy[:, 0] * e - HALF_WORLD_M, HALF_WORLD_M - (xy[:, 1] + 1) * e,
                        (xy[:, 0] + 1) * e - HALF_WORLD_M, HALF_WORLD_M - xy[:, 1] * e)
    hit, _ = shapely.STRtree(boxes).query(g, predicate="intersects")  # missing / empty geometries hit nothing
    out[hit] = True
    return out


def points_in_tiles(pts_3857: np.ndarray, tiles: set[tuple[int, int]], z: int) -> np.ndarray:
    """True where a point (EPSG:3857) lies in one of ``tiles`` ((x, y) at zoom ``z``)."""
    import numpy as np
    import shapely

    e = tile_extent_m(z)
    tx = np.floor((shapely.get_x(pts_3857) + HALF_WORLD_M) / e).astype(np.int64)
    ty = np.floor((HALF_WORLD_M - shapely.get_y(pts_3857)) / e).astype(np.int64)
    return np.array([(int(a), int(b)) in tiles for a, b in zip(tx, ty)], dtype=bool)
