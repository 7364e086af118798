"""The pieces blocks are filled with: palettes, the building candidate, what filling produced,
and a block's own frame (x along its long street axis, y across it; local metres)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, MultiPolygon, Polygon

from pipeline.synthetic import shapes
from pipeline.synthetic.model import Area, Road
from pipeline.synthetic.streets import Block, Warp

RGB = tuple[int, int, int]

HOUSE_ROOFS: tuple[RGB, ...] = (
    (150, 72, 52), (128, 62, 48), (165, 90, 60), (96, 66, 54), (72, 72, 78), (58, 60, 66), (110, 100, 92),
    (140, 120, 100), (120, 56, 46),
)
APARTMENT_ROOFS: tuple[RGB, ...] = (
    (170, 168, 160), (150, 150, 146), (190, 186, 176), (120, 118, 116), (96, 96, 100), (176, 160, 140),
    (100, 118, 80),
)
INDUSTRY_ROOFS: tuple[RGB, ...] = ((188, 190, 192), (212, 212, 208), (140, 150, 160), (120, 126, 130), (160, 160, 150))
SMALL_ROOFS: tuple[RGB, ...] = ((90, 90, 92), (120, 84, 60), (70, 86, 60), (150, 146, 140))
#: roofs that look like their surroundings (grass, asphalt)
CAMOUFLAGE: tuple[RGB, ...] = ((86, 108, 60), (84, 84, 86))
TREE_GREENS: tuple[RGB, ...] = ((52, 78, 40), (62, 88, 45), (45, 70, 42), (75, 95, 50), (58, 75, 38), (68, 80, 52))
CAR_COLORS: tuple[RGB, ...] = (
    (215, 215, 212), (30, 30, 32), (165, 165, 168), (80, 82, 86), (150, 30, 30), (40, 60, 120), (190, 180, 150),
)


@dataclass
class Candidate:
    """A building proposed in a block frame, before the checks that it fits."""

    geom: Polygon
    shape: str
    use: str
    roof: str
    height_m: float
    color: RGB
    anchor: tuple[float, float] | None = None  # frame point it moves with (its lot centre; None: itself)
    parent: int | None = None  # for a driveway: the index of the building it leads to


@dataclass
class Contents:
    """What filling blocks produced (local metres)."""

    buildings: list[Candidate] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)
    trees: list[tuple[float, ...]] = field(default_factory=list)
    cars: list[Polygon] = field(default_factory=list)
    car_colors: list[RGB] = field(default_factory=list)
    markings: list[LineString] = field(default_factory=list)
    footways: list[Road] = field(default_factory=list)
    paved: list[Polygon] = field(default_factory=list)

    def extend(self, other: Contents) -> None:
        """Append everything ``other`` holds, list by list."""
        for f in fields(self):
            getattr(self, f.name).extend(getattr(other, f.name))


class Frame:
    """A block in its own frame: x runs along the block's long street axis, y across it, in
    parameter-plane metres (x, y) = (u, v), or (v, -u) when the block is longer in v.

    Points map to local metres through the warp exactly; a building maps rigidly (turned to
    the local street direction at its centre), so it stays a true rectangle on curved streets.
    """

    def __init__(self, warp: Warp, block: Block, region: Polygon | MultiPolygon) -> None:
        self.warp = warp
        self.along_u = (block.u1 - block.u0) >= (block.v1 - block.v0)
        k0, k1, k2, k3 = block.kerb
        if self.along_u:
            self.bounds = (block.u0 + k0, block.v0 + k2, block.u1 - k1, block.v1 - k3)
        else:
            self.bounds = (block.v0 + k2, -(block.u1 - k1), block.v1 - k3, -(block.u0 + k0))
        self.region = region
        self.inner = region.buffer(-1.0)

    def _uv(self, x: NDArray[np.float64], y: NDArray[np.float64]) -> tuple[NDArray[np.float64], ...]:
        return (x, y) if self.along_u else (-y, x)

    def points(self, xy: NDArray[np.float64]) -> NDArray[np.float64]:
        """(n, 2) frame coordinates -> (n, 2) local metres."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        u, v = self._uv(xy[:, 0], xy[:, 1])
        return self.warp(u, v)

    def angle(self, x: float, y: float) -> float:
        """Direction (radians from east, local metres) of the frame's x axis at (x, y)."""
        u, v = (x, y) if self.along_u else (-y, x)
        return self.warp.angle_u(u, v) if self.along_u else self.warp.angle_v(u, v)

    def place(self, geoms: list[Polygon], anchors: list[tuple[float, float] | None] | None = None
              ) -> list[Polygon]:
        """Move frame-space shapes rigidly to local metres: each with its anchor point (default
        its centroid) taken by the warp and turned to the local street direction there, so
        shapes that share an anchor keep their relative places."""
        out = []
        for i, g in enumerate(geoms):
            anchor = anchors[i] if anchors is not None else None
            cx, cy = anchor if anchor is not None else (g.centroid.x, g.centroid.y)
            p = self.points(np.array([[cx, cy]]))[0]
            moved = shapes.rotate_about(np.array([g], dtype=object), self.angle(cx, cy), cx, cy)[0]
            out.append(shapely.transform(moved, lambda xy, d=p - (cx, cy): xy + d))
        return out

    def area(self, poly: Polygon) -> Polygon:
        """A frame-space area mapped point by point (densified) to local metres."""
        dense = shapely.segmentize(poly, 3.0)
        return shapely.transform(dense, self.points)


def pick(rng: np.random.Generator, palette: tuple[RGB, ...]) -> RGB:
    """A colour of ``palette``, varied in brightness and with a little noise (8-bit RGB)."""
    base = np.array(palette[int(rng.integers(len(palette)))], dtype=float)
    col = base * rng.uniform(0.88, 1.12) + rng.normal(0.0, 5.0, 3)
    return (int(np.clip(col[0], 0, 255)), int(np.clip(col[1], 0, 255)), int(np.clip(col[2], 0, 255)))


def roof_color(rng: np.random.Generator, palette: tuple[RGB, ...], use: str) -> RGB:
    """A roof colour of ``palette``; one roof in 20 looks like its surroundings."""
    if rng.random() < 0.05:  # a roof that blends with its surroundings
        return pick(rng, CAMOUFLAGE[:1] if use in ("house", "garage", "shed") else CAMOUFLAGE[1:])
    return pick(rng, palette)


def trees_at(rng: np.random.Generator, xy: NDArray[np.float64], r_lo: float, r_hi: float,
             h_lo: float, h_hi: float) -> list[tuple[float, ...]]:
    """Trees at ``xy`` (local metres): (x, y, crown radius m, height m, r, g, b)."""
    out = []
    for x, y in xy:
        g = pick(rng, TREE_GREENS)
        out.append((float(x), float(y), rng.uniform(r_lo, r_hi), rng.uniform(h_lo, h_hi), *map(float, g)))
    return out
