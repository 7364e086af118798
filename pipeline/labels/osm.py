"""Extract label features from an OpenStreetMap extract (``.osm.pbf``) with pyosmium.

Output: one row per (OSM object, class it matches), geometries in EPSG:4326 (lon/lat degrees):
areas (class kind ``area``) from closed ways and from multipolygon/boundary relations, as valid
Polygons/MultiPolygons (holes kept); lines (kind ``line``) from ways, open or closed, as
LineStrings, with their buffer half-width in ground metres.

How it reads (two passes, the heavy work in C++):

1. relations pass: relations carrying a key of an area class go to libosmium's multipolygon
   assembler; Python notes the candidates (type multipolygon/boundary, matching a class).
2. main pass: node locations go into the node-location index (``node_index``); ways are
   pre-filtered in C++ (``osmium.filter.KeyFilter`` on the keys of the classes' include
   filters) so Python only sees candidates, whose geometry comes as WKB from
   ``osmium.geom.WKBFactory``; a closed way of an area class becomes a Polygon with its node
   sequence as shell. Only the areas of candidate relations leave the assembler (C++
   ``IdFilter``); when there are none, the assembler is not run at all.

WKB is then parsed, turned into areas (closed ways: Polygons; one-part multipolygons:
Polygons), checked and repaired, vectorised with shapely (the repair, tags and sort are
:func:`pipeline.labels.finish.finalise`, shared with vector labels).

The relations pass reads the whole file (libosmium decodes only the relation groups). Reading
just the trailing relation blocks of a type-sorted PBF was tried (our own block-level reader) and
removed: on a 926 MB extract it saved no CPU time (102.2 s vs 101.0 s, bench/bench_peers jobs).

Features that cannot be built are skipped and counted, never fatal: ways whose nodes are
missing from the extract (normal at extract edges), relations with missing member ways or
broken rings, ways of fewer than two distinct points. A self-intersecting closed way is
repaired (``shapely.make_valid``) rather than dropped, unlike ``osmium export``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import osmium
import shapely

from pipeline.config.region import ClassSpec
from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.labels.finish import LabelRows, finalise

if TYPE_CHECKING:
    import geopandas as gpd

#: relation types libosmium assembles into areas
AREA_RELATION_TYPES = ("multipolygon", "boundary")
_MATCH_CACHE_SIZE = 100_000


@dataclass
class ExtractStats:
    """What one extraction kept, repaired and skipped (counts of OSM objects unless noted)."""

    rows_per_class: dict[str, int] = field(default_factory=dict)  # output rows per class name
    skipped_missing_nodes: int = 0  # matching ways referencing nodes absent from the extract
    skipped_relations: int = 0  # matching multipolygons not assembled (members missing, broken rings)
    degenerate: int = 0  # matching ways of fewer than two distinct points
    repaired: int = 0  # invalid polygons made valid (rows)
    dropped_invalid: int = 0  # rows dropped: rings of under 4 points, nothing polygonal after repair
    relations_pass: str = "none"  # "full": the whole file was read for relations, "none": no area class

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_features(
    pbf_path: Path, classes: tuple[ClassSpec, ...], node_index: str = "flex_mem"
) -> gpd.GeoDataFrame:
    """Features of ``classes`` in the OSM file ``pbf_path`` as a GeoDataFrame (EPSG:4326).

    Columns: :data:`pipeline.labels.features.FEATURE_COLUMNS` + ``geometry``; rows sorted by
    (class_id, osm_type, osm_id). ``node_index`` is a pyosmium location-index spec: ``flex_mem``
    (RAM) or e.g. ``sparse_file_array,/path/nodes.idx`` (on disk; the file is scratch space,
    truncated first and removed afterwards). See :func:`extract_features_with_stats`.
    """
    return extract_features_with_stats(pbf_path, classes, node_index)[0]


def extract_features_with_stats(
    pbf_path: Path, classes: tuple[ClassSpec, ...], node_index: str = "flex_mem"
) -> tuple[gpd.GeoDataFrame, ExtractStats]:
    """Like :func:`extract_features`, also returning what was skipped and repaired.

    Raises MissingInputError when the file does not exist, InputDataError when it is truncated,
    corrupt or not an OSM file, ConfigError for a bad ``node_index``.
    """
    pbf_path = Path(pbf_path)
    if not pbf_path.is_file():
        raise MissingInputError(f"{pbf_path}: OSM extract not found; check osm.path in the region config")
    plan = _Plan.of(classes)
    coll = _Collector(plan)
    if classes:
        with _node_locations(node_index) as index:
            try:
                coll.stats.relations_pass = _read(pbf_path, plan, coll, index)
            except RuntimeError as exc:  # libosmium's io/pbf errors reach Python as RuntimeError
                raise InputDataError(
                    f"{pbf_path}: truncated, corrupt or not an OSM file ({exc}); download the extract again"
                ) from exc
        coll.finish()
    return _frame(coll, plan), coll.stats


# ---------------------------------------------------------------------------------------------
# Reading


@dataclass(frozen=True)
class _Plan:
    """The classes split by kind (as (index, spec)), and the tag keys Python reads."""

    classes: tuple[ClassSpec, ...]
    area: tuple[tuple[int, ClassSpec], ...]
    line: tuple[tuple[int, ClassSpec], ...]
    keys: tuple[str, ...]  # every key a class reads (include + exclude filters), and "area"

    @classmethod
    def of(cls, classes: tuple[ClassSpec, ...]) -> _Plan:
        keys: list[str] = []
        for c in classes:
            keys += [k for k in c.tag_keys if k not in keys]
        if any(c.kind == "area" for c in classes) and "area" not in keys:
            keys.append("area")  # a closed way tagged area=no is no area
        return cls(
            classes=tuple(classes),
            area=tuple((i, c) for i, c in enumerate(classes) if c.kind == "area"),
            line=tuple((i, c) for i, c in enumerate(classes) if c.kind == "line"),
            keys=tuple(keys),
        )

    @staticmethod
    def include_keys(specs: tuple[tuple[int, ClassSpec], ...]) -> list[str]:
        """Keys of the include filters: an object without any of them matches no class."""
        return sorted({f.key for _, c in specs for f in c.tags})


def _read(path: Path, plan: _Plan, coll: _Collector, index: Any) -> str:
    """Run the relations pass and the main pass over ``path``; return how relations were read."""
    pool = osmium.io.ThreadPool()
    area_keys = plan.include_keys(plan.area)
    way_keys = sorted(set(area_keys) | set(plan.include_keys(plan.line)))
    locations = osmium.NodeLocationsForWays(index)
    locations.ignore_errors()  # nodes outside the extract: such ways are counted and skipped
    chain: list[Any] = [locations]
    mode = "none"
    if plan.area:
        mode = "full"
        manager = osmium.area.AreaManager()
        with osmium.io.Reader(str(path), osmium.osm.RELATION, thread_pool=pool) as reader:
            osmium.apply(reader, osmium.filter.KeyFilter(*area_keys), manager.first_pass_handler(),
                         _Handler(relation=coll.relation))
        if coll.relations:  # else no assembler: it would build every tagged closed way in vain
            wanted = osmium.filter.IdFilter([_relation_area_id(r) for r in coll.relations])
            wanted.enable_for(osmium.osm.AREA)
            chain.append(manager.second_pass_handler(wanted, _Handler(area=coll.area)))
    chain += [osmium.filter.KeyFilter(*way_keys), _Handler(way=coll.way)]
    # multipolygon members are ways: the main pass never needs relations
    with osmium.io.Reader(str(path), osmium.osm.NODE | osmium.osm.WAY, thread_pool=pool) as reader:
        osmium.apply(reader, *chain)
    return mode


def _relation_area_id(rid: int) -> int:
    """libosmium's id of the area built from relation ``rid`` (2 id + 1, mirrored below 0)."""
    return 2 * rid + 1 if rid >= 0 else 2 * rid - 1


