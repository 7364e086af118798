"""Instances of area classes: the edge band that keeps touching buildings apart.

With ``[masks] instances = true`` (the default) the masks of every area class carry a second
value, the class's *edge*: pixels of a feature that lie within ``[masks] edge_px`` pixels
(Chebyshev distance, at the mask's resolution) of the feature's own outline. Where two
buildings share a wall, both edge bands meet, so the interiors of touching buildings never
touch. The model learns the edge as one more output; vectorising grows each interior back over
its edge by marker-based watershed (:mod:`pipeline.vectors.instance_split`), so touching buildings come
out as separate polygons (the SpaceNet building winners' footprint + boundary channels). The
edge is a channel of its own (sigmoid, binary loss) rather than a class of the softmax: measured
on nairobi, a softmax edge class took probability from the footprint of a model trained on a
small region (roof interiors fell below 0.5) and was itself never confident (max 0.13).

Values: class ``c`` (id 1..254) has the edge value ``255 - c`` in masks; the config refuses class
ids that collide with an edge value. Model outputs: 0 background, then one per class in
ascending id (a softmax over these: the footprint, edge included), then one independent
(sigmoid) channel per edge in ascending class id. Prediction tiles keep one band per class
followed by one band per edge.
Pure numpy; no torch, no geospatial stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, overload

if TYPE_CHECKING:  # numpy is imported where arrays are made: loading a config checks edge values
    import numpy as np

IGNORE = 255


@overload
def edge_value(class_id: int) -> int: ...
@overload
def edge_value(class_id: np.ndarray) -> np.ndarray: ...
def edge_value(class_id: int | np.ndarray) -> int | np.ndarray:
    """The mask value of the edge band of area class ``class_id`` (an id or an array of ids)."""
    return IGNORE - class_id


def edge_classes(class_kinds: Iterable[tuple[int, str]], instances: bool) -> tuple[int, ...]:
    """Ids (ascending) of the classes that get an edge band: the area classes, when ``instances``."""
    return tuple(sorted(int(i) for i, k in class_kinds if k == "area")) if instances else ()


def target_lut(class_ids: Sequence[int], edges: Sequence[int]) -> np.ndarray:
    """uint8 lookup table mask value -> model output index: 0 background, 1..n the classes in
    ascending id, n+1.. the edges in ascending class id, 255 ignore. Edge values of classes
    without an edge output fold into their class; any other value is ignored (255)."""
    import numpy as np

    ids = sorted(int(c) for c in class_ids)
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[0] = 0
    for k, cid in enumerate(ids, start=1):
        lut[cid] = k
        lut[edge_value(cid)] = k
    for j, cid in enumerate(sorted(int(e) for e in edges)):
        lut[edge_value(cid)] = len(ids) + 1 + j
    return lut


def edge_band(inst: np.ndarray, width: int) -> np.ndarray:
    """True on pixels of a feature (``inst`` > 0, one id per feature) within ``width`` pixels
    (Chebyshev) of a pixel of another feature or of background."""
    import numpy as np
    from scipy import ndimage

    if width <= 0:
        return np.zeros(inst.shape, dtype=bool)
    size = 2 * width + 1
    hi = ndimage.maximum_filter(inst, size=size, mode="nearest")
    lo = ndimage.minimum_filter(inst, size=size, mode="nearest")
    return (inst > 0) & ((hi != inst) | (lo != inst))
