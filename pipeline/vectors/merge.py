"""Merge vector pieces cut by tile or shard borders, without a whole-region union.

Pieces live in *global pixel coordinates* of the zoom level (``x = tile_x * size + col``,
``y = tile_y * size + row``, y down), so polygons traced from neighbouring tiles share their
border edges exactly (integer-valued floats) and their union is exact: no seam slivers.

Only pieces flagged ``open`` (touching the border of the tile or shard they came from) take
part; they are paired with a spatial index (STRtree), linked when they share a border segment
of positive length (4-connectivity, as traced) or, for centrelines, when their end points lie
within one diagonal pixel across a border, and each linked group is merged on its own. The
cost is linear in the number of open pieces.

A piece table is a :class:`pipeline.vectors.table.Table` (numpy columns, no pandas) with
columns ``geometry`` (shapely, pixel coordinates),
``class_id``, ``kind`` ("area" | "line"), ``psum`` (sum of the probabilities, 0-255, over the
piece's pixels), ``count`` (pixels), ``pmax`` (0-255), ``src`` (int id of the tile or shard the
piece came from) and ``open`` (bool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import shapely.errors

from pipeline.vectors.table import Table, concat_tables

PIECE_COLUMNS = ("geometry", "class_id", "kind", "psum", "count", "pmax", "src", "open")

#: end points of centrelines closer than this (pixels) across a border are joined (diagonal + slack)
JOIN_PX = 1.5
#: instance pieces (touching buildings split apart) sharing less border than this (pixels) stay apart
MIN_SHARED_PX = 2.0


def empty_pieces() -> Table:
    """A piece table without rows (the right columns and dtypes)."""
    return Table({
        "geometry": np.empty(0, dtype=object), "class_id": np.empty(0, dtype=np.int64),
        "kind": np.empty(0, dtype=object), "psum": np.empty(0, dtype=np.float64),
        "count": np.empty(0, dtype=np.int64), "pmax": np.empty(0, dtype=np.int64),
        "src": np.empty(0, dtype=np.int64), "open": np.empty(0, dtype=bool),
    })


def concat_pieces(parts: list[Table]) -> Table:
    """Concatenate piece tables (an empty list gives an empty table)."""
    return concat_tables(parts, empty_pieces())


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected components of the undirected graph of ``n`` nodes and edges ``i[k] - j[k]``:
    per node its component's label, numbered in the order of their smallest node
    (``scipy.sparse.csgraph.connected_components``, imported only when there is an edge: a
    region's merge without links needs no scipy.sparse)."""
    if len(i) == 0:
        return np.arange(n)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(i)), (np.asarray(i), np.asarray(j))), shape=(n, n))
    return np.asarray(connected_components(graph, directed=False)[1])


def touches_box(geoms: np.ndarray, box: tuple[float, float, float, float], inset: float = 0.0) -> np.ndarray:
    """True where a geometry's bounds reach the edge of ``box`` (x0, y0, x1, y1), within ``inset``."""
    if len(geoms) == 0:
        return np.zeros(0, dtype=bool)
    b = shapely.bounds(np.asarray(geoms, dtype=object))
    x0, y0, x1, y1 = box
    return ((b[:, 0] <= x0 + inset) | (b[:, 1] <= y0 + inset) | (b[:, 2] >= x1 - inset)
            | (b[:, 3] >= y1 - inset))