class _Handler:
    """A pyosmium handler with only the callbacks given (pyosmium dispatches by attribute)."""

    def __init__(self, **callbacks: Any) -> None:
        for name, fn in callbacks.items():
            setattr(self, name, fn)


@dataclass(frozen=True)
class _Match:
    """What a combination of tag values means: the kept tags, the matching line and area
    classes (class indices) with their buffer half-widths (ground metres; 0 for areas)."""

    sub: dict[str, str]
    lines: list[int]
    line_buffers: list[float]
    areas: list[int]
    area_buffers: list[float]
    closed_area: bool  # a closed way with these tags is an area (area=no: not, as in libosmium)


class _Feature(NamedTuple):
    osm_type: str
    osm_id: int
    match: _Match
    is_area: bool
    wkb: str  # hex, as osmium's WKBFactory writes it


class _Collector:
    """Collects features while pyosmium calls it with candidate objects; this is the only
    Python work per candidate, so it is kept small."""

    def __init__(self, plan: _Plan) -> None:
        self.keys = plan.keys
        self.area_specs = plan.area
        self.line_specs = plan.line
        self.fab = osmium.geom.WKBFactory()
        self.features: list[_Feature] = []
        self.relations: set[int] = set()  # candidate multipolygon relations (relations pass)
        self.relations_done: set[int] = set()
        self.stats = ExtractStats()
        self.cache: dict[tuple[str | None, ...], _Match] = {}

    def match(self, tags: Any) -> _Match:
        """What an osmium TagList means for the classes (cached by the values of the keys the
        classes read: real data repeats a few thousand combinations)."""
        get = tags.get
        values = tuple([get(k) for k in self.keys])
        m = self.cache.get(values)
        return m if m is not None else self._new_match(values)

    def _new_match(self, values: tuple[str | None, ...]) -> _Match:
        sub = {k: v for k, v in zip(self.keys, values) if v is not None}
        lines = [(i, c) for i, c in self.line_specs if c.matches(sub) is not None]
        areas = [i for i, c in self.area_specs if c.matches(sub) is not None]
        m = _Match(sub, [i for i, _ in lines], [c.buffer_for(sub) for _, c in lines],
                   areas, [0.0] * len(areas), bool(areas) and sub.get("area") != "no")
        if len(self.cache) >= _MATCH_CACHE_SIZE:
            self.cache.clear()
        self.cache[values] = m
        return m

    def relation(self, r: Any) -> None:
        """Relations pass (after the C++ key filter): note candidate multipolygons."""
        tags = r.tags
        if tags.get("type") in AREA_RELATION_TYPES and self.match(tags).areas:
            self.relations.add(r.id)

    def way(self, w: Any) -> None:
        """Main pass (after the C++ key filter): a LineString for the line classes; for a closed
        way of an area class, a Polygon with that node sequence as shell."""
        m = self.match(w.tags)
        closed = m.closed_area and w.is_closed()
        if not (m.lines or closed):
            return
        try:
            wkb = self.fab.create_linestring(w)
        except osmium.InvalidLocationError:
            self.stats.skipped_missing_nodes += 1
            return
        except RuntimeError:  # fewer than two distinct points
            self.stats.degenerate += 1
            return
        wid = w.id
        if m.lines:
            self.features.append(_Feature("way", wid, m, False, wkb))
        if closed:
            self.features.append(_Feature("way", wid, m, True, wkb))  # the shell; made a Polygon in _frame

    def area(self, a: Any) -> None:
        """Areas assembled from candidate relations (the C++ IdFilter lets only them pass)."""
        try:
            wkb = self.fab.create_multipolygon(a)
        except RuntimeError:  # an empty area: the assembler could not build its rings
            return
        rid = a.orig_id()
        self.relations_done.add(rid)
        self.features.append(_Feature("relation", rid, self.match(a.tags), True, wkb))

    def finish(self) -> None:
        """Count the candidate relations that never became areas."""
        self.stats.skipped_relations = len(self.relations - self.relations_done)


