"""Split a footprint raster into instances with the edge band, and trace touching instances apart.

Marker-based watershed (scikit-image): markers are the 4-connected components of the cores
(footprint probability at or above the threshold, edge probability below ``marker_edge``) of at
least ``min_marker_px`` pixels; each grows over the footprint (probability at or above the
threshold) by the watershed of the edge probability, so the line between two touching buildings
falls where the model saw their common wall. A party wall is fainter than an outer wall (the model
sees it in a tone step and a thin line), so a core stops at a low edge probability: on the demo's
dense quarters ``marker_edge`` 0.05 with cores of 8 m² gave object F1 0.55 against 0.19 for cores
of "footprint minus edge above the threshold" (the same predictions; measured with ``[train]
contact_weight = 5``; notes: ``docs/notes/i15-dense.md``). Footprint components that hold no
marker (a building too thin for an interior) stay whole. At the raster's border a building may be
cut to a sliver without an interior of its own; footprint pixels that touch the border and lie
further than ``reach`` pixels from every marker are kept apart as their own pieces, so the sliver
joins the rest of its building across the border instead of the neighbour that would flood it.

Tracing: :func:`pipeline.vectors.trace.trace` outlines 4-connected components of a binary raster, so
touching instances would fuse; the instances are therefore coloured so that no two 4-adjacent
instances share a colour (greedy colouring of their adjacency graph: a handful of colours) and
each colour is traced on its own. Outlines of neighbours share their pixel edges exactly.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pipeline.vectors.trace import trace

#: edge probability (uint8, p * 255) below which a footprint pixel belongs to an instance's core
MARKER_EDGE = 13


def split_instances(foot: np.ndarray, edge: np.ndarray, thr: int, min_marker_px: int, reach: int = 2,
                    marker_edge: int = MARKER_EDGE) -> np.ndarray:
    """int32 instance labels (0 = outside) of ``foot >= thr`` (uint8 probabilities, H x W),
    separated along ``edge`` (uint8 edge probabilities of the same class); cores where
    ``edge < marker_edge``."""
    from skimage.segmentation import watershed

    binary = foot >= thr
    interior = binary & (edge < marker_edge)
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
