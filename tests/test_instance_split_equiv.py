"""The fast instance split (watershed only where a footprint component holds two or more
markers, packed crops, slivers per border component) against the plain watershed of the whole
raster it replaces, on seeded random rasters and on rasters with border slivers; the tracing of
instances (colours from the footprint pixels only) against the whole-raster version."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.vectors.instance_split import MARKER_EDGE, marker_cores, split_instances, trace_instances
from pipeline.vectors.trace import trace


def plain_split(foot: np.ndarray, edge: np.ndarray, thr: int, min_marker_px: int, reach: int = 2,
                marker_edge: int = MARKER_EDGE) -> np.ndarray:
    """The split as it was before issue 20: one watershed over the whole raster (from the same markers)."""
    from skimage.segmentation import watershed

    binary = foot >= thr
    markers, n, cores = marker_cores(binary & (edge < marker_edge), edge, min_marker_px)  # the same markers
    labels = np.zeros(foot.shape, dtype=np.int32)
    if n:
        labels = watershed(edge, markers, mask=binary, connectivity=1).astype(np.int32)
        near = ndimage.maximum_filter(cores, size=2 * reach + 1, mode="constant", cval=False)
        far = binary & ~near
        cut, _ = ndimage.label(far)
        frame = np.unique(np.concatenate([cut[0], cut[-1], cut[:, 0], cut[:, -1]]))
        labels[np.isin(cut, frame[frame > 0])] = 0
    rest = binary & (labels == 0)
    if rest.any():
        extra, _ = ndimage.label(rest)
        labels[rest] = extra[rest] + n
    return labels


def _town(seed: int, shape: tuple[int, int] = (160, 200)) -> tuple[np.ndarray, np.ndarray]:
    """Footprint and edge probabilities (uint8) of random rectangles, touching and overlapping
    (some cut by the border), with an edge band falling off inside each and noise."""
    rng = np.random.default_rng(seed)
    inst = np.zeros(shape, dtype=np.int32)
    for k in range(1, 40):
        h, w = rng.integers(4, 30, size=2)
        r, c = rng.integers(-8, shape[0] - 2), rng.integers(-8, shape[1] - 2)
        inst[max(r, 0):r + h, max(c, 0):c + w] = k
    foot = np.where(inst > 0, rng.integers(128, 256, size=shape), rng.integers(0, 140, size=shape))
    # edge probability: falls with the distance to another instance or the background
    hi = ndimage.maximum_filter(inst, size=3, mode="nearest")
    lo = ndimage.minimum_filter(inst, size=3, mode="nearest")
    band = (inst > 0) & ((hi != inst) | (lo != inst))
    dist = ndimage.distance_transform_edt(~band)
    edge = np.clip(255 - 60 * dist + rng.random(shape) * 4, 0, 255)
    return foot.astype(np.uint8), edge.astype(np.uint8)


@pytest.mark.parametrize("seed", range(12))
def test_fast_split_equals_the_plain_watershed(seed: int) -> None:
    foot, edge = _town(seed)
    for min_px in (1, 6, 30):
        fast, plain = split_instances(foot, edge, 128, min_px), plain_split(foot, edge, 128, min_px)
        assert fast.dtype == np.int32 and fast.shape == plain.shape
        # ties of the flooding may go either way; with uint8 edges they are rare: nearly all equal
        assert (fast != plain).mean() < 2e-3, (seed, min_px)
        assert fast.max() == plain.max()


@pytest.mark.parametrize("seed", range(6))
def test_fast_split_equals_the_plain_watershed_without_ties(seed: int) -> None:
    """With float edges (no two pixels alike), the flooding order is unique: labels identical."""
    foot, edge8 = _town(100 + seed)
    rng = np.random.default_rng(seed)
    edge = edge8.astype(np.float64) + rng.random(edge8.shape) * 0.5
    for min_px, reach in ((1, 2), (8, 2), (8, 0), (20, 4)):
        fast = split_instances(foot, edge, 128, min_px, reach=reach)
        np.testing.assert_array_equal(fast, plain_split(foot, edge, 128, min_px, reach=reach))


def test_border_slivers_and_components_without_markers_are_numbered_alike() -> None:
    foot = np.zeros((40, 60), np.uint8)
    edge = np.full(foot.shape, 255, np.uint8)
    foot[0:12, 5:40] = 255  # a building cut by the top border: a sliver along it, a core below
    edge[5:11, 8:37] = 0
    foot[20:24, 0:3] = 255  # a thin piece without a core at the left border
    foot[30:38, 20:50] = 255  # two cores in one component
    edge[31:37, 22:30] = 0
    edge[31:37, 40:48] = 0
    foot[15:17, 50:52] = 255  # a lone speck
    for reach in (0, 2, 3):
        np.testing.assert_array_equal(split_instances(foot, edge, 128, 4, reach=reach),
                                      plain_split(foot, edge, 128, 4, reach=reach))
    assert split_instances(np.zeros((5, 5), np.uint8), edge[:5, :5], 128, 4).max() == 0


def plain_trace_instances(labels: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The tracing of instances as it was before issue 20: colours from whole-raster masks."""
    n = int(labels.max())
    sides = ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :]))
    pairs = [np.stack([a[m], b[m]], axis=1) for a, b in sides for m in [(a != b) & (a > 0) & (b > 0)]]
    edges = np.unique(np.sort(np.concatenate(pairs), axis=1), axis=0)
    colour = np.zeros(n + 1, dtype=np.int64)
    nbrs: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    for v in sorted(nbrs):
        used = {int(colour[u]) for u in nbrs[v] if u < v}
        colour[v] = next(k for k in range(len(used) + 1) if k not in used)
    polys, comps = [], []
    for k in np.unique(colour[np.unique(labels[labels > 0])]).tolist():
        p, c = trace((labels > 0) & (colour[labels] == k), labels, x0, y0)
        polys.append(p)
        comps.append(c)
    return np.concatenate(polys), np.concatenate(comps)