def _area_links(geoms: np.ndarray, src: np.ndarray, cls: np.ndarray,
                instance_ids: tuple[int, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of open polygons from different sources sharing a border segment.

    Pieces of the classes ``instance_ids`` are separate buildings on either side of a border as
    often as halves of one (a wall of a slanted row can run along the border for a while): two
    of them are linked only when they share at least ``MIN_SHARED_PX`` and each is the other's
    longest-shared partner across that border line."""
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="intersects")
    keep = (i < j) & (src[i] != src[j]) & (cls[i] == cls[j])
    i, j = i[keep], j[keep]
    if len(i):
        inter = shapely.intersection(geoms[i], geoms[j])
        length = shapely.length(inter)
        shared = length > 0
        i, j, length, inter = i[shared], j[shared], length[shared], inter[shared]
        inst = np.isin(cls[i], np.asarray(instance_ids, dtype=np.int64))
        if inst.any():
            ok = ~inst | ((length >= MIN_SHARED_PX) & _mutual_best(i, j, length, inter))
            i, j = i[ok], j[ok]
    return i, j


def _mutual_best(i: np.ndarray, j: np.ndarray, length: np.ndarray, inter: np.ndarray) -> np.ndarray:
    """True for pairs (i, j) where each piece is the other's partner of longest shared border
    across the same border line (the shared segments lie on one vertical or horizontal line)."""
    b = shapely.bounds(inter)
    vertical = (b[:, 2] - b[:, 0]) <= (b[:, 3] - b[:, 1])
    line = np.where(vertical, b[:, 0], b[:, 1]) * 2 + vertical  # one key per border line and direction
    best: dict[tuple[int, float], float] = {}
    for a, c, k, v in zip(i.tolist(), j.tolist(), line.tolist(), length.tolist()):
        for piece in (a, c):
            best[(piece, k)] = max(best.get((piece, k), 0.0), v)
    return np.array([v >= best[(a, k)] and v >= best[(c, k)]
                     for a, c, k, v in zip(i.tolist(), j.tolist(), line.tolist(), length.tolist())], dtype=bool)


def _line_links(geoms: np.ndarray, src: np.ndarray, cls: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Pairs of open centrelines from different sources whose end points are within JOIN_PX,
    with the short bridging segments that join them."""
    starts = shapely.get_point(geoms, 0)
    ends = shapely.get_point(geoms, -1)
    pts = np.concatenate([starts, ends])
    owner = np.concatenate([np.arange(len(geoms)), np.arange(len(geoms))])
    tree = shapely.STRtree(pts)
    a, b = tree.query(pts, predicate="dwithin", distance=JOIN_PX)
    keep = (a < b) & (src[owner[a]] != src[owner[b]]) & (cls[owner[a]] == cls[owner[b]])
    a, b = a[keep], b[keep]
    bridges = list(shapely.linestrings(np.stack([shapely.get_coordinates(pts[a]),
                                                 shapely.get_coordinates(pts[b])], axis=1))) if len(a) else []
    return owner[a], owner[b], bridges


def merge_open(pieces: Table, outer: tuple[float, float, float, float] | None, src_id: int,
               instance_ids: tuple[int, ...] = ()) -> Table:
    """Merge the open pieces of ``pieces`` that meet across source borders (``instance_ids``:
    area classes split into instances, see :func:`_area_links`).

    Closed pieces pass through unchanged. Each merged group becomes one piece (a polygon, or
    for centrelines the merged lines, one piece per resulting line) with summed ``psum`` and
    ``count`` and the largest ``pmax``; it gets ``src = src_id`` and is ``open`` when it reaches
    the edge of ``outer`` (the box of the new, larger source; None: nothing stays open).
    """
    if len(pieces) == 0:
        return pieces
    is_open = pieces["open"].astype(bool)
    closed = pieces[~is_open]
    op = pieces[is_open]
    out = [closed]
    for kind in ("area", "line"):
        sub = op[op["kind"] == kind]
        if len(sub):
            out.append(_merge_kind(sub, kind, outer, src_id, instance_ids))
    return concat_pieces(out)


def _merge_kind(sub: Table, kind: str, outer: tuple[float, float, float, float] | None,
                src_id: int, instance_ids: tuple[int, ...] = ()) -> Table:
    geoms = sub["geometry"]
    src = sub["src"]
    cls = sub["class_id"]
    if kind == "area":
        i, j = _area_links(geoms, src, cls, instance_ids)
        bridges: list[Any] = []
    else:
        i, j, bridges = _line_links(geoms, src, cls)
    n = len(sub)
    label = components(n, i, j)
    order = np.argsort(label, kind="stable")
    cuts = np.flatnonzero(np.diff(label[order])) + 1
    arrays = _PieceArrays(geoms, cls, sub["psum"], sub["count"], sub["pmax"])
    if kind == "area":
        res = _merge_areas(arrays, label, order, cuts, src_id)
    else:
        res = _merge_lines(arrays, label, np.split(order, cuts), i, bridges, src_id)
    opened = touches_box(res["geometry"], outer, 1.5 if kind == "line" else 0.0) \
        if outer is not None else np.zeros(len(res), dtype=bool)
    res["open"] = opened
    return res.select(PIECE_COLUMNS)


#: snap-rounding grid (pixel units) for unions that GEOS cannot do exactly (a TopologyException
#: on traced real-imagery pieces, nepal): 1/1000 of a pixel changes no pixel of the result
SNAP_GRID = 1e-3


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise union; pieces GEOS chokes on are made valid and unioned on the snap grid."""
    try:
        return shapely.union(a, b)
    except shapely.errors.GEOSException:
        return shapely.union(shapely.make_valid(a), shapely.make_valid(b), grid_size=SNAP_GRID)


def _union_all(parts: np.ndarray) -> shapely.Geometry:
    """Union of ``parts``, with the same fallback as :func:`_union`."""
    try:
        return shapely.union_all(parts)
    except shapely.errors.GEOSException:
        return shapely.union_all(shapely.make_valid(parts), grid_size=SNAP_GRID)


@dataclass(frozen=True)
class _PieceArrays:
    """The columns of the open pieces of one kind that a merge reads, as numpy arrays."""

    geoms: np.ndarray
    cls: np.ndarray
    psum: np.ndarray
    count: np.ndarray
    pmax: np.ndarray


def _merge_areas(pieces: _PieceArrays, label: np.ndarray, order: np.ndarray, cuts: np.ndarray,
                 src_id: int) -> Table:
    """One polygon per group (vectorised for groups of one and two pieces, the common cases)."""
    geoms, cls, psum, count, pmax = pieces.geoms, pieces.cls, pieces.psum, pieces.count, pieces.pmax
    starts = np.r_[0, cuts]
    size = np.diff(np.r_[starts, len(order)])
    first = order[starts]
    merged = geoms[first].copy()
    two = size == 2
    merged[two] = _union(geoms[first[two]], geoms[order[starts[two] + 1]])
    for k in np.flatnonzero(size > 2):
        merged[k] = _union_all(geoms[order[starts[k]:starts[k] + size[k]]])
    return Table({
        "geometry": merged, "class_id": cls[first].astype(np.int64), "kind": np.full(len(starts), "area", dtype=object),
        "psum": np.add.reduceat(psum[order].astype(np.float64), starts),
        "count": np.add.reduceat(count[order].astype(np.int64), starts),
        "pmax": np.maximum.reduceat(pmax[order].astype(np.int64), starts),
        "src": np.full(len(starts), src_id, dtype=np.int64)})


def _merge_lines(pieces: _PieceArrays, label: np.ndarray, groups: list[np.ndarray], i: np.ndarray,
                 bridges: list[Any], src_id: int) -> Table:
    """Each group's lines and bridges merged into as few lines as its shape allows."""
    geoms, cls, psum, count, pmax = pieces.geoms, pieces.cls, pieces.psum, pieces.count, pieces.pmax
    kind = "line"
    bridge_of = _bridges_by_group(label, i, bridges)
    parts: list[Any] = []
    stats: list[tuple[int, float, int, int]] = []
    for g in groups:
        row = (int(cls[g[0]]), float(psum[g].sum()), int(count[g].sum()), int(pmax[g].max()))
        lines = list(geoms[g]) + bridge_of.get(int(label[g[0]]), [])
        merged = shapely.line_merge(shapely.union_all(lines)) if len(lines) > 1 else lines[0]
        for part in shapely.get_parts(merged):
            parts.append(part)
            stats.append(row)
    geometry = np.empty(len(parts), dtype=object)
    geometry[:] = parts
    return Table({"geometry": geometry, "class_id": np.array([s[0] for s in stats], dtype=np.int64),
                  "kind": np.full(len(parts), kind, dtype=object),
                  "psum": np.array([s[1] for s in stats], dtype=np.float64),
                  "count": np.array([s[2] for s in stats], dtype=np.int64),
                  "pmax": np.array([s[3] for s in stats], dtype=np.int64),
                  "src": np.full(len(parts), src_id, dtype=np.int64)})


def _bridges_by_group(label: np.ndarray, i: np.ndarray, bridges: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for k, br in zip(i, bridges):
        out.setdefault(int(label[k]), []).append(br)
    return out
