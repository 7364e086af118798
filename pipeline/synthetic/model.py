"""The generated town as plain data: roads, areas, buildings, trees and cars in local metres.

Local metres: x east and y north from the south-west corner of the orthophoto, which spans
``[0, size_m] x [0, size_m]``; add ``(left, bottom)`` for UTM easting/northing (``epsg``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from shapely.geometry import LineString, Polygon

#: carriageway half-width in metres by highway value (what is painted, and the mask buffer)
ROAD_HALF_WIDTH_M: dict[str, float] = {
    "primary": 7.0, "secondary": 6.0, "tertiary": 5.0, "residential": 4.0, "service": 2.5, "footway": 1.2,
}
#: sidewalk width in metres beyond the carriageway, by highway value
SIDEWALK_M: dict[str, float] = {
    "primary": 2.5, "secondary": 2.5, "tertiary": 2.0, "residential": 1.6, "service": 0.0, "footway": 0.0,
}
#: building and road statuses in truth.geojson
STATUSES = ("mapped", "missing_in_osm", "demolished")


class _Status:
    """Where a feature of ``status`` (see ``STATUSES``) appears: in OSM, in the image."""

    status: str

    @property
    def in_osm(self) -> bool:
        return self.status != "missing_in_osm"

    @property
    def in_image(self) -> bool:
        return self.status != "demolished"


@dataclass
class Road(_Status):
    """A street centreline (local metres); closed when ``junction == 'roundabout'``. A road
    ``missing_in_osm`` is in the image only, a ``demolished`` one in OSM only (see ``STATUSES``)."""

    coords: NDArray[np.float64]
    highway: str
    name: str
    junction: str | None = None
    status: str = "mapped"

    @property
    def line(self) -> LineString:
        return LineString(self.coords)


@dataclass
class Area:
    """A mapped area: ``kind`` is park, parking or water (water may have islands as holes)."""

    geom: Polygon
    kind: str
    name: str = ""


@dataclass
class Building(_Status):
    """A building as the image shows it (local metres). ``offset`` (metres east, north) shifts
    its OSM copy; demolished buildings are in OSM only, missing ones in the image only."""

    id: int
    geom: Polygon
    shape: str  # rect | L | U | courtyard
    use: str  # the building=* value
    roof: str  # gable | hip | flat
    height_m: float
    color: tuple[int, int, int]
    status: str = "mapped"
    offset: tuple[float, float] = (0.0, 0.0)


@dataclass
class Town:
    """Everything generated for one seed. ``trees``: (n, 7) x, y, radius, height, r, g, b."""

    seed: int
    epsg: int
    left: float  # UTM easting of the image's west edge (metres)
    bottom: float  # UTM northing of the image's south edge (metres)
    res: float  # metres per pixel
    size_px: int  # the image is size_px x size_px pixels
    roads: list[Road] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)
    buildings: list[Building] = field(default_factory=list)
    trees: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 7)))
    cars: list[Polygon] = field(default_factory=list)
    car_colors: list[tuple[int, int, int]] = field(default_factory=list)
    markings: list[LineString] = field(default_factory=list)
    islands: list[Polygon] = field(default_factory=list)  # roundabout islands (grass, not in OSM)
    bare: list[Polygon] = field(default_factory=list)  # bare soil where demolished buildings stood
    paved: list[Polygon] = field(default_factory=list)  # yards, aprons and driveways (not in OSM)

    @property
    def size_m(self) -> float:
        return self.size_px * self.res

    @property
    def local_transform(self) -> Affine:
        """Pixel (col, row) -> local metres."""
        return Affine(self.res, 0.0, 0.0, 0.0, -self.res, self.size_m)

    @property
    def utm_transform(self) -> Affine:
        """Pixel (col, row) -> UTM metres (EPSG ``epsg``): the orthophoto's geotransform."""
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.bottom + self.size_m)
