"""Tiny OSM PBF files for tests, written with pyosmium from seeded code (no committed binaries).

Coordinates are given in ground metres east/north of an origin near central Helsinki and
jittered by a few centimetres from ``random.Random(seed)``; ids are assigned in increasing
order, so the files are sorted by type, then id. ``sorted_header`` declares that in the PBF
header (``Sort.Type_then_ID``), which switches the extractor to its relation-tail fast path.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import osmium
from osmium.osm.mutable import Node, Relation, Way

from pipeline.config.region import ClassSpec, TagFilter

ORIGIN = (24.940, 60.170)  # lon, lat
M_PER_DEG = 111_320.0
STAMP = "2024-01-01T00:00:00Z"
MISSING_NODE = 9_000_000_000  # a node id no fixture writes
MISSING_WAY = 900_000_000


def helsinki_like_classes() -> tuple[ClassSpec, ...]:
    """The four classes of configs/helsinki.toml (water, park, road, building)."""
    def tags(*texts: str) -> tuple[TagFilter, ...]:
        return tuple(TagFilter.parse(t, "test") for t in texts)

    road_values = ("motorway|trunk|primary|secondary|tertiary|unclassified|residential|service|living_street|"
                   "pedestrian|footway|cycleway|path")
    return (
        ClassSpec("water", 3, "area", 10, tags("natural=water", "waterway=riverbank", "landuse=reservoir|basin")),
        ClassSpec("park", 4, "area", 20, tags("leisure=park|garden|playground", "landuse=grass")),
        ClassSpec("road", 2, "line", 30, tags(f"highway={road_values}"),
                  exclude=tags("area=yes", "tunnel=yes", "indoor=yes"), buffer_m=3.0,
                  buffer_m_by_value=(("motorway", 10.0), ("residential", 4.0), ("service", 2.5))),
        ClassSpec("building", 1, "area", 40, tags("building"), exclude=tags("building=no")),
    )


@dataclass
class PbfBuilder:
    """Collects nodes, ways and relations in metres; ``write`` produces the PBF."""

    seed: int = 0
    nodes: list[Node] = field(default_factory=list)
    ways: list[Way] = field(default_factory=list)
    rels: list[Relation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Ground metres east/north of ORIGIN -> (lon, lat), with a seeded jitter under 5 cm."""
        x += self.rng.uniform(-0.05, 0.05)
        y += self.rng.uniform(-0.05, 0.05)
        lon = ORIGIN[0] + x / (M_PER_DEG * math.cos(math.radians(ORIGIN[1])))
        return (round(lon, 7), round(ORIGIN[1] + y / M_PER_DEG, 7))

    def node(self, x: float, y: float, tags: dict[str, str] | None = None) -> int:
        nid = len(self.nodes) + 1
        self.nodes.append(Node(id=nid, location=self.lonlat(x, y), tags=tags or {}, version=1, timestamp=STAMP))
        return nid

    def way(self, refs: list[int], tags: dict[str, str] | None = None) -> int:
        wid = len(self.ways) + 1
        self.ways.append(Way(id=wid, nodes=refs, tags=tags or {}, version=1, timestamp=STAMP))
        return wid

    def line(self, pts: list[tuple[float, float]], tags: dict[str, str] | None = None) -> int:
        return self.way([self.node(x, y) for x, y in pts], tags)

    def ring(self, pts: list[tuple[float, float]], tags: dict[str, str] | None = None) -> int:
        """A closed way through ``pts`` (the first node repeated at the end)."""
        refs = [self.node(x, y) for x, y in pts]
        return self.way([*refs, refs[0]], tags)

    def relation(self, members: list[tuple[str, int, str]], tags: dict[str, str]) -> int:
        rid = len(self.rels) + 1
        self.rels.append(Relation(id=rid, members=members, tags=tags, version=1, timestamp=STAMP))
        return rid

    def write(self, path: Path, sorted_header: bool = True, fmt: str = "pbf") -> Path:
        """Write the PBF (``fmt``: an osmium format string, e.g. ``pbf,pbf_compression=none``)."""
        path.unlink(missing_ok=True)
        header = osmium.io.Header()
        header.set("generator", "osmsat tests")
        if sorted_header:
            header.set("sorting", "Type_then_ID")
        with osmium.SimpleWriter(osmium.io.File(str(path), fmt), header=header) as w:
            for n in self.nodes:
                w.add_node(n)
            for way in self.ways:
                w.add_way(way)
            for r in self.rels:
                w.add_relation(r)
        return path


