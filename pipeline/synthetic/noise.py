"""Seeded, position-hashed noise on the orthophoto's pixel grid.

Every value depends only on the global pixel (row, col), the noise scale and a seed, never on
the window being rendered, so windows rendered separately join without seams and the output
does not depend on the window size.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0x165667B19E3779F9)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S40 = np.uint64(40)


def hash01(iy: NDArray[np.int64], ix: NDArray[np.int64], seed: int) -> NDArray[np.float32]:
    """Uniform [0, 1) float32 from integer lattice coordinates (broadcast) and a seed."""
    y = np.asarray(iy, dtype=np.int64).astype(np.uint64)
    x = np.asarray(ix, dtype=np.int64).astype(np.uint64)
    s = np.uint64(((seed & 0xFFFFFFFF) * int(_M3)) & 0xFFFFFFFFFFFFFFFF)
    h = (y * _M1) ^ (x * _M2) ^ s
    h ^= h >> _S33
    h *= _F1
    h ^= h >> _S33
    h *= _F2
    h ^= h >> _S33
    return ((h >> _S40).astype(np.float32)) * np.float32(1.0 / (1 << 24))


def white(rows: NDArray[np.int64], cols: NDArray[np.int64], seed: int) -> NDArray[np.float32]:
    """Per-pixel noise in [-1, 1) on the grid ``rows`` x ``cols`` (global pixel indices)."""
    return hash01(rows[:, None], cols[None, :], seed) * np.float32(2.0) - np.float32(1.0)


def _axis(coords: NDArray[np.int64], cell: float) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Lattice index below each pixel centre and the smoothstep weight towards the next one."""
    f = (coords.astype(np.float64) + 0.5) / cell
    i = np.floor(f).astype(np.int64)
    t = (f - i).astype(np.float32)
    return i, t * t * (np.float32(3.0) - np.float32(2.0) * t)


def value(rows: NDArray[np.int64], cols: NDArray[np.int64], cell: float, seed: int) -> NDArray[np.float32]:
    """Smooth value noise in [-1, 1] with features about ``cell`` pixels wide."""
    iy, ty = _axis(rows, cell)
    ix, tx = _axis(cols, cell)
    y0, x0 = int(iy.min()), int(ix.min())
    lat = hash01(np.arange(y0, iy.max() + 2)[:, None], np.arange(x0, ix.max() + 2)[None, :], seed)
    lat = lat * np.float32(2.0) - np.float32(1.0)
    ry, rx = iy - y0, ix - x0
    top = lat[np.ix_(ry, rx)]
    top += (lat[np.ix_(ry, rx + 1)] - top) * tx[None, :]
    bot = lat[np.ix_(ry + 1, rx)]
    bot += (lat[np.ix_(ry + 1, rx + 1)] - bot) * tx[None, :]
    top += (bot - top) * ty[:, None]
    return top