@pytest.mark.parametrize("seed", range(4))
def test_trace_instances_equals_the_whole_raster_version(seed: int) -> None:
    import shapely

    foot, edge = _town(200 + seed)
    labels = split_instances(foot, edge, 128, 6)
    assert labels.max() > 5
    polys, ids = trace_instances(labels, 10.0, 20.0)
    ref_polys, ref_ids = plain_trace_instances(labels, 10.0, 20.0)
    np.testing.assert_array_equal(ids, ref_ids)
    assert shapely.to_wkb(polys).tolist() == shapely.to_wkb(ref_polys).tolist()  # same rings, same order
    empty = trace_instances(np.zeros((4, 4), np.int32))
    assert len(empty[0]) == 0 and len(empty[1]) == 0


def test_walled_cores_looked_at_sparsely_as_over_the_whole_raster() -> None:
    """``_walled`` looks only at the candidate cores' neighbours; the whole-raster cross dilation
    it replaces gives the same answer for every candidate core."""
    from pipeline.vectors.instance_split import WALL_EDGE, WALLED_SHARE, _walled

    answers = set()
    for seed in range(6):
        foot, edge = _town(seed)
        if seed % 2:
            edge = np.where(edge >= 64, 255, 0).astype(np.uint8)  # closed bands: walled cores occur
        raw, n_raw = ndimage.label((foot >= 128) & (edge < MARKER_EDGE))
        grown = raw.copy()
        grown[1:] = np.maximum(grown[1:], raw[:-1])
        grown[:-1] = np.maximum(grown[:-1], raw[1:])
        grown[:, 1:] = np.maximum(grown[:, 1:], raw[:, :-1])
        grown[:, :-1] = np.maximum(grown[:, :-1], raw[:, 1:])
        ring = (raw == 0) & (grown > 0)
        total = np.bincount(grown[ring], minlength=n_raw + 1)
        strong = np.bincount(grown[ring], weights=edge[ring] >= WALL_EDGE, minlength=n_raw + 1)
        whole = strong >= WALLED_SHARE * np.maximum(total, 1)
        cand = np.random.default_rng(seed).random(n_raw + 1) < 0.5
        cand[0] = False
        pix = np.flatnonzero(cand[raw])
        got = _walled(raw, edge, pix, n_raw)
        assert (got[cand] == whole[cand]).all() and not got[~cand].any()
        answers |= set(whole[cand].tolist())
    assert answers == {True, False}


def test_core_erosion_equals_scipys() -> None:
    from pipeline.vectors.instance_split import _eroded

    rng = np.random.default_rng(3)
    for _ in range(10):
        b = ndimage.binary_dilation(rng.random((37, 53)) > 0.9, iterations=int(rng.integers(0, 3)))
        for times in (1, 2):
            want = ndimage.binary_erosion(b, np.ones((3, 3), dtype=bool), iterations=times)
            assert (_eroded(b, times) == want).all()
    assert not _eroded(np.ones((5, 5), dtype=bool), 1)[0].any()  # outside the raster counts as empty
