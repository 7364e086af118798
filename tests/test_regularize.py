"""Squared building outlines (pipeline.vectors.regularize, on by default for building classes): pixel
staircases of rotated rectangles and L-shapes traced at about 0.3 m come back with right angles,
few vertices and IoU >= 0.9 with the traced outline."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize
from scipy import ndimage

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.model.metrics import iou
from pipeline.tiles.geo import to_mercator
from pipeline.tiles.tilemath import Tile, shard_of, tile_bounds, tile_extent_m, tile_transform
from pipeline.vectors.finish import finish, finish_shard, sort_features
from pipeline.vectors.regularize import regularize
from pipeline.vectors.trace import trace
from pipeline.vectors.vectorize import VectorizeSpec, cached_loader, region_pieces, shard_box_px, shard_pieces

PX = 0.3  # metres per pixel (a z19 orthophoto near the equator)
RECT = shapely.box(0, 0, 12, 8)  # a 12 m x 8 m house
L_SHAPE = shapely.Polygon([(0, 0), (15, 0), (15, 6), (7, 6), (7, 11), (0, 11)])
SHAPES = {f"{name}-{deg}": shapely.affinity.rotate(g, deg, origin="centroid")
          for name, g in (("rect", RECT), ("L", L_SHAPE)) for deg in (0, 20, 33, 58)}
CORNERS = {"rect": 4, "L": 6}


def corners(poly: shapely.Polygon) -> np.ndarray:
    """The angles (degrees, 0-180) between the two edges at each vertex of the exterior ring."""
    ring = shapely.get_coordinates(poly.exterior)[:-1]
    a = np.roll(ring, 1, axis=0) - ring
    b = np.roll(ring, -1, axis=0) - ring
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def staircase(shape: shapely.Polygon, px: float = PX) -> shapely.Polygon:
    """``shape`` (metres) rasterised at ``px`` and traced back: its pixel staircase outline."""
    x0, y0, x1, y1 = shape.bounds
    w, h = int(np.ceil((x1 - x0) / px)) + 4, int(np.ceil((y1 - y0) / px)) + 4
    left, top = x0 - 2 * px, y1 + 2 * px
    mask = rasterize([shape], (h, w), transform=(px, 0, left, 0, -px, top), dtype=np.uint8).astype(bool)
    polys, _ = trace(mask, ndimage.label(mask)[0])
    assert len(polys) == 1
    return shapely.transform(polys[0], lambda c: np.column_stack([left + c[:, 0] * px, top - c[:, 1] * px]))


def assert_squared(reg: shapely.Polygon, raw: shapely.Polygon, n_corners: int) -> None:
    angles = corners(reg)
    assert np.abs(angles - 90).max() <= 5, angles
    assert len(angles) == n_corners, shapely.to_wkt(reg, rounding_precision=2)
    assert iou(np.array([reg]), np.array([raw]))[0] >= 0.9


@pytest.mark.parametrize("name", list(SHAPES))
def test_pixel_staircases_come_back_square(name: str) -> None:
    raw = staircase(SHAPES[name])
    if not name.endswith("-0"):
        assert shapely.get_num_coordinates(raw) > 30  # a staircase
    reg = regularize(np.array([raw], dtype=object), min_iou=0.9, scale=1.0, pixel=PX)[0]
    assert_squared(reg, raw, CORNERS[name.split("-", maxsplit=1)[0]])
    assert iou(np.array([reg]), np.array([SHAPES[name]]))[0] >= 0.94  # and close to the true house (raw: 0.97-0.99)


def test_default_finish_squares_buildings_not_other_areas() -> None:
    """Burnt into z19 tiles (0.30 m), vectorised with the default ``[vectorize]``: the buildings
    come out square, an area class that is not a building keeps its traced outline."""
    z, size = 19, 256
    building = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
    pitch = ClassSpec("pitch", 2, "area", 10, (TagFilter("leisure", ("pitch",)),))
    classes = (building, pitch)
    t = Tile(z, 262_200, 262_000)  # near the equator
    left, _, _, top = tile_bounds(t)
    scale = tile_extent_m(z) / size / PX  # mercator metres per metre of the shapes (~1)

    def place(g: shapely.Polygon, dx: float, dy: float) -> shapely.Polygon:
        return shapely.affinity.translate(shapely.affinity.scale(g, scale, scale, origin=(0, 0)),
                                          left + dx * scale, top - dy * scale)

    houses = [place(SHAPES["rect-20"], 10, 30), place(SHAPES["L-33"], 40, 30)]
    field = place(shapely.affinity.rotate(shapely.box(0, 0, 20, 12), 25), 15, 60)
    probs = np.zeros((2, size, size), np.uint8)
    probs[0] = rasterize(houses, (size, size), transform=tile_transform(t, size), default_value=255)
    probs[1] = rasterize([field], (size, size), transform=tile_transform(t, size), default_value=255)
    load = cached_loader({t: probs}.get, classes)
    s = shard_of(t, 17)
    pieces = shard_pieces([t], load, classes, 0.5, shard_box_px(s, z, size), 0)
    done, rest = finish_shard(pieces, classes, VectorizeSpec(), z, size)
    out = sort_features([done, finish(region_pieces([rest]), classes, VectorizeSpec(), z, size)])
    got = to_mercator(out.geometry.to_numpy())
    b = got[out["class"].to_numpy() == "building"]
    assert len(b) == 2
    for g in b:
        n = 4 if g.area < 110 * scale**2 else 6
        truth = houses[0] if n == 4 else houses[1]
        assert_squared(g, truth, n)
    pitch_out = got[out["class"].to_numpy() == "pitch"][0]
    assert np.abs(corners(pitch_out) - 90).max() > 5  # traced and simplified only
