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
#: a core smaller than the marker size, down to a quarter of it, still seeds an instance where
#: this share of the pixels around it carry an edge probability of ``WALL_EDGE`` (uint8) or more
WALLED_SHARE = 0.9
WALL_EDGE = 128
#: cores of ``min_marker_px`` or more are eroded this many times by a 3 x 3 square before they
#: seed (two tile pixels: one model pixel at the demo recipe's half resolution, where the gaps in
#: a faint wall are; over eleven models of the demo town 1 gave dense-quarter object F1 +0.031
#: on average and 2 +0.039, at 25 km² +0.041 and +0.055, 3 less: docs/notes/i15-dense.md)
CORE_ERODE_PX = 2


def split_instances(foot: np.ndarray, edge: np.ndarray, thr: int, min_marker_px: int, reach: int = 2,
                    marker_edge: int = MARKER_EDGE, pix: np.ndarray | None = None) -> np.ndarray:
    """int32 instance labels (0 = outside) of ``foot >= thr`` (uint8 probabilities, H x W),
    separated along ``edge`` (uint8 edge probabilities of the same class); cores where
    ``edge < marker_edge``; ``min_marker_px`` and ``reach`` in pixels; ``pix``: the flat indices
    of ``foot >= thr`` (ascending) when the caller has them. Every footprint pixel is labelled.

    The labels of a watershed of the whole raster, computed where it matters: a footprint
    component with one marker is that marker's instance (the watershed floods all of it), one
    without a marker is a piece of its own, and only the components with two or more markers
    are flooded, packed side by side into one small raster (:func:`_flood`); border slivers are
    found per component that touches the frame, in its box. Pieces are numbered as the whole-
    raster watershed numbered them: markers in raster order of their first pixel, then the
    pieces without a marker (components and border slivers) in raster order of their first
    pixel. Where two floods reach a pixel at the same edge probability, the winner depends on
    scikit-image's heap order, which depends on all markers flooded together: such a pixel may
    go to the other neighbour than in a watershed of the whole raster (on the demo 12 of 680,000
    footprint pixels; on the demo's 4 blocks 0.18 s instead of 0.39 s, issue 20).
    """
    binary = foot >= thr
    comp, nc = ndimage.label(binary)
    comp = comp.astype(np.int32, copy=False)
    interior = binary & (edge < marker_edge)
    raw, n, cores = marker_cores(interior, edge, min_marker_px)  # markers numbered in raster order
    if n == 0:
        return comp
    midx = np.flatnonzero(raw)
    mlab = raw.ravel()[midx]
    owner = np.zeros(n + 1, dtype=np.int64)  # the footprint component of each marker
    owner[mlab] = comp.ravel()[midx]
    count = np.bincount(owner[1:], minlength=nc + 1)  # markers per component
    count[0] = 0
    lut = np.zeros(nc + 1, dtype=np.int32)
    single = count[owner[1:]] == 1
    lut[owner[1:][single]] = np.flatnonzero(single).astype(np.int32) + 1
    bidx = np.flatnonzero(binary) if pix is None else pix  # footprint pixels, raster order
    bc = comp.ravel()[bidx]
    lab = lut[bc]
    mk = np.zeros(len(bidx), dtype=np.int32)
    mk[np.searchsorted(bidx, midx)] = mlab
    multi = count[bc] >= 2
    if multi.any():
        lab[multi] = _flood(edge, bidx[multi], bc[multi], mk[multi])
    slivers = _slivers(comp, count, cores, reach, bidx, bc)
    _number_rest(lab, bidx, bc, count, slivers, n)
    labels = np.zeros(foot.shape, dtype=np.int32)
    labels.ravel()[bidx] = lab
    return labels


