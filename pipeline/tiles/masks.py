"""Stage ``masks``: burn features into one-band palette PNG masks of class ids, per tile.

Geometry is burnt in EPSG:3857 with each tile's exact transform (``pipeline.tiles.tilemath``): a pixel
takes a class when its centre lies inside the (buffered) geometry. Classes are burnt in
ascending priority so the highest priority wins overlaps. An optional ignore ring (value 255)
of ``ignore_ring_px`` pixels is drawn around area edges, on both sides of the edge. With
instances (``[masks] instances``), pixels of an area feature within ``edge_px`` pixels of its own
outline take the class's edge value ``255 - id`` (:mod:`pipeline.vectors.instances`), so the interiors of
touching buildings never touch; the edge is found on a raster of feature ids grown by
``edge_px`` around the block, so a tile's mask does not depend on how tiles are grouped.
Mapper feedback (``[labels] negatives`` / ``ignore``, :mod:`pipeline.labels.feedback`) is burnt last:
negative areas as background (0) over every class, edge and ring, then ignore areas as 255.

For speed, a shard's tiles are burnt in blocks of up to ``BLOCK_TILES`` x ``BLOCK_TILES``
tiles with one ``rasterio.features.rasterize`` call per block, then cut into tiles; the cost
is linear in the number of tiles.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import shapely
from numpy.typing import NDArray
from PIL import Image
from rasterio.features import rasterize

from pipeline.config.region import IGNORE_VALUE, ClassSpec
from pipeline.core.errors import InputDataError
from pipeline.labels.feedback import Feedback
from pipeline.tiles.geo import HALF_WORLD_M, burn_geometries, mercator_scale, mercator_to_lonlat, to_mercator
from pipeline.tiles.tilemath import Tile, block_transform, quadkey_to_tile, tile_bounds, tile_extent_m
from pipeline.vectors.instances import edge_band, edge_value

BLOCK_TILES = 8
#: colour of the ignore value (255) in the mask palette: mid grey
IGNORE_COLOR = (128, 128, 128)


def mask_palette(classes: Sequence[ClassSpec]) -> list[int]:
    """768-entry RGB palette of the masks: each class colour (``#rrggbb``) at its id, the same
    colour at 60 % at the class's edge value (area classes), grey at the ignore value (255),
    black elsewhere (background 0)."""
    pal = [0] * 768
    for c in classes:
        rgb = [int(c.color[i : i + 2], 16) for i in (1, 3, 5)]
        if c.kind == "area":
            e = edge_value(c.id)
            pal[3 * e : 3 * e + 3] = [v * 3 // 5 for v in rgb]
    for c in classes:
        pal[3 * c.id : 3 * c.id + 3] = [int(c.color[i : i + 2], 16) for i in (1, 3, 5)]
    pal[3 * IGNORE_VALUE : 3 * IGNORE_VALUE + 3] = list(IGNORE_COLOR)
    return pal


@dataclass(frozen=True)
class BurnSet:
    """Features ready to burn: EPSG:3857 geometries in burn order with their class ids.

    ``shapes`` are the same geometries as GeoJSON-like dicts (what ``rasterize`` reads), made
    once. ``edges`` are the boundaries of area features (for the ignore ring). Both geometry
    arrays carry an STRtree. ``instance`` flags the features of classes with an edge band.
    """

    geoms: NDArray[np.object_]
    values: NDArray[np.uint8]
    tree: shapely.STRtree
    edges: NDArray[np.object_]
    edge_tree: shapely.STRtree
    shapes: list[dict[str, Any]]
    instance: NDArray[np.bool_]
    #: mapper feedback areas (EPSG:3857), their values (0 = negative, 255 = ignore) in burn order
    overrides: NDArray[np.object_] | None = None
    override_values: NDArray[np.uint8] | None = None
    override_tree: shapely.STRtree | None = None


def prepare_burn(features: gpd.GeoDataFrame, classes: Sequence[ClassSpec], edge_ids: Sequence[int] = (),
                 feedback: Feedback | None = None) -> BurnSet:
    """Project features (EPSG:4326; columns ``class``, ``buffer_m``) to EPSG:3857, buffer
    lines by their ground-metre half-width, and order them by class priority (stable).
    Features of the classes ``edge_ids`` get edge bands when burnt with ``edge_px`` > 0;
    ``feedback`` areas (:func:`pipeline.labels.feedback.load_feedback`) are burnt over everything."""
    by_name = {c.name: c for c in classes}
    names = features["class"].to_numpy() if len(features) else np.array([], dtype=object)
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise InputDataError(f"features have classes {unknown} that the config does not define; "
                             "rerun ExtractFeatures")
    prio = np.array([by_name[n].priority for n in names], dtype=np.int64)
    vals = np.array([by_name[n].id for n in names], dtype=np.uint8)
    is_area = np.array([by_name[n].kind == "area" for n in names], dtype=bool)
    geoms = burn_geometries(features.geometry.to_numpy(), features["buffer_m"].to_numpy(dtype=float))
    order = np.argsort(prio, kind="stable")
    geoms, vals, is_area = geoms[order], vals[order], is_area[order]
    keep = ~(shapely.is_empty(geoms) | shapely.is_missing(geoms))
    geoms, vals, is_area = geoms[keep], vals[keep], is_area[keep]
    edges = shapely.boundary(geoms[is_area]) if is_area.any() else np.array([], dtype=object)
    instance = is_area & np.isin(vals, np.asarray(edge_ids, dtype=np.int64))
    if feedback is None or not len(feedback):
        return BurnSet(geoms, vals, shapely.STRtree(geoms), edges, shapely.STRtree(edges), geojson_like(geoms),
                       instance)
    over = to_mercator(feedback.geoms)
    return BurnSet(geoms, vals, shapely.STRtree(geoms), edges, shapely.STRtree(edges), geojson_like(geoms), instance,
                   over, feedback.values.astype(np.uint8), shapely.STRtree(over))


def geojson_like(geoms: NDArray[np.object_]) -> list[dict[str, Any]]:
    """GeoJSON-like dicts of shapely geometries, for ``rasterio.features.rasterize``.

    Polygons and multipolygons (all that buffered features are) go through
    ``shapely.to_ragged_array``, so coordinates are never visited one by one in Python;
    other geometry types use ``__geo_interface__``.
    """
    kinds = shapely.get_type_id(geoms)
    polygonal = np.isin(kinds, (3, 6))  # Polygon, MultiPolygon
    out: list[dict[str, Any]] = [{} for _ in range(len(geoms))]
    for i in np.flatnonzero(~polygonal):
        out[i] = geoms[i].__geo_interface__
    idx = np.flatnonzero(polygonal)
    if len(idx):
        # offsets: rings -> coords, (parts -> rings,) geometries -> parts or rings
        _, coords, offsets = shapely.to_ragged_array(geoms[idx])
        nested: list[Any] = coords.tolist()
        for off in offsets:
            nested = [nested[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
        kind = "MultiPolygon" if len(offsets) == 3 else "Polygon"
        for j, coordinates in zip(idx.tolist(), nested):
            out[j] = {"type": kind, "coordinates": coordinates}
    return out


def shard_read_bbox(shard: str, classes: Sequence[ClassSpec]) -> tuple[float, float, float, float]:
    """(W, S, E, N) degrees of the features a shard's masks need: the shard's bounds grown by
    the widest line buffer in mercator metres, at any latitude.

    A ground metre is 1/cos(lat) mercator metres, so the margin is the widest buffer times
    that scale at the most poleward latitude the grown bounds reach (found by a few fixed-point
    steps), with 5 % and a metre to spare: exact near the equator and above 80° alike.
    """
    widest = max([c.buffer_m for c in classes] + [b for c in classes for _, b in c.buffer_m_by_value])
    left, bottom, right, top = tile_bounds(quadkey_to_tile(shard))
    margin = widest + 1.0
    for _ in range(4):
        ys = np.clip([bottom - margin, top + margin], -HALF_WORLD_M, HALF_WORLD_M)
        margin = 1.05 * widest * float(np.max(mercator_scale(ys))) + 1.0
    corners = np.array([[left - margin, bottom - margin], [right + margin, top + margin]])
    (w, s), (e, n) = mercator_to_lonlat(corners)
    return (float(w), float(s), float(e), float(n))


@dataclass(frozen=True)
class TileBlock:
    """A block of ``nx`` x ``ny`` tiles of zoom ``z`` whose top-left tile is ``(x0, y0)``."""

    z: int
    x0: int
    y0: int
    nx: int = 1
    ny: int = 1


def burn_block(burn: BurnSet, block: TileBlock, size: int, ignore_ring_px: int = 0,
               edge_px: int = 0) -> NDArray[np.uint8]:
    """Burn a block of tiles (``size`` px each).

    Returns a (ny*size, nx*size) uint8 array of class ids (0 = background, 255 = ignore, and
    ``255 - id`` on the edge bands of ``burn.instance`` features when ``edge_px`` > 0).
    """
    transform = block_transform(block.z, block.x0, block.y0, size)
    res = tile_extent_m(block.z) / size
    shape = (block.ny * size, block.nx * size)
    box = shapely.box(transform.c, transform.f - shape[0] * res, transform.c + shape[1] * res, transform.f)
    out = np.zeros(shape, dtype=np.uint8)
    idx = np.sort(burn.tree.query(box, predicate="intersects"))
    if len(idx):
        shapes = [burn.shapes[i] for i in idx.tolist()]
        rasterize(zip(shapes, burn.values[idx].tolist()), out_shape=shape, transform=transform,
                  out=out, dtype=np.uint8)
        if edge_px > 0 and burn.instance[idx].any():
            _burn_edges(out, burn, idx[burn.instance[idx]], transform, edge_px)
    if ignore_ring_px > 0 and len(burn.edges):
        reach = ignore_ring_px * res
        eidx = np.sort(burn.edge_tree.query(box, predicate="dwithin", distance=reach))
        if len(eidx):
            # pixels whose centre lies within ring*res of an edge (on either side)
            rings = shapely.buffer(burn.edges[eidx], reach, quad_segs=2)
            rasterize(((g, IGNORE_VALUE) for g in rings), out_shape=shape, transform=transform,
                      out=out, dtype=np.uint8)
    if burn.override_tree is not None and burn.overrides is not None and burn.override_values is not None:
        oidx = np.sort(burn.override_tree.query(box, predicate="intersects"))
        if len(oidx):
            # in burn order (negatives, then ignore): each pixel takes the last area covering it
            rasterize(zip(burn.overrides[oidx].tolist(), burn.override_values[oidx].tolist()), out_shape=shape,
                      transform=transform, out=out, dtype=np.uint8)
    return out


def _burn_edges(out: NDArray[np.uint8], burn: BurnSet, idx: NDArray[np.int64], transform: Any, width: int) -> None:
    """Set the edge value on pixels of ``out`` (a block's class ids, changed in place) that lie
    within ``width`` px of the outline of the instance feature covering them (features ``idx``,
    in burn order; ids rasterised on the block grown by ``width`` px on every side)."""
    from affine import Affine

    h, w = out.shape
    grown = transform @ Affine.translation(-width, -width)
    inst = np.zeros((h + 2 * width, w + 2 * width), dtype=np.int32)
    rasterize(zip([burn.shapes[i] for i in idx.tolist()], (idx + 1).tolist()), out_shape=inst.shape,
              transform=grown, out=inst, dtype=np.int32)
    band = edge_band(inst, width)[width:width + h, width:width + w]
    for cid in np.unique(burn.values[idx]).tolist():
        sel = band & (out == cid)
        out[sel] = edge_value(cid)


def burn_tile(burn: BurnSet, tile: Tile, size: int, ignore_ring_px: int = 0, edge_px: int = 0) -> NDArray[np.uint8]:
    """Burn one tile: a (size, size) uint8 array of class ids."""
    return burn_block(burn, TileBlock(tile.z, tile.x, tile.y), size, ignore_ring_px, edge_px)


def blocks(tiles: Iterable[Tile], block: int = BLOCK_TILES) -> dict[tuple[int, int], list[Tile]]:
    """Group tiles (one zoom) into blocks of ``block`` x ``block`` aligned on multiples of
    ``block``; keys are the block's top-left (x, y)."""
    out: dict[tuple[int, int], list[Tile]] = {}
    for t in tiles:
        out.setdefault((t.x - t.x % block, t.y - t.y % block), []).append(t)
    return out


def rasterize_tiles(burn: BurnSet, tiles: Sequence[Tile], size: int, ignore_ring_px: int = 0,
                    edge_px: int = 0) -> Iterator[tuple[Tile, NDArray[np.uint8]]]:
    """Yield ``(tile, mask)`` for every tile (same zoom), burning block by block."""
    for (bx, by), members in sorted(blocks(tiles).items()):
        z = members[0].z
        xs = [t.x for t in members]
        ys = [t.y for t in members]
        nx, ny = max(xs) - bx + 1, max(ys) - by + 1
        arr = burn_block(burn, TileBlock(z, bx, by, nx, ny), size, ignore_ring_px, edge_px)
        for t in members:
            r, c = (t.y - by) * size, (t.x - bx) * size
            yield t, arr[r : r + size, c : c + size]


class PngEncoder:
    """Encode class-id arrays as one-band palette PNGs (deterministic bytes).

    Constant tiles (all background, say) are encoded once and reused.
    """

    def __init__(self, palette: list[int], compress_level: int = 1) -> None:
        self.palette = palette
        self.level = compress_level
        self._constant: dict[int, bytes] = {}

    def encode(self, arr: NDArray[np.uint8]) -> bytes:
        first = int(arr.flat[0])
        if not arr.any() or (arr == first).all():
            cached = self._constant.get(first)
            if cached is None:
                cached = self._constant[first] = self._encode(arr)
            return cached
        return self._encode(arr)

    def _encode(self, arr: NDArray[np.uint8]) -> bytes:
        im = Image.fromarray(np.ascontiguousarray(arr), mode="L")
        im.putpalette(self.palette)
        buf = io.BytesIO()
        im.save(buf, format="PNG", compress_level=self.level)
        return buf.getvalue()


def decode_mask_png(data: bytes) -> NDArray[np.uint8]:
    """Decode a mask PNG to its class ids (raises ValueError on a truncated/corrupt PNG)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            if im.mode not in ("P", "L"):
                raise ValueError(f"mask PNG has mode {im.mode}, expected P")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, zlib.error, SyntaxError) as exc:
        raise ValueError(f"corrupt PNG: {exc}") from exc


def mask_pngs(burn: BurnSet, tiles: Sequence[Tile], size: int, palette: list[int],
              ignore_ring_px: int = 0, edge_px: int = 0) -> Iterator[tuple[Tile, bytes]]:
    """Yield ``(tile, palette PNG bytes)`` for every tile: the masks of one shard, ready to write."""
    enc = PngEncoder(palette)
    for t, arr in rasterize_tiles(burn, tiles, size, ignore_ring_px, edge_px):
        yield t, enc.encode(arr)
