"""Pixels off the imagery: what the imagery stage writes there, and how the later stages find them.

A raster's nodata, and what lies outside it, is written as 0 in every band, and only that: a valid
black pixel is written as 1 (:func:`reserve_zero`). :func:`nodata_pixels` finds such pixels again
in a tile (numpy; scipy's ``label`` when a tile holds enough of them): training and evaluation
ignore them, prediction writes 0 there.
"""

from __future__ import annotations

import numpy as np

#: a run of pixels 0 in every band counts as nodata from this share of the tile (and 64 pixels) on:
#: real imagery has black pixels in deep shadow (kampala: up to 3 % of a tile, in runs of at most
#: 419 pixels of 65,536), a raster's nodata comes in one piece along the tile's edge
NODATA_MIN_SHARE = 0.01


def nodata_pixels(img: np.ndarray, channel_axis: int = -1) -> np.ndarray | None:
    """(H, W) bool: the pixels of an image tile off the imagery — 4-connected runs of pixels that
    are 0 in every band covering at least :data:`NODATA_MIN_SHARE` of the tile, which is how the
    imagery stage writes a raster's nodata and what lies outside it (:func:`reserve_zero`)
    — or None when there are none. Training and evaluation ignore them, prediction writes 0 there:
    a tile partly off the imagery is no evidence of background. Scattered black pixels (shadows)
    stay imagery."""
    zero = ~np.any(img, axis=channel_axis)
    least = max(64, int(NODATA_MIN_SHARE * zero.size))
    if int(zero.sum()) < least:
        return None
    from scipy import ndimage

    runs, _ = ndimage.label(zero)
    big = np.bincount(runs.ravel()) >= least
    big[0] = False
    return big[runs] if big.any() else None


def reserve_zero(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``data`` (bands, H, W) with its valid pixels that are 0 in every band set to 1 in every band:
    0 in every band then means nodata alone (:func:`nodata_pixels`), 1 / 255
    off a black pixel changes nothing anyone sees."""
    black = valid & ~np.any(data, axis=0)
    if not black.any():
        return data
    data = data.copy()
    data[:, black] = 1
    return data
