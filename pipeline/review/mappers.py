"""Candidates for mappers: an OSM XML file for JOSM and line-delimited GeoJSON tasks for
MapRoulette.

The ``.osm`` file holds the ``missing_in_osm`` candidates as NEW objects: negative ids, no
version, the class's tags (its first include filter: ``building`` -> ``building=yes``,
``key=v1|v2`` -> ``key=v1``) plus ``source=osmsat`` and a ``fixme`` asking for a review. A class
without tag filters (vector labels: it takes every feature of the label files), or whose filters
are on the label files' attributes rather than OSM tags, gets the usual OSM tag of its name
(``building`` -> ``building=yes``, see ``NAME_TAGS``); a name without one gets no main tag and
the ``fixme`` asks the mapper to tag the object as that class. Areas are closed ways (polygons
with holes: multipolygon relations, outer and inner ways); line candidates (centrelines of a
line class, e.g. roads) are open ways, one per line part. A line class filtered on ``highway``
(``highway=primary|secondary|...``) gets ``highway=road``, OSM's tag for a road whose class is
not known yet: the mapper picks the class when checking it. The root element carries
``upload="never"``, so JOSM refuses to upload the layer as it is: a mapper copies the objects
they checked into their own data layer.

Candidates are ranked by their ``score`` (a calibrated probability in [0, 1] that the change is
real) when the layer has that column, else by their mean predicted probability (``prob_mean``);
a missing or NaN value ranks last. The ``.osm`` file writes them best first and tags them
``osmsat:score`` (2 decimals) when there is a score. Each MapRoulette task has a ``priority``
property from the same value: ``high`` at 0.85 or more, ``medium`` at 0.70 or more, ``low``
below or without one (``PRIORITY_THRESHOLDS``); tasks come highest first (best first within a
level, then by id). In the challenge's settings, priority rules such as "``priority`` equals
``high``" (and ``medium``) turn it into MapRoulette's own task priority.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr

import numpy as np
import shapely

from pipeline.config.region import ClassSpec

if TYPE_CHECKING:
    import geopandas as gpd

GENERATOR = "osmsat"
#: MapRoulette task priority by the candidate's ``score`` (else ``prob_mean``): the first level
#: whose threshold it reaches (``low`` below every threshold, and when there is no value)
PRIORITY_THRESHOLDS: tuple[tuple[str, float], ...] = (("high", 0.85), ("medium", 0.70))
#: the OSM tag of a road whose class (primary, residential, ...) is not known yet
ROAD_TAG: tuple[str, str] = ("highway", "road")
#: the OSM tag that carries a candidate's score
SCORE_TAG = "osmsat:score"


#: the main tag of a new object by class name, for classes without OSM tag filters
NAME_TAGS: dict[str, tuple[str, str]] = {
    "building": ("building", "yes"), "buildings": ("building", "yes"),
    "water": ("natural", "water"), "park": ("leisure", "park"), "forest": ("landuse", "forest"),
    "parking": ("amenity", "parking"), "road": ROAD_TAG, "roads": ROAD_TAG,
}


def class_tags(c: ClassSpec, osm_labels: bool = True) -> dict[str, str]:
    """The main tag a new object of class ``c`` gets: its first include filter (``yes`` for any
    value) when the class has filters on OSM tags; otherwise (no filters, or ``osm_labels`` False:
    filters on vector label attributes) the tag ``NAME_TAGS`` gives its name, or none. A line
    class whose main tag is a ``highway`` gets ``highway=road`` (``ROAD_TAG``): a candidate's
    road class is the mapper's call."""
    if osm_labels and c.tags:
        f = c.tags[0]
        main = {f.key: f.values[0] if f.values else "yes"}
    else:
        known = NAME_TAGS.get(c.name.lower())
        main = {} if known is None else {known[0]: known[1]}
    if c.kind == "line" and ROAD_TAG[0] in main:
        return {ROAD_TAG[0]: ROAD_TAG[1]}
    return main


def candidate_tags(c: ClassSpec, prob: float | None, osm_labels: bool = True,
                   score: float | None = None) -> dict[str, str]:
    """Every tag of a new candidate object of class ``c``: the class's main tag, ``source``, a
    ``fixme`` asking for a review (and for tags, when the class has no main tag; for the road
    class, when it is ``highway=road``) and ``osmsat:score`` (2 decimals) when there is a score."""
    main = class_tags(c, osm_labels)
    what = f"osmsat candidate ({c.name}" + (f", p={prob:.2f}" if prob is not None else "") + ")"
    if not main:
        todo = f"check against imagery and tag it as a {c.name}"
    elif main == {ROAD_TAG[0]: ROAD_TAG[1]}:
        todo = "check against imagery and set its highway class"
    else:
        todo = "check against imagery"
    tags = {**main, "source": GENERATOR, "fixme": f"{what}: {todo}"}
    if score is not None:
        tags[SCORE_TAG] = f"{score:.2f}"
    return tags


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

    def way(self, coords: np.ndarray, tags: dict[str, str], closed: bool = True) -> int:
        """A way through ``coords`` (lon/lat); ``closed``: a ring whose last point repeats the
        first (the way ends on its first node). Returns its id."""
        refs = []
        for lon, lat in (coords[:-1] if closed else coords):
            nid = self._id()
            self.nodes.append(f'  <node id="{nid}" lat="{lat:.7f}" lon="{lon:.7f}"/>')
            refs.append(nid)
        if closed:
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

    def part(self, geom: Any, tags: dict[str, str]) -> None:
        """One part of a candidate: a polygon, or a line as an open way (a ring that closes on
        itself: a closed way)."""
        if isinstance(geom, shapely.Polygon):
            self.polygon(geom, tags)
        elif isinstance(geom, shapely.LineString) and len(geom.coords) >= 2:
            self.way(shapely.get_coordinates(geom), tags, closed=bool(geom.is_closed and len(geom.coords) > 3))

    def xml(self) -> bytes:
        head = ("<?xml version='1.0' encoding='UTF-8'?>\n"
                f'<osm version="0.6" generator="{GENERATOR}" upload="never">')
        return "\n".join([head, *self.nodes, *self.ways, *self.relations, "</osm>\n"]).encode()