def rect(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    """Corners of an axis-aligned w x h metre rectangle with lower-left corner (x, y)."""
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


@dataclass
class Sample:
    """A written fixture and the ids of its named objects (way or relation ids)."""

    path: Path
    ids: dict[str, int]


def write_sample(path: Path, seed: int = 1, sorted_header: bool = True) -> Sample:
    """Every case the extractor must handle, each at its own place (see the names)."""
    b = PbfBuilder(seed)
    ids: dict[str, int] = {}
    ids["building"] = b.ring(rect(0, 0, 20, 15), {"building": "yes", "name": "A"})
    # courtyard: outer 40 x 40, inner 10 x 10 in the middle
    outer = b.ring(rect(100, 0, 40, 40))
    inner = b.ring(rect(115, 15, 10, 10))
    ids["courtyard"] = b.relation([("w", outer, "outer"), ("w", inner, "inner")],
                                  {"type": "multipolygon", "building": "apartments"})
    ids["building_no"] = b.ring(rect(200, 0, 10, 10), {"building": "no", "amenity": "shelter"})
    ids["motorway"] = b.line([(0, 100), (100, 100), (200, 110)], {"highway": "motorway"})
    ids["residential"] = b.line([(0, 150), (80, 150)], {"highway": "residential"})
    ids["living_street"] = b.line([(0, 170), (80, 170)], {"highway": "living_street"})
    ids["tunnel"] = b.line([(0, 190), (80, 190)], {"highway": "primary", "tunnel": "yes"})
    ids["pedestrian_area"] = b.ring(rect(300, 0, 30, 30), {"highway": "pedestrian", "area": "yes"})
    ids["roundabout"] = b.ring([(400, 0), (420, 0), (420, 20), (400, 20)], {"highway": "primary",
                                                                           "junction": "roundabout"})
    # riverbank: one multipolygon of two separate outer rings
    r1 = b.ring(rect(0, 300, 50, 20))
    r2 = b.ring(rect(100, 300, 50, 20))
    ids["riverbank"] = b.relation([("w", r1, "outer"), ("w", r2, "outer")],
                                  {"type": "multipolygon", "waterway": "riverbank"})
    # nodes missing from the extract (a way crossing its edge)
    ids["missing_node_road"] = b.way([b.node(0, 400), MISSING_NODE, b.node(50, 400)], {"highway": "service"})
    a, c, d = b.node(100, 400), b.node(110, 400), b.node(110, 410)
    ids["missing_node_building"] = b.way([a, c, d, MISSING_NODE, a], {"building": "yes"})
    part = b.ring(rect(200, 400, 10, 10))
    ids["missing_member"] = b.relation([("w", part, "outer"), ("w", MISSING_WAY, "outer")],
                                       {"type": "multipolygon", "building": "yes"})
    # self-intersecting (figure-of-eight) building: repaired, not dropped
    ids["bowtie"] = b.ring([(300, 400), (320, 420), (320, 400), (300, 420)], {"building": "yes"})
    ids["park_building"] = b.ring(rect(400, 400, 20, 20), {"building": "yes", "leisure": "park"})
    p = b.node(500, 400)
    ids["degenerate"] = b.way([p, p], {"highway": "service"})
    q, r = b.node(500, 450), b.node(510, 450)
    ids["two_point_ring"] = b.way([q, r, q], {"building": "yes"})
    ids["area_no"] = b.ring(rect(600, 0, 10, 10), {"building": "yes", "area": "no"})
    ids["untagged"] = b.ring(rect(600, 100, 10, 10))
    b.write(path, sorted_header)
    return Sample(path, ids)


def write_grid(path: Path, n: int, seed: int = 2, sorted_header: bool = True, fmt: str = "pbf") -> Path:
    """``n`` x ``n`` buildings (every third one a multipolygon with a courtyard) and a street
    per row: large enough to span several PBF blocks of each type."""
    b = PbfBuilder(seed)
    rng = random.Random(seed)
    for i in range(n):
        for j in range(n):
            x, y = 30.0 * i, 30.0 * j
            w, h = rng.uniform(8, 20), rng.uniform(8, 20)
            if (i * n + j) % 3:
                b.ring(rect(x, y, w, h), {"building": "yes"})
            else:
                outer = b.ring(rect(x, y, w, h))
                inner = b.ring(rect(x + w / 4, y + h / 4, w / 2, h / 2))
                b.relation([("w", outer, "outer"), ("w", inner, "inner")],
                           {"type": "multipolygon", "building": "yes"})
        b.line([(30.0 * i - 5, -5), (30.0 * i - 5, 30.0 * n)], {"highway": "residential"})
    return b.write(path, sorted_header, fmt)
