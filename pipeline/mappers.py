"""Candidates for mappers: an OSM XML file for JOSM and line-delimited GeoJSON tasks for
MapRoulette.

The ``.osm`` file holds the ``missing_in_osm`` polygons as NEW objects: negative ids, no
version, the class's tags (its first include filter: ``building`` -> ``building=yes``,
``key=v1|v2`` -> ``key=v1``) plus ``source=osmsat`` and a ``fixme`` asking for a review. A class
without tag filters (vector labels: it takes every feature of the label files), or whose filters
are on the label files' attributes rather than OSM tags, gets the usual OSM tag of its name
(``building`` -> ``building=yes``, see ``NAME_TAGS``); a name without one gets no main tag and
the ``fixme`` asks the mapper to tag the object as that class. The
root element carries ``upload="never"``, so JOSM refuses to upload the layer as it is: a mapper
copies the objects they checked into their own data layer. Polygons with holes become
multipolygon relations (outer and inner ways).

Each MapRoulette task has a ``priority`` property from its candidate's mean predicted
probability (``prob_mean``): ``high`` at 0.85 or more, ``medium`` at 0.70 or more, ``low`` below
or without a probability (``PRIORITY_THRESHOLDS``); tasks come highest first (most probable
first within a level). In the challenge's settings, priority rules such as "``priority`` equals
``high``" (and ``medium``) turn it into MapRoulette's own task priority.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely

from pipeline.config import ClassSpec

if TYPE_CHECKING:
    import geopandas as gpd

GENERATOR = "osmsat"
#: MapRoulette task priority by the candidate's ``prob_mean``: the first level whose threshold it
#: reaches (``low`` below every threshold, and when there is no probability)
PRIORITY_THRESHOLDS: tuple[tuple[str, float], ...] = (("high", 0.85), ("medium", 0.70))


#: the main tag of a new area object by class name, for classes without OSM tag filters
NAME_TAGS: dict[str, tuple[str, str]] = {
    "building": ("building", "yes"), "buildings": ("building", "yes"),
    "water": ("natural", "water"), "park": ("leisure", "park"), "forest": ("landuse", "forest"),
    "parking": ("amenity", "parking"),
}


def class_tags(c: ClassSpec, osm_labels: bool = True) -> dict[str, str]:
    """The main tag a new object of class ``c`` gets: its first include filter (``yes`` for any
    value) when the class has filters on OSM tags; otherwise (no filters, or ``osm_labels`` False:
    filters on vector label attributes) the tag ``NAME_TAGS`` gives its name, or none."""
    if osm_labels and c.tags:
        f = c.tags[0]
        return {f.key: f.values[0] if f.values else "yes"}
    known = NAME_TAGS.get(c.name.lower())
    return {} if known is None else {known[0]: known[1]}


def candidate_tags(c: ClassSpec, prob: float | None, osm_labels: bool = True) -> dict[str, str]:
    """Every tag of a new candidate object of class ``c``: the class's main tag, ``source`` and a
    ``fixme`` asking for a review (and for tags, when the class has no main tag)."""
    main = class_tags(c, osm_labels)
    what = f"osmsat candidate ({c.name}" + (f", p={prob:.2f}" if prob is not None else "") + ")"
    todo = "check against imagery" if main else f"check against imagery and tag it as a {c.name}"
    return {**main, "source": GENERATOR, "fixme": f"{what}: {todo}"}


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


def osm_xml(missing: gpd.GeoDataFrame, classes: tuple[ClassSpec, ...], osm_labels: bool = True) -> bytes:
    """The ``missing_in_osm`` layer (EPSG:4326) as an OSM XML file of new objects (see module doc);
    ``osm_labels`` False: the classes' tag filters are on vector label attributes, not OSM tags."""
    by_name = {c.name: c for c in classes}
    w = _Writer()
    for cls, prob, geom in zip(missing["class"], missing.get("prob_mean", [None] * len(missing)), missing.geometry):
        p = None if prob is None or math.isnan(prob) else float(prob)  # absent or NaN: no probability
        tags = candidate_tags(by_name[cls], p, osm_labels)
        for poly in shapely.get_parts(geom):
            w.polygon(poly, tags)
    return w.xml()


def priority(prob: float | None) -> str:
    """A candidate's MapRoulette priority from its ``prob_mean`` (``PRIORITY_THRESHOLDS``)."""
    if prob is None or not math.isfinite(prob):
        return "low"
    return next((level for level, t in PRIORITY_THRESHOLDS if prob >= t), "low")


def maproulette_tasks(missing: gpd.GeoDataFrame, region: str) -> bytes:
    """Line-delimited GeoJSON: one FeatureCollection per candidate (a MapRoulette task), each
    line opened by the record separator (RS, 0x1E) as MapRoulette's line-by-line format asks,
    with a stable ``id`` (the candidate's own, from its position; else its row), its
    ``priority`` (see the module doc) and the instruction in the feature's properties; highest
    priority first, then most probable, then by id."""
    lines = []
    geoms = shapely.transform(missing.geometry.to_numpy(), lambda c: np.round(c, 7))
    ids = (missing["id"].tolist() if "id" in missing.columns
           else [f"{c}-{k + 1}" for k, c in enumerate(missing["class"])])
    probs = [float(v) if v is not None and math.isfinite(float(v)) else None
             for v in (missing["prob_mean"] if "prob_mean" in missing.columns else [None] * len(missing))]
    levels = [level for level, _ in PRIORITY_THRESHOLDS] + ["low"]
    score = [-1.0 if p is None else p for p in probs]
    order = sorted(range(len(missing)), key=lambda k: (levels.index(priority(probs[k])), -score[k], str(ids[k])))
    for k in order:
        cls, geom = missing["class"].iloc[k], geoms[k]
        c = shapely.centroid(geom)
        tid = f"osmsat-{region}-{ids[k]}"
        props = {"id": tid, "class": cls, "source": GENERATOR, "priority": priority(probs[k]),
                 "instruction": f"The imagery shows a {cls} here that OpenStreetMap lacks: map it if it is there.",
                 "lon": round(float(c.x), 7), "lat": round(float(c.y), 7)}
        for key in ("prob_mean", "area_m2"):
            v = float(missing[key].iloc[k]) if key in missing.columns else math.nan
            if math.isfinite(v):  # NaN is no JSON
                props[key] = v
        feat = {"type": "Feature", "id": tid, "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}
        lines.append("\x1e" + json.dumps({"type": "FeatureCollection", "features": [feat]}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode() if lines else b""