def _as_areas(geoms: np.ndarray, ring: np.ndarray) -> np.ndarray:
    """Area geometries with shapely, vectorised: where ``ring``, the LineString of a closed way
    becomes a Polygon with it as shell (None when it has under 4 points); a MultiPolygon of one
    part (libosmium's output for a simple relation) becomes that Polygon."""
    out = geoms.copy()
    idx = np.flatnonzero(ring & ~shapely.is_missing(geoms))
    n = shapely.get_num_coordinates(geoms[idx])
    ok, short = idx[n >= 4], idx[n < 4]
    out[short] = None
    if len(ok):
        coords, which = shapely.get_coordinates(geoms[ok], return_index=True)
        out[ok] = shapely.polygons(shapely.linearrings(coords, indices=which))
    single = np.flatnonzero((shapely.get_type_id(out) == 6) & (shapely.get_num_geometries(out) == 1))
    out[single] = shapely.get_geometry(out[single], 0)
    return out


@contextlib.contextmanager
def _node_locations(spec: str) -> Iterator[Any]:
    """A pyosmium node-location index from ``spec`` (``type`` or ``type,file``); a file is
    scratch space: truncated first, removed afterwards."""
    kind, _, filename = spec.partition(",")
    if kind not in osmium.index.map_types():
        raise ConfigError(
            f"osmsat.node_index = {spec!r}: unknown index type {kind!r}; use one of "
            f"{', '.join(osmium.index.map_types())} (e.g. flex_mem, or sparse_file_array,<path>)"
        )
    if filename:
        try:
            Path(filename).parent.mkdir(parents=True, exist_ok=True)
            Path(filename).write_bytes(b"")
        except OSError as exc:
            raise ConfigError(f"osmsat.node_index = {spec!r}: cannot create the index file ({exc})") from exc
    try:
        index = osmium.index.create_map(spec)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"osmsat.node_index = {spec!r}: {exc}") from exc
    try:
        yield index
    finally:
        del index
        if filename:
            with contextlib.suppress(OSError):
                os.unlink(filename)


