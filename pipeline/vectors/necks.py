"""Buildings joined by a narrow neck, split apart.

Where the model's edge channel learnt no wall between two buildings that touch at a corner or
are joined by a short covered passage, the instance split (:mod:`pipeline.vectors.instance_split`)
has one marker and keeps them as one block: on nairobi's apartment estates, blocks of two or
three buildings joined at their corners (1,100-3,900 m², against 667 m² for the largest labelled
building). The block's shape gives them away: its morphological opening by ``r`` (a negative then
a positive buffer, mitred, so square corners stay square) loses every neck narrower than ``2 r``
and falls apart into the buildings' bodies. Each body of at least ``min_core`` becomes a polygon
of its own: the block's area within ``r`` of it, the neck shared out to the body it borders
most. A polygon whose opening is one body (a rectangle, an L with wings wider than ``2 r``, a
courtyard block) or none (narrower than ``2 r`` everywhere) is left as it is, and so is one whose
bodies are not clearly more rectangular than the whole (:data:`RECT_GAIN`): on the sample town,
the large roofs the model saw only in part have necks too, but their pieces are no buildings.

Geometries in EPSG:3857 with tolerances in the same units. Pure functions; numpy and shapely.
"""

from __future__ import annotations

import numpy as np
import shapely

#: a polygon is split only when its bodies are this much more rectangular than it (area-weighted
#: mean of area / minimum rotated rectangle): two buildings joined at a corner (0.25-0.45 as one,
#: 0.6-1.0 apart on nairobi), not a large roof the model half-saw, whose pieces are no more regular
RECT_GAIN = 0.1


def split_necks(polys: np.ndarray, r: np.ndarray, min_core: np.ndarray,
                tol: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Polygons ``polys`` with each one joined by necks narrower than ``2 r`` split into its bodies
    (``r`` and ``min_core``, an area, per polygon): (polygons, index of the source polygon of each).
    ``tol`` > 0: the bodies are found on the outlines simplified by ``tol`` (Douglas-Peucker; a
    pixel takes out a traced outline's staircase, on which GEOS' inward buffer costs 30 times more);
    the pieces are cut from the polygons as they are."""
    polys = np.asarray(polys, dtype=object)
    if len(polys) == 0:
        return polys.copy(), np.empty(0, dtype=np.int64)
    shapes = polys
    if tol > 0:  # fast Douglas-Peucker, redone with topology checks where that broke a polygon
        shapes = shapely.simplify(polys, tol, preserve_topology=False)
        bad = ~shapely.is_valid(shapes) | shapely.is_empty(shapes)
        shapes[bad] = shapely.simplify(polys[bad], tol, preserve_topology=True)
    cores = shapely.buffer(shapes, -np.asarray(r, dtype=float), join_style="mitre")
    parts, owner = shapely.get_parts(cores, return_index=True)
    big = shapely.area(parts) >= np.asarray(min_core, dtype=float)[owner]
    parts, owner = parts[big], owner[big]
    counts = np.bincount(owner, minlength=len(polys))
    out: list[shapely.Geometry] = []
    src: list[int] = []
    for k, p in enumerate(polys):
        if counts[k] < 2:
            out.append(p)
            src.append(k)
            continue
        try:
            pieces = _bodies(p, parts[owner == k], float(r[k]))
        except shapely.errors.GEOSException:  # (GEOS cannot cut this outline exactly: it stays whole)
            pieces = [p]
        if len(pieces) < 2 or _rectangularity(pieces) < _rectangularity([p]) + RECT_GAIN:
            pieces = [p]
        out += pieces
        src += [k] * len(pieces)
    return np.array(out, dtype=object), np.array(src, dtype=np.int64)


def _bodies(poly: shapely.Geometry, cores: np.ndarray, r: float) -> list[shapely.Geometry]:
    """``poly`` cut into one polygon per core: the part of ``poly`` within ``r`` of it (the first
    core's where two reach), each rest (the necks) joined to the piece it shares most border with
    (a rest that touches no piece is left out)."""
    grown = shapely.intersection(shapely.buffer(cores, r, join_style="mitre"), poly)
    pieces: list[shapely.Geometry] = []
    taken = shapely.Polygon()
    for g in grown:
        piece = _largest(shapely.difference(g, taken))
        pieces.append(piece)
        taken = shapely.union(taken, piece)
    rests = shapely.get_parts(shapely.difference(poly, taken))
    rests = rests[shapely.area(rests) > 0]
    if len(rests) and pieces:  # all rests at once (a traced outline leaves a sliver per pixel step)
        bounds = shapely.boundary(np.array(pieces, dtype=object))
        shared = shapely.length(shapely.intersection(shapely.boundary(rests)[:, None], bounds[None, :]))
        best, touches = np.argmax(shared, axis=1), shared.max(axis=1) > 0
        for k in range(len(pieces)):
            add = rests[touches & (best == k)]
            if len(add):
                pieces[k] = _largest(shapely.union_all(np.r_[np.array([pieces[k]], dtype=object), add]))
    return [p for p in pieces if not shapely.is_empty(p)]


def _rectangularity(polys: list[shapely.Geometry]) -> float:
    """Area-weighted mean of area / area of the minimum rotated rectangle (1 for rectangles)."""
    g = np.array(polys, dtype=object)
    area = shapely.area(g)
    rect = area / np.maximum(shapely.area(shapely.oriented_envelope(g)), 1e-12)
    return float((rect * area).sum() / max(float(area.sum()), 1e-12))


def _largest(g: shapely.Geometry) -> shapely.Geometry:
    """The largest polygon of ``g`` (valid; empty when it has none)."""
    parts = shapely.get_parts(shapely.make_valid(g))
    polys = parts[shapely.get_type_id(parts) == 3]
    return polys[int(np.argmax(shapely.area(polys)))] if len(polys) else shapely.Polygon()
