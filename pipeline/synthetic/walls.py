"""Walls that touching buildings share (party walls), in local metres (see
:mod:`pipeline.synthetic.model`).

:func:`party_walls` finds the boundary pieces two footprints share, for the renderer's thin
party-wall lines; :func:`node_walls` gives every wall the vertices of the touching footprints
that lie on it, so that the OSM writer lets touching buildings share their nodes, as mappers
connect terraced houses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, MultiLineString, Polygon

#: two walls closer than this (metres) are one shared wall
TOL_M = 0.01
#: a vertex closer than this (metres) to a wall lies on it
ON_WALL_M = 0.001


def touching_pairs(geoms: NDArray[np.object_]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Index pairs (a, b), a < b, of footprints that touch or overlap."""
    if len(geoms) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    keep = a < b
    return a[keep].astype(np.int64), b[keep].astype(np.int64)


def shared_length(p: Polygon, q: Polygon) -> float:
    """Length (metres) of the boundary ``p`` shares with ``q`` (within :data:`TOL_M`)."""
    return float(shapely.intersection(p.boundary, shapely.buffer(q.boundary, TOL_M)).length)


def party_walls(geoms: Sequence[Polygon], min_len: float = 0.5, limit: int = 4) -> list[NDArray[np.float64]]:
    """Per footprint, the segments (x0, y0, x1, y1) of its boundary that another footprint
    shares, over walls at least ``min_len`` metres long; at most ``limit`` segments, the longest.
    Both buildings of a pair get the same segments."""
    arr = np.array(list(geoms), dtype=object)
    segs: list[list[NDArray[np.float64]]] = [[] for _ in range(len(arr))]
    a, b = touching_pairs(arr)
    if len(a):
        bound = shapely.boundary(arr)
        shared = shapely.intersection(bound[a], shapely.buffer(bound[b], TOL_M))
        for i, j, g in zip(a.tolist(), b.tolist(), shared):
            lines = [p for p in shapely.get_parts(g) if isinstance(p, LineString)]
            if not lines:
                continue
            for part in shapely.get_parts(shapely.line_merge(MultiLineString(lines))):
                if part.length < min_len:
                    continue
                c = np.asarray(part.coords)
                s = np.hstack([c[:-1], c[1:]])
                s = s[np.hypot(s[:, 2] - s[:, 0], s[:, 3] - s[:, 1]) >= 0.05]
                segs[i].append(s)
                segs[j].append(s)
    out = []
    for pieces in segs:
        m = np.vstack(pieces) if pieces else np.zeros((0, 4))
        if len(m) > limit:
            m = m[np.argsort(-np.hypot(m[:, 2] - m[:, 0], m[:, 3] - m[:, 1]), kind="stable")[:limit]]
        out.append(m)
    return out


def node_walls(geoms: Sequence[Polygon]) -> list[Polygon]:
    """The footprints with the vertices of touching footprints that lie on their walls (within
    :data:`ON_WALL_M`) added as vertices; shapes and orientation are unchanged."""
    arr = np.array(list(geoms), dtype=object)
    out = list(arr)
    a, b = touching_pairs(arr)
    if not len(a):
        return out
    first, second = np.concatenate([a, b]), np.concatenate([b, a])
    for i in np.unique(first).tolist():
        pts = np.unique(shapely.get_coordinates(arr[second[first == i]]), axis=0)
        out[i] = _insert(arr[i], pts)
    return out


def _insert(poly: Polygon, pts: NDArray[np.float64]) -> Polygon:
    """``poly`` with the points of ``pts`` that lie inside one of its edges inserted there."""
    rings = []
    changed = False
    for ring in [poly.exterior, *poly.interiors]:
        c = np.asarray(ring.coords)
        p, d = c[:-1], c[1:] - c[:-1]
        length = np.maximum(np.hypot(d[:, 0], d[:, 1]), 1e-12)
        rel = pts[None, :, :] - p[:, None, :]  # (edges, points, 2)
        t = (rel[..., 0] * d[:, None, 0] + rel[..., 1] * d[:, None, 1]) / length[:, None] ** 2
        off = np.abs(rel[..., 0] * d[:, None, 1] - rel[..., 1] * d[:, None, 0]) / length[:, None]
        along = t * length[:, None]
        on = (off < ON_WALL_M) & (along > ON_WALL_M) & (along < length[:, None] - ON_WALL_M)
        if not on.any():
            rings.append(c)
            continue
        changed = True
        new = []
        for e in range(len(p)):
            new.append(p[e])
            k = np.flatnonzero(on[e])
            new.extend(pts[k[np.argsort(t[e, k], kind="stable")]])
        new.append(c[-1])
        rings.append(np.array(new))
    return Polygon(rings[0], rings[1:]) if changed else poly


def edges_on(edges: NDArray[np.float64], walls: NDArray[np.float64], tol: float = 0.02) -> NDArray[np.bool_]:
    """Which of ``edges`` (n, 4: x0, y0, x1, y1) have their midpoint on one of ``walls`` (m, 4),
    within ``tol`` metres."""
    if not len(walls) or not len(edges):
        return np.zeros(len(edges), dtype=bool)
    mid = (edges[:, :2] + edges[:, 2:]) / 2
    p, d = walls[None, :, :2], walls[None, :, 2:] - walls[None, :, :2]
    t = np.clip(((mid[:, None, :] - p) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-12), 0.0, 1.0)
    gap = mid[:, None, :] - p - t[..., None] * d
    return np.asarray((np.hypot(gap[..., 0], gap[..., 1]) < tol).any(axis=1))


def across(edges: NDArray[np.float64], walls: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Which of ``edges`` are parallel to none of ``walls`` (both (n, 4) segments): on a gabled
    roof between party walls, the eaves."""
    de = edges[:, 2:] - edges[:, :2]
    dw = walls[:, 2:] - walls[:, :2]
    de = de / np.maximum(np.hypot(de[:, 0], de[:, 1]), 1e-12)[:, None]
    dw = dw / np.maximum(np.hypot(dw[:, 0], dw[:, 1]), 1e-12)[:, None]
    sin = np.abs(de[:, None, 0] * dw[None, :, 1] - de[:, None, 1] * dw[None, :, 0])
    return np.asarray((sin > 0.3).all(axis=1))