# ---------------------------------------------------------------------------------------------
# GeoDataFrame assembly


def _frame(coll: _Collector, plan: _Plan) -> gpd.GeoDataFrame:
    """Features -> GeoDataFrame (EPSG:4326), one row per (feature, class): parse WKB, make the
    areas of closed ways Polygons, then :func:`pipeline.labels.finish.finalise` (repair, tags,
    sort)."""
    rows = _rows(coll.features)
    is_area = np.array([c.kind == "area" for c in plan.classes] + [False], dtype=bool)[rows.cls]
    geoms = _as_areas(rows.geometry, is_area & (rows.osm_type == "way"))
    return finalise(rows._replace(geometry=geoms), plan.classes, coll.stats)


def _rows(features: list[_Feature]) -> LabelRows:
    """Expand features into one row per class they match (tags: the feature's kept tags, a dict
    shared by equal tag values; geometry: the parsed WKB)."""
    osm_type: list[str] = []
    osm_id: list[int] = []
    cls: list[int] = []
    buffer_m: list[float] = []
    tags: list[dict[str, str] | None] = []
    wkb: list[str] = []
    for t, oid, m, is_area, w in features:
        classes, buffers = (m.areas, m.area_buffers) if is_area else (m.lines, m.line_buffers)
        n = len(classes)
        osm_type += [t] * n
        osm_id += [oid] * n
        cls += classes
        buffer_m += buffers
        tags += [m.sub] * n
        wkb += [w] * n
    return LabelRows(np.array(osm_type, dtype=object), np.array(osm_id, dtype=np.int64), np.array(cls, dtype=np.intp),
                     np.array(buffer_m, dtype=np.float64), np.array([*tags, None], dtype=object)[:-1],
                     _parse_wkb(wkb))


def _parse_wkb(hexes: list[str]) -> np.ndarray:
    """Shapely geometries from osmium's hex WKB (GEOS parses binary WKB an order of magnitude
    faster than hex); None where the WKB is no valid geometry (a ring of under 4 points)."""
    raw = [bytes.fromhex(h) for h in hexes]
    return shapely.from_wkb(np.array([*raw, None], dtype=object), on_invalid="ignore")[:len(raw)]
