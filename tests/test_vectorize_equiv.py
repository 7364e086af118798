"""Centreline pieces after issue 20 (skeleton edges from the skeleton's pixels, per-line sums
in one pass) against the whole-raster versions they replace, on seeded random bands."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from scipy import ndimage

from pipeline.vectors.centerline import _skeleton, skeleton_edges, tile_lines


def plain_skeleton_edges(skel: np.ndarray) -> np.ndarray:
    """Skeleton edges as before issue 20: shifted whole-raster masks per direction."""
    s = np.pad(skel, 1)
    core = s[1:-1, 1:-1]
    edges = []
    h, w = skel.shape
    for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
        ok = core & s[1 + dr:1 + dr + h, 1 + dc:1 + dc + w]
        if dr and dc:
            ok &= ~s[1:1 + h, 1 + dc:1 + dc + w] & ~s[1 + dr:1 + dr + h, 1:1 + w]
        r, c = np.nonzero(ok)
        edges.append(np.stack([np.column_stack([r, c]), np.column_stack([r + dr, c + dc])], axis=1))
    return np.concatenate(edges)


def _roads(seed: int, size: int = 96) -> np.ndarray:
    """uint8 probabilities of random thick strokes (roads), some crossing the border."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), dtype=np.float64)
    for _ in range(6):
        r0, c0, r1, c1 = rng.integers(-10, size + 10, size=4)
        t = np.linspace(0, 1, 4 * size)
        rr, cc = np.round(r0 + (r1 - r0) * t).astype(int), np.round(c0 + (c1 - c0) * t).astype(int)
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        img[rr[ok], cc[ok]] = 1.0
    width = rng.integers(1, 4)
    img = ndimage.maximum_filter(img, size=2 * width + 1)
    return np.clip(img * rng.integers(120, 256, size=img.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_skeleton_edges_and_line_sums_equal_the_plain_versions(seed: int) -> None:
    p = _roads(seed)
    skel = _skeleton(p >= 128)
    np.testing.assert_array_equal(skeleton_edges(skel), plain_skeleton_edges(skel))
    rows = tile_lines(p, 128, 1000, 2000, margin=16)
    assert rows
    for r in rows:  # the sums over each line's own pixels, as a loop per line had them
        c = shapely.get_coordinates(r["geometry"])
        vals = p[(c[:, 1] - 2000 - 0.5).astype(int) + 16, (c[:, 0] - 1000 - 0.5).astype(int) + 16].astype(np.int64)
        assert (r["psum"], r["count"], r["pmax"]) == (float(vals.sum()), len(vals), int(vals.max()))
    empty = np.zeros((5, 5), dtype=bool)
    assert skeleton_edges(empty).shape == (0, 2, 2) and tile_lines(np.zeros((8, 8), np.uint8), 128, 0, 0) == []