def marker_cores(interior: np.ndarray, edge: np.ndarray, min_marker_px: int) -> tuple[np.ndarray, int, np.ndarray]:
    """The markers: labelled seeds (4-connected; 0 = none, 1..n in raster order of their first
    pixel) from the cores, the 4-connected components of ``interior``. A core of at least
    ``min_marker_px`` pixels is eroded :data:`CORE_ERODE_PX` times (3 x 3) first: where a faint
    party wall has a gap, the cores of two buildings meet through it in a narrow bridge, which
    the erosion cuts; each piece it leaves of at least ``min_marker_px`` pixels seeds
    an instance, and a core it leaves no such piece of seeds one whole (the erosion only cuts).
    A smaller core, down to a quarter of that size, seeds one whole where its band is closed
    around it (:func:`_walled`), as a small building's is. Third: the pixels of the seeding
    cores, uneroded."""
    raw, n_raw = ndimage.label(interior)
    if n_raw == 0:
        return raw, 0, interior
    midx = np.flatnonzero(interior)  # the cores' pixels (sparse: far quicker than whole-raster indexing)
    mraw = raw.ravel()[midx]
    size = np.bincount(mraw, minlength=n_raw + 1)
    big = size >= max(1, min_marker_px)
    big[0] = False
    seeds = midx[big[mraw]]
    ids = mraw[big[mraw]]
    kept = big
    if CORE_ERODE_PX and len(seeds):
        grid = np.zeros(interior.shape, dtype=bool)
        grid.ravel()[seeds] = True
        grid = _eroded(grid, CORE_ERODE_PX)
        cut, n_cut = ndimage.label(grid)
        eidx = np.flatnonzero(grid)
        ecut = cut.ravel()[eidx]
        ok = np.bincount(ecut, minlength=n_cut + 1) >= max(1, min_marker_px)
        seeds, ids = eidx[ok[ecut]], ecut[ok[ecut]] + n_raw  # (numbered apart from the cores)
        kept = np.zeros(n_raw + 1, dtype=bool)
        kept[raw.ravel()[seeds]] = True
    whole = ~big & (size >= max(1, -(-min_marker_px // 4)))
    whole[0] = False
    if whole.any():
        whole &= _walled(raw, edge, midx[whole[mraw]], n_raw)
    whole |= big & ~kept  # the erosion only cuts: a core it leaves no seed of seeds whole
    pix = np.concatenate([seeds, midx[whole[mraw]]])
    lab, n = _numbered(interior.shape, pix, np.concatenate([ids, mraw[whole[mraw]]]))
    cores = np.zeros(interior.shape, dtype=bool)
    cores.ravel()[midx[(kept | whole)[mraw]]] = True
    return lab, n, cores


def _numbered(shape: tuple[int, ...], pix: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, int]:
    """int32 labels 1..n of the pieces ``ids`` (one id per pixel of ``pix``, flat indices; each
    piece 4-connected, no two 4-adjacent) numbered in raster order of their first pixel, as
    ``scipy.ndimage.label`` of their pixels numbers them."""
    lab = np.zeros(shape, dtype=np.int32)
    if len(pix) == 0:
        return lab, 0
    order = np.argsort(pix, kind="stable")
    pix, ids = pix[order], ids[order]
    uniq, first = np.unique(ids, return_index=True)
    rank = np.zeros(int(uniq.max()) + 1, dtype=np.int32)
    rank[uniq[np.argsort(first)]] = np.arange(1, len(uniq) + 1, dtype=np.int32)
    lab.ravel()[pix] = rank[ids]
    return lab, len(uniq)


def _eroded(b: np.ndarray, times: int) -> np.ndarray:
    """``b`` eroded ``times`` by a 3 x 3 square, outside the raster counting as False (as
    ``scipy.ndimage.binary_erosion`` does; separable numpy shifts: several times quicker)."""
    for _ in range(times):
        v = b.copy()
        v[1:] &= b[:-1]
        v[:-1] &= b[1:]
        v[0] = v[-1] = False
        b = v.copy()
        b[:, 1:] &= v[:, :-1]
        b[:, :-1] &= v[:, 1:]
        b[:, 0] = b[:, -1] = False
    return b


def _walled(raw: np.ndarray, edge: np.ndarray, pix: np.ndarray, n_raw: int) -> np.ndarray:
    """Per core label (0..n_raw) whether at least :data:`WALLED_SHARE` of the pixels just outside
    it (4-neighbours outside every core, each counted for the largest core label beside it) have
    edge probability :data:`WALL_EDGE` or more: its band is closed around it, as a small
    building's is, not the faint line inside one roof. Only the cores whose pixels are ``pix``
    (flat indices) are looked at (the rest are False)."""
    h, w = raw.shape
    flat = raw.ravel()
    r, c = np.divmod(pix, w)
    near = np.concatenate([pix[r > 0] - w, pix[r < h - 1] + w, pix[c > 0] - 1, pix[c < w - 1] + 1])
    ring = np.unique(near[flat[near] == 0])
    rr, cc = np.divmod(ring, w)
    lab = np.zeros(len(ring), dtype=flat.dtype)
    for ok, step in ((rr > 0, -w), (rr < h - 1, w), (cc > 0, -1), (cc < w - 1, 1)):
        np.maximum(lab, flat[np.where(ok, ring + step, ring)], out=lab)  # (a ring pixel's own label is 0)
    total = np.bincount(lab, minlength=n_raw + 1)
    strong = np.bincount(lab, weights=edge.ravel()[ring] >= WALL_EDGE, minlength=n_raw + 1)
    out = np.asarray(strong >= WALLED_SHARE * np.maximum(total, 1))
    looked = np.zeros(n_raw + 1, dtype=bool)
    looked[flat[pix]] = True
    return out & looked


def _flood(edge: np.ndarray, pix: np.ndarray, comp: np.ndarray, markers: np.ndarray) -> np.ndarray:
    """Watershed labels (marker-based, 4-connected, over ``edge``) of the pixels ``pix`` (flat
    indices into ``edge``, raster order) of footprint components ``comp`` (one per pixel) seeded
    by ``markers`` (label per pixel, 0 = none). The components' bounding boxes are packed on
    shelves into one raster with a gap of one pixel, so they never touch, and flooded at once."""
    from skimage.segmentation import watershed

    order, starts, (r0, r1, c0, c1) = _boxes(pix, comp, edge.shape[1])
    r, c = np.divmod(pix[order], edge.shape[1])
    hs, ws = r1 - r0 + 2, c1 - c0 + 2  # with the gap
    width = max(int(ws.max()), int(np.sqrt(float((hs * ws).sum())) * 1.25))
    oy, ox = np.zeros(len(starts), dtype=np.int64), np.zeros(len(starts), dtype=np.int64)
    y = x = shelf = 0
    for k in np.argsort(-hs, kind="stable").tolist():  # next-fit shelves, tallest first
        if x + ws[k] > width:
            y, x, shelf = y + shelf, 0, 0
        oy[k], ox[k], shelf = y, x, max(shelf, int(hs[k]))
        x += int(ws[k])
    box = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(pix)]))
    my, mx = r - r0[box] + oy[box], c - c0[box] + ox[box]
    shape = (y + shelf, width)
    img = np.zeros(shape, dtype=edge.dtype)
    img[my, mx] = edge.ravel()[pix[order]]
    mask = np.zeros(shape, dtype=bool)
    mask[my, mx] = True
    seeds = np.zeros(shape, dtype=np.int32)
    seeds[my, mx] = markers[order]
    flooded = watershed(img, seeds, mask=mask, connectivity=1)
    out = np.empty(len(pix), dtype=np.int32)
    out[order] = flooded[my, mx]
    return out


