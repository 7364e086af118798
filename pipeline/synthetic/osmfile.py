"""Write the town's OSM data (what a mapper would have mapped) as a ``.osm.pbf`` with pyosmium.

Streets are ways sharing their junction nodes; parks and car parks are closed ways; the lake is
a multipolygon relation (outer and inner ways); buildings are closed ways, or multipolygon
relations when they have a courtyard; touching buildings share the nodes of their common wall.
Buildings and roads ``missing_in_osm`` are left out (demolished ones are written: OSM still
has them); offset buildings are shifted by their offset. Ids count
from 1 per type and are written sorted (nodes, ways, relations), with fixed versions,
changesets, users and timestamps drawn from the seed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import osmium
import shapely
from numpy.typing import NDArray
from osmium.osm.mutable import Node, Relation, Way
from pyproj import Transformer
from shapely.geometry import Polygon

from pipeline.core.atomic import atomic_path
from pipeline.synthetic.model import Building, Town
from pipeline.synthetic.walls import node_walls

_EPOCH = dt.datetime(2016, 1, 1, tzinfo=dt.UTC)
_USERS = ("ana_maps", "bojan", "chiara_osm", "dmitri", "eun-ji", "femi", "gustavo", "hana")
_LEVEL_M = 3.0


@dataclass
class OsmIds:
    """The OSM objects written for the town: ``buildings`` maps ``Building.id`` to (osm_type,
    osm_id); ``roads`` maps a road's index in ``Town.roads`` to its way id. Objects OSM lacks
    (``missing_in_osm``) have no entry."""

    buildings: dict[int, tuple[str, int]] = field(default_factory=dict)
    roads: dict[int, int] = field(default_factory=dict)


class _Builder:
    """Collects nodes (deduplicated by position), ways and relations with OSM ids."""

    def __init__(self) -> None:
        self.index: dict[tuple[int, int], int] = {}
        self.xy: list[tuple[float, float]] = []
        self.ways: list[tuple[list[int], dict[str, str]]] = []
        self.relations: list[tuple[list[tuple[str, int, str]], dict[str, str]]] = []

    def node(self, x: float, y: float) -> int:
        key = (round(x * 1000.0), round(y * 1000.0))  # millimetres
        nid = self.index.get(key)
        if nid is None:
            self.xy.append((x, y))
            nid = self.index[key] = len(self.xy)
        return nid

    def way(self, coords: NDArray[np.float64], tags: dict[str, str]) -> int:
        self.ways.append(([self.node(float(x), float(y)) for x, y in coords], tags))
        return len(self.ways)

    def area(self, poly: Polygon, tags: dict[str, str]) -> tuple[str, int]:
        """A closed way, or a multipolygon relation when ``poly`` has holes."""
        if not poly.interiors:
            return "way", self.way(np.asarray(poly.exterior.coords), tags)
        members = [("w", self.way(np.asarray(poly.exterior.coords), {}), "outer")]
        members += [("w", self.way(np.asarray(r.coords), {}), "inner") for r in poly.interiors]
        self.relations.append((members, {"type": "multipolygon", **tags}))
        return "relation", len(self.relations)


def build(town: Town) -> tuple[_Builder, OsmIds]:
    """Turn the town into OSM objects; returns them and the ids of the buildings and roads written."""
    b = _Builder()
    ids = OsmIds()
    for k, road in enumerate(town.roads):
        if not road.in_osm:
            continue
        tags = {"highway": road.highway}
        if road.name:
            tags["name"] = road.name
        if road.junction:
            tags["junction"] = road.junction
        if road.highway in ("primary", "secondary", "tertiary", "residential"):
            tags["surface"] = "asphalt"
        ids.roads[k] = b.way(road.coords, tags)
    for a in town.areas:
        tags = {"park": {"leisure": "park"}, "parking": {"amenity": "parking", "parking": "surface"},
                "water": {"natural": "water", "water": "pond"}}[a.kind]
        if a.name:
            tags = {**tags, "name": a.name}
        b.area(a.geom, tags)
    mapped = [bld for bld in town.buildings if bld.in_osm]
    for bld, geom in zip(mapped, node_walls([_osm_geom(bld) for bld in mapped])):
        tags = {"building": bld.use, "building:levels": str(max(1, round(bld.height_m / _LEVEL_M)))}
        if bld.id % 3 == 0:
            tags["roof:shape"] = {"gable": "gabled", "hip": "hipped", "flat": "flat"}[bld.roof]
        ids.buildings[bld.id] = b.area(geom, tags)
    return b, ids


def _osm_geom(bld: Building) -> Polygon:
    """The footprint as OSM has it: shifted by the building's offset (metres east, north)."""
    if bld.offset == (0.0, 0.0):
        return bld.geom
    shift = np.array(bld.offset)
    return shapely.transform(bld.geom, lambda c: c + shift)


def write_osm(town: Town, path: str | Path) -> OsmIds:
    """Write ``town`` as an OSM PBF at ``path`` (atomically); returns the OSM ids of the
    buildings and roads that OSM has."""
    b, ids = build(town)
    xy = np.array(b.xy, dtype=float).reshape(-1, 2)
    lon, lat = Transformer.from_crs(town.epsg, 4326, always_xy=True).transform(
        xy[:, 0] + town.left, xy[:, 1] + town.bottom)
    lon, lat = np.round(lon, 7), np.round(lat, 7)
    rng = np.random.default_rng([town.seed, 2])
    header = osmium.io.Header()
    header.set("generator", "osmsat synthetic town")
    header.add_box(osmium.osm.Box(float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())))
    with atomic_path(path) as tmp:
        writer = osmium.SimpleWriter(osmium.io.File(str(tmp), "pbf"), header=header, overwrite=True)
        try:
            for i in range(len(xy)):
                writer.add_node(Node(location=(float(lon[i]), float(lat[i])), **_meta(rng, i + 1)))
            for i, (nodes, tags) in enumerate(b.ways):
                writer.add_way(Way(nodes=nodes, tags=tags, **_meta(rng, i + 1)))
            for i, (members, tags) in enumerate(b.relations):
                writer.add_relation(Relation(members=members, tags=tags, **_meta(rng, i + 1)))
        finally:
            writer.close()
    return ids


def _meta(rng: np.random.Generator, oid: int) -> dict[str, Any]:
    """Plausible, seeded object metadata: version, changeset, user and timestamp."""
    k = int(rng.integers(len(_USERS)))
    return {
        "id": oid, "version": int(rng.integers(1, 6)), "changeset": int(rng.integers(1_000_000, 9_000_000)),
        "uid": 1000 + k, "user": _USERS[k], "visible": True,
        "timestamp": _EPOCH + dt.timedelta(seconds=int(rng.integers(0, 8 * 365 * 86400))),
    }
