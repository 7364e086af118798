"""Centrelines of line classes (roads) from the skeleton of a thresholded probability band.

The skeleton (``skimage.morphology.skeletonize``) of one tile becomes a graph of its pixels:
an edge joins each pair of 8-neighbours (a diagonal edge only where no orthogonal path of two
edges joins the same pixels, so corners make no triangles). GEOS' ``line_merge`` then chains
the edges into LineStrings between end points and junctions, through pixel centres, in global
pixel coordinates (see :mod:`pipeline.vectors.merge`). Fully vectorised (no per-pixel Python loop).
Lines that end on the tile's outer pixels are ``open`` and are joined to their neighbours' by
:func:`pipeline.vectors.merge.merge_open`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely


def skeleton_edges(skel: np.ndarray) -> np.ndarray:
    """Edges of the 8-neighbour pixel graph of a skeleton (H, W bool) as (E, 2, 2) (row, col) pairs:
    per direction (east, south, south-east, south-west) in raster order of the first pixel.
    Works on the skeleton's pixels only (a few hundred of a tile's tens of thousands)."""
    h, w = skel.shape
    s = np.zeros((h + 2, w + 2), dtype=bool)
    s[1:-1, 1:-1] = skel
    r, c = np.nonzero(skel)
    r1, c1 = r + 1, c + 1  # in the padded raster
    edges = []
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ok = s[r1 + dr, c1 + dc]
        if dr and dc:  # diagonal: only when neither pixel of the orthogonal detour is set
            ok &= ~s[r1, c1 + dc] & ~s[r1 + dr, c1]
        rr, cc = r[ok], c[ok]
        edges.append(np.stack([np.column_stack([rr, cc]), np.column_stack([rr + dr, cc + dc])], axis=1))
    return np.concatenate(edges)


def tile_lines(p: np.ndarray, threshold: int, x0: int, y0: int, margin: int = 0) -> list[dict[str, Any]]:
    """Centreline pieces of one tile's probability band ``p`` (uint8) above ``threshold``.

    ``p`` may carry ``margin`` pixels of the neighbouring tiles on every side (zeros where a
    neighbour is missing): the skeleton is computed on the whole padded band, so it runs
    straight across the tile's borders instead of bending into its corners, and the tile keeps
    the skeleton edges whose first pixel lies in its own ``H x W`` core (each edge of the global
    skeleton thus belongs to exactly one tile). ``(x0, y0)`` is the core's top-left corner in
    global pixel coordinates. Returns rows of a piece table (without ``src``/``open``): geometry
    (LineString through pixel centres), ``psum``/``count``/``pmax`` of the probabilities at the
    line's pixels.
    """
    e = skeleton_edges(_skeleton(p >= threshold))
    h, w = p.shape[0] - 2 * margin, p.shape[1] - 2 * margin
    first = e[:, 0, :] - margin
    e = e[(first[:, 0] >= 0) & (first[:, 0] < h) & (first[:, 1] >= 0) & (first[:, 1] < w)]
    if len(e) == 0:
        return []
    xy = np.stack([e[:, :, 1] - margin + x0 + 0.5, e[:, :, 0] - margin + y0 + 0.5], axis=2).astype(np.float64)
    merged = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(xy)))
    lines = shapely.get_parts(merged)
    c, idx = shapely.get_coordinates(lines, return_index=True)
    col = (c[:, 0] - x0 - 0.5).astype(np.int64) + margin
    row = (c[:, 1] - y0 - 0.5).astype(np.int64) + margin
    vals = p[row, col].astype(np.int64)
    count = np.bincount(idx, minlength=len(lines))
    psum = np.bincount(idx, weights=vals, minlength=len(lines))
    pmax = np.maximum.reduceat(vals, np.r_[0, np.cumsum(count)[:-1]])  # every line has points
    return [{"geometry": g, "psum": float(a), "count": int(n), "pmax": int(m)}
            for g, a, n, m in zip(lines.tolist(), psum.tolist(), count.tolist(), pmax.tolist())]


def _skeleton(b: np.ndarray) -> np.ndarray:
    """``skimage.morphology.skeletonize(b)``, thinned inside the bounding box of ``b``'s pixels
    with one background pixel around it (the thinning looks at 8-neighbours only, so the result
    is the same; a road band covers a small part of its window, and each pass costs its area)."""
    from skimage.morphology import skeletonize

    rows, cols = np.flatnonzero(b.any(axis=1)), np.flatnonzero(b.any(axis=0))
    out = np.zeros(b.shape, dtype=bool)
    if len(rows) == 0:
        return out
    r0, r1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, b.shape[0])
    c0, c1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, b.shape[1])
    out[r0:r1, c0:c1] = skeletonize(b[r0:r1, c0:c1])
    return out


def padded(load: Any, t: Any, band: int, margin: int, size: int) -> np.ndarray:
    """Band ``band`` of tile ``t`` with ``margin`` pixels of its 8 neighbours around it
    (``load(tile) -> uint8 (C, H, W) | None``; missing neighbours are zeros)."""
    from pipeline.tiles.tilemath import Tile

    out = np.zeros((size + 2 * margin, size + 2 * margin), dtype=np.uint8)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            n = 1 << t.z
            if not (0 <= t.x + dx < n and 0 <= t.y + dy < n):
                continue
            probs = load(Tile(t.z, t.x + dx, t.y + dy))
            if probs is None:
                continue
            src_r = slice(size - margin, size) if dy < 0 else slice(0, margin) if dy > 0 else slice(0, size)
            src_c = slice(size - margin, size) if dx < 0 else slice(0, margin) if dx > 0 else slice(0, size)
            dst_r = slice(0, margin) if dy < 0 else slice(margin + size, size + 2 * margin) if dy > 0 \
                else slice(margin, margin + size)
            dst_c = slice(0, margin) if dx < 0 else slice(margin + size, size + 2 * margin) if dx > 0 \
                else slice(margin, margin + size)
            out[dst_r, dst_c] = probs[band][src_r, src_c]
    return out


def spurs(lines: np.ndarray, length: np.ndarray, max_length: np.ndarray) -> np.ndarray:
    """True for skeleton spurs: lines shorter than ``max_length`` (same units as ``length``) with
    one free end while the other end meets two or more lines (a junction). Skeletons grow such
    branches towards the corners of a band's ends and bumps of its edges. End points are
    compared exactly (all lines run through pixel centres of one grid)."""
    if len(lines) == 0:
        return np.zeros(0, dtype=bool)
    ends = np.stack([shapely.get_coordinates(shapely.get_point(lines, 0)),
                     shapely.get_coordinates(shapely.get_point(lines, -1))], axis=1)  # (N, 2, 2)
    keys = np.round(ends.reshape(-1, 2), 3)
    _, inv, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    deg = counts[inv.ravel()].reshape(-1, 2)
    free = deg == 1
    junction = deg >= 3
    return (length < max_length) & ((free[:, 0] & junction[:, 1]) | (free[:, 1] & junction[:, 0]))