def _tags(tags: dict[str, str]) -> str:
    return "".join(f"\n    <tag k={quoteattr(k)} v={quoteattr(v)}/>" for k, v in tags.items())


def _column(layer: gpd.GeoDataFrame, key: str) -> list[float | None]:
    """Column ``key`` as floats, None where it is absent, NaN or not finite."""
    if key not in layer.columns:
        return [None] * len(layer)
    out: list[float | None] = []
    for v in layer[key]:
        f = math.nan if v is None else float(v)
        out.append(f if math.isfinite(f) else None)
    return out


def ranking(layer: gpd.GeoDataFrame) -> list[float | None]:
    """Each candidate's ranking value: its ``score`` when the layer has that column, else its
    ``prob_mean`` (None: no value, ranked last)."""
    return _column(layer, "score" if "score" in layer.columns else "prob_mean")


def osm_xml(missing: gpd.GeoDataFrame, classes: tuple[ClassSpec, ...], osm_labels: bool = True) -> bytes:
    """The ``missing_in_osm`` layer (EPSG:4326; areas and lines) as an OSM XML file of new
    objects, best candidate first (see module doc); ``osm_labels`` False: the classes' tag
    filters are on vector label attributes, not OSM tags."""
    by_name = {c.name: c for c in classes}
    probs, scores, rank = _column(missing, "prob_mean"), _column(missing, "score"), ranking(missing)
    order = sorted(range(len(missing)), key=lambda k: (rank[k] is None, -(rank[k] or 0.0), k))
    w = _Writer()
    for k in order:
        tags = candidate_tags(by_name[missing["class"].iloc[k]], probs[k], osm_labels, scores[k])
        for part in shapely.get_parts(missing.geometry.iloc[k]):
            w.part(part, tags)
    return w.xml()


def priority(prob: float | None) -> str:
    """A candidate's MapRoulette priority from its score or ``prob_mean`` (``PRIORITY_THRESHOLDS``)."""
    if prob is None or not math.isfinite(prob):
        return "low"
    return next((level for level, t in PRIORITY_THRESHOLDS if prob >= t), "low")


def instruction(cls: str, line: bool) -> str:
    """What a MapRoulette task asks the mapper to do with a candidate of class ``cls``."""
    if line:
        return (f"The imagery shows a {cls} here that OpenStreetMap lacks: if it is there, map it as a way "
                "along its centre line, set its highway class and connect it to the roads it meets.")
    return f"The imagery shows a {cls} here that OpenStreetMap lacks: map it if it is there."


def maproulette_tasks(missing: gpd.GeoDataFrame, region: str) -> bytes:
    """Line-delimited GeoJSON: one FeatureCollection per candidate (a MapRoulette task; areas
    and lines), each line opened by the record separator (RS, 0x1E) as MapRoulette's
    line-by-line format asks, with a stable ``id`` (the candidate's own, from its position;
    else its row), its ``priority`` (see the module doc) and the instruction in the feature's
    properties, plus ``prob_mean``, ``score``, ``area_m2`` and ``length_m`` where known;
    highest priority first, then best score (or probability), then by id."""
    lines = []
    geoms = shapely.transform(missing.geometry.to_numpy(), lambda c: np.round(c, 7))
    ids = (missing["id"].tolist() if "id" in missing.columns
           else [f"{c}-{k + 1}" for k, c in enumerate(missing["class"])])
    rank = ranking(missing)
    levels = [level for level, _ in PRIORITY_THRESHOLDS] + ["low"]
    best = [-1.0 if r is None else r for r in rank]
    order = sorted(range(len(missing)), key=lambda k: (levels.index(priority(rank[k])), -best[k], str(ids[k])))
    for k in order:
        cls, geom = missing["class"].iloc[k], geoms[k]
        line = shapely.get_type_id(geom) in (1, 5)  # LineString, MultiLineString
        c = shapely.point_on_surface(geom) if line else shapely.centroid(geom)
        tid = f"osmsat-{region}-{ids[k]}"
        props = {"id": tid, "class": cls, "source": GENERATOR, "priority": priority(rank[k]),
                 "instruction": instruction(cls, line), "lon": round(float(c.x), 7), "lat": round(float(c.y), 7)}
        for key in ("prob_mean", "score", "area_m2", "length_m"):
            v = float(missing[key].iloc[k]) if key in missing.columns else math.nan
            if math.isfinite(v):  # NaN is no JSON
                props[key] = v
        feat = {"type": "Feature", "id": tid, "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}
        lines.append("\x1e" + json.dumps({"type": "FeatureCollection", "features": [feat]}, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode() if lines else b""