def _boxes(pix: np.ndarray, comp: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Bounding boxes of the components ``comp`` of pixels ``pix`` (flat indices into a raster
    ``w`` pixels wide, ascending): the order that sorts the pixels by component (stable), where
    each component starts in it, and per component (ascending) its first and last row and column."""
    order = np.argsort(comp, kind="stable")
    cs = comp[order]
    r, c = np.divmod(pix[order], w)
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    r0, r1 = r[starts], r[np.r_[starts[1:], len(cs)] - 1]  # raster order: first and last rows
    return order, starts, (r0, r1, np.minimum.reduceat(c, starts), np.maximum.reduceat(c, starts))


def _slivers(comp: np.ndarray, count: np.ndarray, marked: np.ndarray, reach: int,
             bidx: np.ndarray, bc: np.ndarray) -> list[np.ndarray]:
    """Border slivers: per footprint component with a marker that touches the raster's frame,
    the pieces of its pixels farther than ``reach`` (chessboard, pixels) from every marker pixel
    (``marked``: the pixels of the cores that seed them) that touch the frame; flat indices of each,
    ascending (the same pieces as for the whole raster: a crop keeps ``reach`` pixels around
    the component)."""
    h, w = comp.shape
    frame = np.unique(np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]]))
    frame = frame[(frame > 0) & (count[frame] >= 1)]
    out: list[np.ndarray] = []
    if len(frame) == 0:
        return out
    on = np.zeros(len(count), dtype=bool)
    on[frame] = True
    sel = on[bc]
    _, _, (r0, r1, c0, c1) = _boxes(bidx[sel], bc[sel], w)
    for c, top, bottom, left, right in zip(frame.tolist(), r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist()):
        a, b = max(top - reach, 0), min(bottom + 1 + reach, h)
        e, f = max(left - reach, 0), min(right + 1 + reach, w)
        # outside the markers grown by a (2 reach + 1)² square (a separable maximum filter)
        near = ndimage.maximum_filter(marked[a:b, e:f], size=2 * reach + 1, mode="constant", cval=False)
        far = (comp[a:b, e:f] == c) & ~near
        if not far.any():
            continue
        cut, _ = ndimage.label(far)
        edges = [cut[0] if a == 0 else None, cut[-1] if b == h else None,
                 cut[:, 0] if e == 0 else None, cut[:, -1] if f == w else None]
        ids = np.unique(np.concatenate([x for x in edges if x is not None] or [np.zeros(0, cut.dtype)]))
        for i in ids[ids > 0].tolist():
            rr, cc = np.nonzero(cut == i)
            out.append((rr + a) * w + (cc + e))
    return out


def _number_rest(lab: np.ndarray, bidx: np.ndarray, bc: np.ndarray, count: np.ndarray,
                 slivers: list[np.ndarray], n: int) -> None:
    """Number the pieces without a marker (``lab`` 0 at footprint pixels ``bidx`` of components
    ``bc``): whole components without a marker and the border ``slivers``, ``n + 1, ...`` in
    raster order of their first pixel (as ``scipy.ndimage.label`` of those pixels would)."""
    none = count[bc] == 0
    if not none.any() and not slivers:
        return
    # components are numbered in raster order of their first pixel: a new maximum
    first = np.flatnonzero(np.r_[True, bc[1:] > np.maximum.accumulate(bc)[:-1]])
    comps = np.flatnonzero(count == 0)[1:]
    starts = bidx[first[comps - 1]]
    keys = np.concatenate([starts, np.array([s[0] for s in slivers], dtype=np.int64)])
    rank = np.empty(len(keys), dtype=np.int32)
    rank[np.argsort(keys, kind="stable")] = np.arange(n + 1, n + 1 + len(keys), dtype=np.int32)
    crank = np.zeros(len(count), dtype=np.int32)
    crank[comps] = rank[:len(comps)]
    lab[none] = crank[bc[none]]
    for s, k in zip(slivers, rank[len(comps):].tolist()):
        lab[np.searchsorted(bidx, s)] = k


def _colours(labels: np.ndarray, pix: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """A colour per label (index = label; 0 for background) such that 4-adjacent labels differ
    (``pix``: flat indices of the labelled pixels, ascending; ``lab``: their labels)."""
    n = int(lab.max())
    h, w = labels.shape
    flat = labels.ravel()
    pairs = []
    for step, ok in ((1, pix % w < w - 1), (w, pix < (h - 1) * w)):  # right and lower neighbours
        a, b = lab[ok], flat[pix[ok] + step]
        m = (b != a) & (b > 0)
        pairs.append(np.stack([a[m], b[m]], axis=1))
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


def trace_instances(labels: np.ndarray, x0: float = 0.0, y0: float = 0.0, pix: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Polygons of the instances of ``labels`` in pixel coordinates offset by ``(x0, y0)``, and
    the label of each polygon (one per 4-connected part of an instance: the slivers a split
    leaves can cut one in two); touching instances stay apart.
    ``pix``: the flat indices of ``labels > 0`` (ascending) when the caller has them."""
    pix = np.flatnonzero(labels > 0) if pix is None else pix
    if len(pix) == 0:
        return np.empty(0, dtype=object), np.empty(0, dtype=np.int64)
    lab = labels.ravel()[pix]
    colour = _colours(labels, pix, lab)
    pc = colour[lab]
    polys, comps = [], []
    for k in range(int(pc.max()) + 1):
        b = np.zeros(labels.shape, dtype=bool)
        b.ravel()[pix[pc == k]] = True
        p, c = trace(b, labels, x0, y0)
        polys.append(p)
        comps.append(c)
    return np.concatenate(polys), np.concatenate(comps)
