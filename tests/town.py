"""A tiny seeded town written as an OSM PBF with pyosmium, for tests (no committed binaries).

The town sits near (24.94 E, 60.17 N): a grid of ``rows`` x ``cols`` rectangular buildings of
random size, streets between the rows (alternating highway classes), one building with a
courtyard as a multipolygon relation, one ``building=no`` way, and a park.
"""

from __future__ import annotations

import random
from pathlib import Path

import osmium
from osmium.osm.mutable import Node, Relation, Way

LON0, LAT0 = 24.940, 60.170
M_PER_DEG_LAT = 111_320.0
STAMP = "2024-01-01T00:00:00Z"


def _deg(dx_m: float, dy_m: float) -> tuple[float, float]:
    """Ground metres east/north of the town origin -> (lon, lat)."""
    import math

    return (LON0 + dx_m / (M_PER_DEG_LAT * math.cos(math.radians(LAT0))), LAT0 + dy_m / M_PER_DEG_LAT)


class _Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.ways: list[Way] = []
        self.rels: list[Relation] = []

    def node(self, x: float, y: float) -> int:
        nid = len(self.nodes) + 1
        lon, lat = _deg(x, y)
        self.nodes.append(Node(id=nid, location=(round(lon, 7), round(lat, 7)), version=1, timestamp=STAMP,
                               changeset=1, uid=1, user="test", tags={}))
        return nid

    def way(self, pts: list[tuple[float, float]], tags: dict[str, str], closed: bool) -> int:
        refs = [self.node(x, y) for x, y in pts]
        if closed:
            refs.append(refs[0])
        wid = len(self.ways) + 1
        self.ways.append(Way(id=wid, nodes=refs, tags=tags, version=1, timestamp=STAMP, changeset=1, uid=1,
                             user="test"))
        return wid

    def relation(self, members: list[tuple[str, int, str]], tags: dict[str, str]) -> int:
        rid = len(self.rels) + 1
        self.rels.append(Relation(id=rid, members=members, tags=tags, version=1, timestamp=STAMP, changeset=1,
                                  uid=1, user="test"))
        return rid

    def write(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        w = osmium.SimpleWriter(str(path))
        try:
            for n in self.nodes:
                w.add_node(n)
            for way in self.ways:
                w.add_way(way)
            for r in self.rels:
                w.add_relation(r)
        finally:
            w.close()


def _rect(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def write_town(path: Path, seed: int = 7, rows: int = 8, cols: int = 10, pitch_m: float = 40.0) -> dict[str, int]:
    """Write the town to ``path``; returns counts of what it holds (buildings, roads, ...)."""
    rnd = random.Random(seed)
    b = _Builder()
    buildings = 0
    for r in range(rows):
        for c in range(cols):
            w, h = rnd.uniform(8, 22), rnd.uniform(8, 18)
            b.way(_rect(c * pitch_m + rnd.uniform(0, 10), r * pitch_m + 8 + rnd.uniform(0, 8), w, h),
                  {"building": rnd.choice(["yes", "house", "apartments"])}, closed=True)
            buildings += 1
    classes = ["residential", "primary", "service", "footway"]
    for r in range(rows + 1):
        b.way([(-10.0, r * pitch_m + 2), (cols * pitch_m / 2, r * pitch_m + 3), (cols * pitch_m + 10, r * pitch_m + 2)],
              {"highway": classes[r % len(classes)], "name": f"Street {r}"}, closed=False)
    # a courtyard building: multipolygon relation (outer 30x30 m, inner 12x12 m)
    ox, oy = cols * pitch_m + 30, 20.0
    outer = b.way(_rect(ox, oy, 30, 30), {}, closed=True)
    inner = b.way(_rect(ox + 9, oy + 9, 12, 12), {}, closed=True)
    b.relation([("w", outer, "outer"), ("w", inner, "inner")], {"type": "multipolygon", "building": "yes"})
    buildings += 1
    b.way(_rect(ox, oy + 50, 10, 10), {"building": "no", "amenity": "shelter"}, closed=True)
    b.way(_rect(ox, oy + 80, 40, 25), {"leisure": "park"}, closed=True)
    b.write(path)
    return {"buildings": buildings, "roads": rows + 1}


def write_town_config(path: Path, pbf: Path, data_dir: Path, zoom: int = 19, shard_zoom: int = 17,
                      extra: str = "", ignore_ring_px: int = 0) -> Path:
    """Write a region config for a town PBF; ``extra`` is appended verbatim (more TOML)."""
    path.write_text(f"""
[region]
name = "town"
zoom = {zoom}
tile_size = 256
shard_zoom = {shard_zoom}
data_dir = "{data_dir}"

[osm]
path = "{pbf}"

[masks]
ignore_ring_px = {ignore_ring_px}

[[classes]]
name = "building"
id = 1
kind = "area"
priority = 30
tags = ["building"]
exclude = ["building=no"]

[[classes]]
name = "road"
id = 2
kind = "line"
priority = 20
tags = ["highway=primary|residential|service|footway"]
buffer_m = 3.0
buffer_m_by_value = {{ primary = 6.0, footway = 1.0 }}

[[classes]]
name = "park"
id = 3
kind = "area"
priority = 10
tags = ["leisure=park"]
{extra}
""")
    return path
