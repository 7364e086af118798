"""Hard negatives: the pixels of ``[labels] negatives`` weigh ``[train] negatives_weight`` in the loss.

A rejected candidate (mapper feedback, :mod:`pipeline.labels.feedback`) lies where the labels have
no feature, so the masks there are background already: burning the negatives as background
changes no pixel and the next training learns nothing from the review. Training weighs those
pixels instead: :func:`negative_flags` rasterises the negative polygons once per training run,
for the tiles they touch (1 inside, 0 outside; a pixel is inside when its centre is, the masks'
rule, in each tile's EPSG:3857 transform), and :class:`~pipeline.model.dataset.TileDataset`
turns them into a per-pixel loss weight that goes through the augmentations with the mask.

Needs the geometry stack (pyogrio, shapely, rasterio) only when a region has negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.config.labels import LabelsConfig
from pipeline.model.split import TileRow

#: flags of the tiles that negatives touch, by the row's mask path (:attr:`TileRow.mask`)
NegativeFlags = dict[str, np.ndarray]


def negative_flags(lcfg: LabelsConfig, rows: Sequence[TileRow], size: int) -> NegativeFlags:
    """``{row.mask: uint8 (size, size), 1 inside a negative area}`` for the ``rows`` (tiles of
    ``size`` pixels) that ``lcfg.negatives`` touch; {} without negatives. Errors name the key
    and the file (:func:`pipeline.labels.feedback.read_areas`)."""
    if not lcfg.negatives or not rows:
        return {}
    import shapely
    from rasterio.features import rasterize

    from pipeline.labels.feedback import load_feedback
    from pipeline.tiles.geo import to_mercator
    from pipeline.tiles.tilemath import Tile, tile_bounds, tile_transform

    fb = load_feedback(lcfg)
    if fb is None:
        return {}
    areas = to_mercator(fb.geoms[fb.values == 0])
    tree = shapely.STRtree(areas)
    out: NegativeFlags = {}
    for r in rows:
        t = Tile(r.z, r.x, r.y)
        hits = tree.query(shapely.box(*tile_bounds(t)), predicate="intersects")
        if not len(hits):
            continue
        flags = rasterize([(g, 1) for g in areas[hits]], out_shape=(size, size), transform=tile_transform(t, size),
                          fill=0, dtype="uint8")
        if flags.any():
            out[r.mask] = flags
    return out


def weight_map(flags: np.ndarray, weight: float) -> np.ndarray:
    """float32 loss weights from augmented ``flags``: ``weight`` where 1, else 1 (0 outside the
    negatives; a crop's padding, whose mask is ignored, is neither)."""
    return np.where(flags == 1, np.float32(weight), np.float32(1.0)).astype(np.float32)


def negatives_note(labels: LabelsConfig, losses: Sequence[tuple[str, float]]) -> str | None:
    """What a user should hear when ``[labels] negatives`` cannot weigh anything: the weight
    applies to the cross-entropy only, and ``[train] losses`` (``(name, weight)`` pairs) has
    none; None otherwise."""
    if not labels.negatives or any(name == "ce" for name, _ in losses):
        return None
    return ("[labels] negatives are burnt as background, but [train] negatives_weight weighs only the ce loss "
            f"and [train] losses has none ({', '.join(n for n, _ in losses)}): the rejected areas count no more "
            "than any background; add ce = 1.0 to [train] losses")
