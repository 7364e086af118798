"""Squared polygons (every edge parallel or perpendicular to one orientation per polygon), in numpy.

All polygons of a call are squared together, with array operations over all their edges; no
per-polygon Python. For each polygon:

1. its dominant orientation ``phi``: the length-weighted circular mean of ``4 * theta`` over its
   edges (directions that differ by 90 degrees agree; an edge at 45 degrees to it pulls neither way);
2. each ring rotated by ``-phi`` (about the polygon's bounding-box centre), each edge classified
   horizontal or vertical (whichever its projection is longer on);
3. consecutive edges of one class (cyclically) form a *run*; a run becomes one axis line at the
   mean of its edges' mid-coordinates weighted by their projected lengths;
4. a run whose squared edge (the distance between its neighbours' lines) is shorter than
   ``parallel`` is dropped and its two neighbours (parallel to each other) merged into one line:
   in passes, each dropping the runs that are the shortest within two runs either side, until none
   is left short;
5. the new vertices are the crossings of consecutive lines, rotated back.

A ring left with fewer than 4 runs is degenerate: a shell makes the polygon fail (``None``), a hole
is dropped. :func:`pipeline.vectors.regularize.regularize` gates the result by IoU with the raw polygon.
"""

from __future__ import annotations

import numpy as np
import shapely


