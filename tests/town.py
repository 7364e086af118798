"""A tiny seeded town written as an OSM PBF with pyosmium, for tests (no committed binaries).

The town sits at ``tests.pbf_fixtures.ORIGIN`` (near 24.94 E, 60.17 N): a grid of ``rows`` x
``cols`` rectangular buildings of random size, streets between the rows (alternating highway
classes), one building with a courtyard as a multipolygon relation, one ``building=no`` way, and
a park.
"""

from __future__ import annotations

import random
from pathlib import Path

from tests.pbf_fixtures import PbfBuilder


def _rect(x: float, y: float, w: float, h: float) -> list[tuple[float, float]]:
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


def write_town(path: Path, seed: int = 7, rows: int = 8, cols: int = 10, pitch_m: float = 40.0) -> dict[str, int]:
    """Write the town to ``path``; returns counts of what it holds (buildings, roads, ...)."""
    rnd = random.Random(seed)
    b = PbfBuilder(seed=seed)
    buildings = 0
    for r in range(rows):
        for c in range(cols):
            w, h = rnd.uniform(8, 22), rnd.uniform(8, 18)
            b.ring(_rect(c * pitch_m + rnd.uniform(0, 10), r * pitch_m + 8 + rnd.uniform(0, 8), w, h),
                   {"building": rnd.choice(["yes", "house", "apartments"])})
            buildings += 1
    classes = ["residential", "primary", "service", "footway"]
    for r in range(rows + 1):
        y = r * pitch_m
        b.line([(-10.0, y + 2), (cols * pitch_m / 2, y + 3), (cols * pitch_m + 10, y + 2)],
               {"highway": classes[r % len(classes)], "name": f"Street {r}"})
    # a courtyard building: multipolygon relation (outer 30x30 m, inner 12x12 m)
    ox, oy = cols * pitch_m + 30, 20.0
    outer = b.ring(_rect(ox, oy, 30, 30), {})
    inner = b.ring(_rect(ox + 9, oy + 9, 12, 12), {})
    b.relation([("w", outer, "outer"), ("w", inner, "inner")], {"type": "multipolygon", "building": "yes"})
    buildings += 1
    b.ring(_rect(ox, oy + 50, 10, 10), {"building": "no", "amenity": "shelter"})
    b.ring(_rect(ox, oy + 80, 40, 25), {"leisure": "park"})
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
