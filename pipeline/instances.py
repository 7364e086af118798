"""Instances of area classes: the edge band that keeps touching buildings apart.

With ``[masks] instances = true`` (the default) the masks of every area class carry a second
value, the class's *edge*: pixels of a feature that lie within ``[masks] edge_px`` pixels
(Chebyshev distance, at the mask's resolution) of the feature's own outline. Where two
buildings share a wall, both edge bands meet, so the interiors of touching buildings never
touch. The model learns the edge as one more output; vectorising grows each interior back over
its edge by marker-based watershed (:mod:`pipeline.instance_split`), so touching buildings come
out as separate polygons (the SpaceNet-winners' footprint + boundary + contact idea, folded
into one softmax as the RAMP project does).

Values: class ``c`` (id 1..254) has the edge value ``255 - c`` in masks; the config refuses class
ids that collide with an edge value. Model outputs: 0 background, then one per class in
ascending id, then one per edge in ascending class id. Prediction tiles keep one band per class
(the footprint probability: class + edge) followed by one band per edge.
Pure numpy; no torch, no geospatial stack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

IGNORE = 255


def edge_value(class_id: int) -> int:
    """The mask value of the edge band of area class ``class_id``."""
    return IGNORE - int(class_id)


def edge_classes(class_kinds: Iterable[tuple[int, str]], instances: bool) -> tuple[int, ...]:
    """Ids (ascending) of the classes that get an edge band: the area classes, when ``instances``."""
    return tuple(sorted(int(i) for i, k in class_kinds if k == "area")) if instances else ()


def target_lut(class_ids: Sequence[int], edges: Sequence[int]) -> np.ndarray:
    """uint8 lookup table mask value -> model output index: 0 background, 1..n the classes in
    ascending id, n+1.. the edges in ascending class id, 255 ignore. Edge values of classes
    without an edge output fold into their class; any other value is ignored (255)."""
    ids = sorted(int(c) for c in class_ids)
    lut = np.full(256, IGNORE, dtype=np.uint8)
    lut[0] = 0
    for k, cid in enumerate(ids, start=1):
        lut[cid] = k
        lut[edge_value(cid)] = k
    for j, cid in enumerate(sorted(int(e) for e in edges)):
        lut[edge_value(cid)] = len(ids) + 1 + j
    return lut


def fold_lut(class_ids: Sequence[int]) -> np.ndarray:
    """uint8 lookup table mask value -> class id: edges fold into their class; 0 and 255 kept,
    any other value is 254 (not a class: callers report it)."""
    lut = np.full(256, 254, dtype=np.uint8)
    lut[0], lut[IGNORE] = 0, IGNORE
    for cid in class_ids:
        lut[edge_value(int(cid))] = int(cid)
    for cid in class_ids:
        lut[int(cid)] = int(cid)
    return lut


def fold_outputs(index: np.ndarray, n_classes: int, edges: Sequence[int], class_ids: Sequence[int]) -> np.ndarray:
    """Model output indices (argmax over 1 + n + len(edges) outputs) -> 0..n class indices: an
    edge output counts as its class."""
    ids = sorted(int(c) for c in class_ids)
    lut = np.arange(max(int(index.max(initial=0)) + 1, 1 + n_classes + len(edges)), dtype=np.int64)
    for j, cid in enumerate(sorted(int(e) for e in edges)):
        lut[1 + n_classes + j] = 1 + ids.index(cid)
    return lut[index]


def edge_band(inst: np.ndarray, width: int) -> np.ndarray:
    """True on pixels of a feature (``inst`` > 0, one id per feature) within ``width`` pixels
    (Chebyshev) of a pixel of another feature or of background."""
    from scipy import ndimage

    if width <= 0:
        return np.zeros(inst.shape, dtype=bool)
    size = 2 * width + 1
    hi = ndimage.maximum_filter(inst, size=size, mode="nearest")
    lo = ndimage.minimum_filter(inst, size=size, mode="nearest")
    return (inst > 0) & ((hi != inst) | (lo != inst))


def footprint_and_edges(softmax: np.ndarray, n_classes: int, edges: Sequence[int],
                        class_ids: Sequence[int]) -> np.ndarray:
    """Softmax (1 + n + e, H, W) -> prediction bands (n + e, H, W): per class its footprint
    probability (class + its edge), then each edge's probability."""
    ids = sorted(int(c) for c in class_ids)
    out = np.array(softmax[1:1 + n_classes + len(edges)], dtype=np.float32, copy=True)
    for j, cid in enumerate(sorted(int(e) for e in edges)):
        out[ids.index(cid)] += softmax[1 + n_classes + j]
    return np.clip(out, 0.0, 1.0)
