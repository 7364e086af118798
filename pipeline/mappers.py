"""Candidates for mappers: an OSM XML file for JOSM and line-delimited GeoJSON tasks for
MapRoulette.

The ``.osm`` file holds the ``missing_in_osm`` polygons as NEW objects: negative ids, no
version, the class's tags (its first include filter: ``building`` -> ``building=yes``,
``key=v1|v2`` -> ``key=v1``) plus ``source=osmsat`` and a ``fixme`` asking for a review. The
root element carries ``upload="never"``, so JOSM refuses to upload the layer as it is: a mapper
copies the objects they checked into their own data layer. Polygons with holes become
multipolygon relations (outer and inner ways).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely

from pipeline.config import ClassSpec

if TYPE_CHECKING:
    import geopandas as gpd

GENERATOR = "osmsat"


def class_tags(c: ClassSpec) -> dict[str, str]:
    """The tags a new object of class ``c`` gets (its first include filter, ``yes`` for any value)."""
    f = c.tags[0]
    return {f.key: f.values[0] if f.values else "yes"}


class _Writer:
    """Accumulates nodes, ways and relations with decreasing negative ids."""

    def __init__(self) -> None:
        self.next_id = -1
        self.nodes: list[str] = []
        self.ways: list[str] = []
        self.relations: list[str] = []

    def _id(self) -> int:
        i = self.next_id
        self.next_id -= 1
        return i

    def way(self, ring: np.ndarray, tags: dict[str, str]) -> int:
        """A closed way through ``ring`` (lon/lat, last point = first); returns its id."""
        refs = []
        for lon, lat in ring[:-1]:
            nid = self._id()
            self.nodes.append(f'  <node id="{nid}" lat="{lat:.7f}" lon="{lon:.7f}"/>')
            refs.append(nid)
        refs.append(refs[0])
        wid = self._id()
        body = "".join(f'\n    <nd ref="{r}"/>' for r in refs) + _tags(tags)
        self.ways.append(f'  <way id="{wid}">{body}\n  </way>')
        return wid

    def polygon(self, poly: Any, tags: dict[str, str]) -> None:
        outer = shapely.get_coordinates(poly.exterior)
        if not poly.interiors:
            self.way(outer, tags)
            return
        members = [("outer", self.way(outer, {}))]
        members += [("inner", self.way(shapely.get_coordinates(r), {})) for r in poly.interiors]
        rid = self._id()
        body = "".join(f'\n    <member type="way" ref="{w}" role="{role}"/>' for role, w in members)
        self.relations.append(f'  <relation id="{rid}">{body}{_tags({"type": "multipolygon", **tags})}\n  </relation>')

    def xml(self) -> bytes:
        head = ("<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<osm version="0.6" generator="{GENERATOR}" upload="never">')
        return "\n".join([head, *self.nodes, *self.ways, *self.relations, "</osm>\n"]).encode()


def _tags(tags: dict[str, str]) -> str:
    return "".join(f"\n    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items())


def osm_xml(missing: gpd.GeoDataFrame, classes: tuple[ClassSpec, ...]) -> bytes:
    """The ``missing_in_osm`` layer (EPSG:4326) as an OSM XML file of new objects (see module doc)."""
    by_name = {c.name: c for c in classes}
    w = _Writer()
    for cls, prob, geom in zip(missing["class"], missing.get("prob_mean", [None] * len(missing)), missing.geometry):
        tags = {**class_tags(by_name[cls]), "source": GENERATOR,
                "fixme": f"osmsat candidate ({cls}" + (f", p={prob:.2f}" if prob is not None else "")
                + "): check against imagery"}
        for poly in shapely.get_parts(geom):
            w.polygon(poly, tags)
    return w.xml()


def maproulette_tasks(missing: gpd.GeoDataFrame, region: str) -> bytes:
    """Line-delimited GeoJSON: one FeatureCollection per candidate (a MapRoulette task), with a
    stable ``id`` and the instruction in the feature's properties."""
    lines = []
    geoms = shapely.transform(missing.geometry.to_numpy(), lambda c: np.round(c, 7))
    for k, (cls, geom) in enumerate(zip(missing["class"], geoms)):
        c = shapely.centroid(geom)
        tid = f"osmsat-{region}-{cls}-{k + 1}"
        props = {"id": tid, "class": cls, "source": GENERATOR,
                 "instruction": f"The imagery shows a {cls} here that OpenStreetMap lacks: map it if it is there.",
                 "lon": round(float(c.x), 7), "lat": round(float(c.y), 7)}
        for key in ("prob_mean", "area_m2"):
            if key in missing.columns:
                props[key] = float(missing[key].iloc[k])
        feat = {"type": "Feature", "id": tid, "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}
        lines.append(json.dumps({"type": "FeatureCollection", "features": [feat]}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode() if lines else b""
