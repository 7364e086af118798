"""Split a footprint raster into instances with the edge band, and trace touching instances apart.

Marker-based watershed (scikit-image): markers are the 4-connected components of the interior
(footprint probability minus edge probability at or above the threshold) of at least
``min_marker_px`` pixels; each grows over the footprint (probability at or above the threshold)
by the watershed of the edge probability, so the line between two touching buildings falls
where the model saw their common wall. Footprint components that hold no marker (a building too
thin for an interior) stay whole. At the raster's border a building may be cut to a sliver
without an interior of its own; footprint pixels that touch the border and lie further than
``reach`` pixels from every marker are kept apart as their own pieces, so the sliver joins the
rest of its building across the border instead of the neighbour that would flood it.

Tracing: :func:`pipeline.trace.trace` outlines 4-connected components of a binary raster, so
touching instances would fuse; the instances are therefore coloured so that no two 4-adjacent
instances share a colour (greedy colouring of their adjacency graph: a handful of colours) and
each colour is traced on its own. Outlines of neighbours share their pixel edges exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.trace import trace


def split_instances(foot: np.ndarray, edge: np.ndarray, thr: int, min_marker_px: int, reach: int = 2) -> np.ndarray:
    """int32 instance labels (0 = outside) of ``foot >= thr`` (uint8 probabilities, H x W),
    separated along ``edge`` (uint8 edge probabilities of the same class)."""
    from skimage.segmentation import watershed

    binary = foot >= thr
    interior = binary & (foot.astype(np.int16) - edge.astype(np.int16) >= thr)
    markers, n = ndimage.label(interior)
    if n:
        sizes = np.bincount(markers.ravel(), minlength=n + 1)
        keep = sizes >= max(1, min_marker_px)
        keep[0] = False
        renum = np.zeros(n + 1, dtype=np.int32)
        renum[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
        markers = renum[markers]
        n = int(keep.sum())
    labels = np.zeros(foot.shape, dtype=np.int32)
    if n:
        labels = watershed(edge, markers, mask=binary, connectivity=1).astype(np.int32)
        # farther than ``reach`` (chessboard) from every marker: outside the markers grown by a
        # (2 reach + 1)² square (a separable maximum filter, far cheaper than a distance transform)
        near = ndimage.maximum_filter(markers > 0, size=2 * reach + 1, mode="constant", cval=False)
        far = binary & ~near
        cut, _ = ndimage.label(far)
        frame = np.unique(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
        labels[np.isin(cut, frame[frame > 0])] = 0  # border slivers: their own pieces below
    rest = binary & (labels == 0)
    if rest.any():
        extra, _ = ndimage.label(rest)
        labels[rest] = extra[rest] + n
    return labels


def _colours(labels: np.ndarray) -> np.ndarray:
    """A colour per label (index = label; 0 for background) such that 4-adjacent labels differ."""
    n = int(labels.max())
    sides = ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :]))
    pairs = [np.stack([a[m], b[m]], axis=1) for a, b in sides for m in [(a != b) & (a > 0) & (b > 0)]]
    edges = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
    colour = np.zeros(n + 1, dtype=np.int64)
    if len(edges) == 0:
        return colour
    nbrs: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    for v in sorted(nbrs):
        used = {int(colour[u]) for u in nbrs[v] if u < v}
        colour[v] = next(k for k in range(len(used) + 1) if k not in used)
    return colour


def trace_instances(labels: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the instances of ``labels`` (each label 4-connected) in pixel coordinates
    offset by ``(x0, y0)``, and the label of each polygon; touching instances stay apart."""
    colour = _colours(labels)
    polys, comps = [], []
    for k in np.unique(colour[np.unique(labels[labels > 0])]).tolist():
        b = (labels > 0) & (colour[labels] == k)
        p, c = trace(b, labels, x0, y0)
        polys.append(p)
        comps.append(c)
    if not polys:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    return np.concatenate(polys), np.concatenate(comps)