def orientation(xy: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """Per polygon ``0..n-1`` the dominant edge direction (radians, in [-pi/4, pi/4)) of the edges
    ``xy[:, 0:2] -> xy[:, 2:4]`` that ``owner`` assigns to it."""
    d = xy[:, 2:4] - xy[:, 0:2]
    length = np.hypot(d[:, 0], d[:, 1])
    four = 4.0 * np.arctan2(d[:, 1], d[:, 0])
    c = np.bincount(owner, length * np.cos(four), minlength=n)
    s = np.bincount(owner, length * np.sin(four), minlength=n)
    return np.arctan2(s, c) / 4.0


def _edges(polys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rings of ``polys`` (shell first, then holes), their owning polygon, and every edge as
    ``[x0, y0, x1, y1]`` with the index of its ring."""
    rings, owner = shapely.get_rings(polys, return_index=True)
    xy, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]  # consecutive points of one ring: an edge (closing point included)
    edges = np.hstack([xy[:-1][same], xy[1:][same]])
    return rings, owner, edges, ring[:-1][same]


def _runs(horizontal: np.ndarray, ring: np.ndarray, n_rings: int) -> tuple[np.ndarray, np.ndarray]:
    """Run id of every edge (runs numbered ring by ring, in ring order; a ring's edges before its
    first change of class belong to its last run) and the number of runs per ring (1 where every
    edge has one class: no run boundary at all)."""
    start = np.r_[0, np.flatnonzero(ring[1:] != ring[:-1]) + 1]  # first edge of each non-empty ring
    last = np.r_[start[1:], len(ring)] - 1
    prev = np.arange(len(ring)) - 1
    prev[start] = last  # cyclic predecessor within the ring
    change = horizontal != horizontal[prev]
    per_ring = np.bincount(ring, change, minlength=n_rings).astype(np.int64)
    first_run = np.cumsum(per_ring) - per_ring  # global id of each ring's first run
    csum = np.cumsum(change)
    local = csum - (csum[start] - change[start])[np.repeat(np.arange(len(start)), last - start + 1)]
    local = np.where(local == 0, per_ring[ring], local)  # before the first change: the ring's last run
    return first_run[ring] + local - 1, per_ring


def _neighbours(ring: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For runs sorted by ring: cyclic previous and next run within the ring, position in the
    ring and the ring's run count."""
    idx = np.arange(len(ring))
    start = np.r_[0, np.flatnonzero(ring[1:] != ring[:-1]) + 1]
    size = np.diff(np.r_[start, len(ring)])
    first = np.repeat(start, size)
    count = np.repeat(size, size)
    pos = idx - first
    return first + (pos - 1) % count, first + (pos + 1) % count, pos, count


def _drop_short(coord: np.ndarray, weight: np.ndarray, ring: np.ndarray, horiz: np.ndarray,
                parallel: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Drop runs whose squared edge is shorter than ``parallel`` (per run), merging their two
    neighbours, in passes until none is left (see the module docstring)."""
    while len(ring):
        prev, nxt, pos, count = _neighbours(ring)
        seg = np.abs(coord[nxt] - coord[prev])
        short = (seg < parallel) & (count >= 4)
        if not short.any():
            break
        drop = short.copy()
        for step in (1, 2):  # the shortest within two runs either side (ties: the first)
            for other in (_shift(prev, nxt, step, True), _shift(prev, nxt, step, False)):
                drop &= (seg < seg[other]) | ((seg == seg[other]) & (pos <= pos[other]))
        k = np.flatnonzero(drop)
        p, q = prev[k], nxt[k]
        w = weight[p] + weight[q]
        coord[p] = (coord[p] * weight[p] + coord[q] * weight[q]) / np.where(w > 0, w, 1.0)
        weight[p] = w
        keep = np.ones(len(ring), bool)
        keep[k] = False
        keep[q] = False
        coord, weight, ring, horiz, parallel = coord[keep], weight[keep], ring[keep], horiz[keep], parallel[keep]
    return coord, weight, ring, horiz


def _shift(prev: np.ndarray, nxt: np.ndarray, step: int, back: bool) -> np.ndarray:
    out = np.arange(len(prev))
    for _ in range(step):
        out = prev[out] if back else nxt[out]
    return out


def square(polys: np.ndarray, parallel: float) -> np.ndarray:
    """Squared copies of polygons (``None`` where the shell degenerates, or the result is not
    one valid polygon); ``parallel``: the shortest edge kept, in the polygons' units."""
    polys = np.asarray(polys, dtype=object)
    out = np.full(len(polys), None, dtype=object)
    if len(polys) == 0:
        return out
    rings, owner, edges, ering = _edges(polys)
    b = shapely.bounds(polys)
    centre = np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])
    phi = orientation(edges, owner[ering], len(polys))
    cos, sin = np.cos(phi)[owner][ering], np.sin(phi)[owner][ering]
    oc = centre[owner][ering]
    rot = np.empty_like(edges)
    for j in (0, 2):  # rotate by -phi about the centre
        x, y = edges[:, j] - oc[:, 0], edges[:, j + 1] - oc[:, 1]
        rot[:, j], rot[:, j + 1] = x * cos + y * sin, -x * sin + y * cos
    dx, dy = rot[:, 2] - rot[:, 0], rot[:, 3] - rot[:, 1]
    horizontal = np.abs(dx) >= np.abs(dy)
    run, per_ring = _runs(horizontal, ering, len(rings))
    live = per_ring[ering] > 0  # a ring whose edges are all of one class has no runs
    run, horizontal, dx, dy, rot = run[live], horizontal[live], dx[live], dy[live], rot[live]
    n_runs = int(per_ring.sum())
    w = np.where(horizontal, np.abs(dx), np.abs(dy))
    mid = np.where(horizontal, rot[:, 1] + rot[:, 3], rot[:, 0] + rot[:, 2]) / 2
    weight = np.bincount(run, w, minlength=n_runs)
    coord = np.bincount(run, w * mid, minlength=n_runs) / np.where(weight > 0, weight, 1.0)
    if (weight <= 0).any():  # runs of zero-length edges only (repeated points): their plain mean
        plain = np.bincount(run, mid, minlength=n_runs) / np.maximum(np.bincount(run, minlength=n_runs), 1)
        coord = np.where(weight > 0, coord, plain)
    run_ring = np.repeat(np.arange(len(rings)), per_ring)
    horiz = np.zeros(n_runs, bool)
    horiz[run] = horizontal
    coord, weight, run_ring, horiz = _drop_short(coord, weight, run_ring, horiz, np.full(n_runs, parallel))
    return _assemble(coord, run_ring, horiz, (rings, owner, phi, centre), out)


def _assemble(coord: np.ndarray, run_ring: np.ndarray, horiz: np.ndarray,
              frame: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], out: np.ndarray) -> np.ndarray:
    """Polygons from the runs left: vertices at the crossings of consecutive lines, rotated back."""
    rings, owner, phi, centre = frame
    _, nxt, _, count = _neighbours(run_ring)
    ok_run = count >= 4
    x = np.where(horiz, coord[nxt], coord)
    y = np.where(horiz, coord, coord[nxt])
    good_ring = np.zeros(len(rings), bool)
    good_ring[run_ring[ok_run]] = True
    shell = np.r_[True, owner[1:] != owner[:-1]]  # get_rings gives the shell first
    ok_poly = np.zeros(len(out), bool)
    ok_poly[owner[shell & good_ring]] = True
    keep_run = ok_run & ok_poly[owner[run_ring]]
    if not keep_run.any():
        return out
    rr = run_ring[keep_run]
    po = owner[rr]
    c, s = np.cos(phi[po]), np.sin(phi[po])
    xs, ys = x[keep_run], y[keep_run]
    xy = np.column_stack([xs * c - ys * s + centre[po, 0], xs * s + ys * c + centre[po, 1]])
    ring_ids, compact = np.unique(rr, return_inverse=True)
    new_rings = shapely.linearrings(xy, indices=compact)
    pid, pcompact = np.unique(owner[ring_ids], return_inverse=True)
    polys = shapely.polygons(new_rings, indices=pcompact)
    single = (shapely.get_type_id(polys) == 3) & shapely.is_valid(polys)
    out[pid[single]] = polys[single]
    return out
