"""Instances: edge bands in masks and model targets, watershed split, touching buildings traced
apart, and predictions that carry their edge bands."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import shapely

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.inference.probs import decode_prob_tile, decode_probs, encode_probs
from pipeline.tiles.tilemath import Tile
from pipeline.vectors.instance_split import split_instances, trace_instances
from pipeline.vectors.instances import edge_band, edge_classes, edge_value, target_lut
from pipeline.vectors.vectorize import Tracing, mask_to_probs, read_tile, tile_pieces

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
ROAD = ClassSpec("road", 2, "line", 10, (TagFilter("highway", None),), buffer_m=4.0)
T = Tile(19, 300_000, 260_000)


def test_edge_values_and_lookup_tables() -> None:
    assert edge_value(1) == 254 and edge_classes([(1, "area"), (2, "line")], True) == (1,)
    assert edge_classes([(1, "area")], False) == ()
    lut = target_lut([1, 2], (1,))
    assert (lut[0], lut[1], lut[2], lut[254], lut[255], lut[7]) == (0, 1, 2, 3, 255, 255)
    # without an edge output the edge value folds into its class
    assert target_lut([1, 2], ())[254] == 1


def test_edge_band_marks_both_sides_of_a_shared_wall() -> None:
    inst = np.zeros((10, 12), np.int32)
    inst[2:8, 1:6], inst[2:8, 6:11] = 1, 2
    band = edge_band(inst, 1)
    assert band[4, 5] and band[4, 6] and not band[4, 4] and not band[4, 7]
    assert band[2, 3] and not band[0, 3]  # outline ring inside the feature, never outside


def _pair(gap: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Footprint and edge probabilities (uint8) of two 20 x 30 px buildings sharing a wall."""
    foot = np.zeros((40, 80), np.uint8)
    edge = np.zeros_like(foot)
    for c0 in (5, 35 + gap):
        foot[5:35, c0:c0 + 30] = 255
        edge[5:35, c0:c0 + 30] = 255
        edge[7:33, c0 + 2:c0 + 28] = 0
    return foot, edge


def test_touching_buildings_split_and_traced_apart() -> None:
    foot, edge = _pair()
    labels = split_instances(foot, edge, 128, 4)
    assert labels.max() == 2 and (labels[5:35, 5:35] == labels[20, 10]).all()
    polys, ids = trace_instances(labels)
    assert len(polys) == 2 and sorted(ids.tolist()) == [1, 2]
    boxes = sorted(tuple(p.bounds) for p in polys)
    assert boxes == [(5.0, 5.0, 35.0, 35.0), (35.0, 5.0, 65.0, 35.0)]
    a, b = polys
    assert shapely.intersection(a, b).area == 0 and shapely.intersection(a, b).length == 30  # one shared wall


def test_without_an_edge_band_touching_buildings_stay_one() -> None:
    foot, _ = _pair()
    cols = tile_pieces(foot[None], T, Tracing((BUILDING,), 0.5))
    assert len(cols["geometry"]) == 1
    foot, edge = _pair()
    cols = tile_pieces(np.stack([foot, edge]), T, Tracing((BUILDING,), 0.5, edges=(1,), marker_min_m2=0.1))
    assert len(cols["geometry"]) == 2 and (cols["count"] == 900).all()


def test_a_marker_too_small_seeds_nothing() -> None:
    foot, edge = _pair()
    edge[5:35, 35:65] = 255  # the second building's interior vanishes: it joins the first or stays whole
    edge[20, 50] = 0         # ... but for a one-pixel speck of interior
    assert split_instances(foot, edge, 128, 8).max() == 1
    assert split_instances(foot, edge, 128, 1).max() == 2


def test_a_small_core_seeds_only_inside_a_closed_band() -> None:
    """Cores under the marker size (down to a quarter of it) seed an instance where the band is
    closed around them (two small buildings sharing a wall), not where a faint line crosses one
    roof (two halves of one building)."""
    foot, edge = _pair()  # interiors of 26 x 26 = 676 px, the band (255) all round each
    assert split_instances(foot, edge, 128, 676).max() == 2
    assert split_instances(foot, edge, 128, 1000).max() == 2       # a quarter of 1000 <= 676: walled
    assert split_instances(foot, edge, 128, 4000).max() == 1       # under a quarter: no marker, whole
    roof = np.zeros((40, 80), np.uint8)
    band = np.zeros_like(roof)
    roof[5:35, 5:65] = 255
    band[5:35, 5:65] = 255
    band[7:33, 7:63] = 0
    band[7:33, 34:36] = 60  # a faint line across the roof: two halves of 26 x 27 px
    assert split_instances(roof, band, 128, 300).max() == 2        # halves above the marker size
    assert split_instances(roof, band, 128, 1000).max() == 1       # under it, not walled: one building


def test_masks_and_predictions_carry_edge_bands() -> None:
    mask = np.array([[0, 1, 254], [2, 253, 255]], np.uint8)
    p = mask_to_probs(mask, [1, 2], (1,))
    assert p.shape == (3, 2, 3)
    np.testing.assert_array_equal(p[0], [[0, 255, 255], [0, 0, 0]])  # building footprint: class + edge
    np.testing.assert_array_equal(p[2], [[0, 0, 255], [0, 0, 0]])    # its edge band
    q = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8) % 200
    data = encode_probs(q, edges=(1, 2))
    arr, edges = decode_prob_tile(data, 2)
    assert edges == (1, 2) and np.array_equal(arr, q)
    assert np.array_equal(decode_probs(data, 2), q[:2])
    # read_tile lays out the edges a caller asks for; an edge the tile lacks is zero
    got = read_tile(data, "predictions", [1, 2], "t", (2,))
    assert np.array_equal(got, q[[0, 1, 3]])
    assert not read_tile(encode_probs(q[:2]), "predictions", [1, 2], "t", (1,))[2].any()
    with pytest.raises(ValueError, match="not square"):
        decode_probs(encode_probs(q[:3]), 2)


def test_edge_channels_are_sigmoids_beside_the_class_softmax() -> None:
    import torch

    from pipeline.inference.predict_torch import output_probs
    from pipeline.model.losses import build_loss

    logits = torch.randn(2, 4, 8, 8)  # background, building, road, building edge
    p = output_probs(logits, 1)
    assert torch.allclose(p[:, :3].sum(1), torch.ones(2, 8, 8), atol=1e-5)  # footprints: a softmax
    assert torch.allclose(p[:, 3], torch.sigmoid(logits[:, 3]))
    # targets: 0 bg, 1 building, 2 road, 3 building edge, 255 ignore
    target = torch.randint(0, 4, (2, 8, 8))
    target[0, 0, 0] = 255
    fold = torch.arange(256)
    fold[3] = 1
    loss = build_loss((("ce", 1.0),), fold=fold, n_main=3)
    plain = build_loss((("ce", 1.0),))
    base = plain(logits[:, :3], fold[target])
    # the edge channel adds a binary loss; the footprint loss sees the edge as building
    assert float(loss(logits, target)) > float(base)
    sure = logits.clone()
    sure[:, 3] = torch.where(target == 3, 20.0, -20.0)
    assert float(loss(sure, target)) == pytest.approx(float(plain(sure[:, :3], fold[target])), abs=1e-3)


def _two_houses() -> Any:
    """Targets (1, 12, 16) of two 8 x 6 houses sharing a wall: 0 background, 1 building, 2 edge
    (a band of 1 px inside each outline), 255 ignore in one corner."""
    import torch

    inst = np.zeros((12, 16), dtype=np.int32)
    inst[2:10, 2:8], inst[2:10, 8:14] = 1, 2
    from pipeline.vectors.instances import edge_band

    t = np.where(inst > 0, 1, 0)
    t[edge_band(inst, 1)] = 2
    t[0, 0] = 255
    return torch.from_numpy(t[None].astype(np.int64))


def test_contact_weight_weighs_only_the_wall_between_two_houses() -> None:
    """The party wall (edge beside edge) weighs ``contact_weight`` times an outer wall's edge in the
    edge loss; 1 (or unset) is the plain loss."""
    import torch

    from pipeline.model.losses import _near, build_loss

    target = _two_houses()
    contact = (target == 2) & ~_near(target == 0, 1)
    cols = sorted(set(torch.nonzero(contact[0])[:, 1].tolist()))
    assert cols == [7, 8]  # the two band columns along the shared wall, nothing of the outer walls
    assert set(torch.nonzero(contact[0])[:, 0].tolist()) == set(range(3, 9))
    fold = torch.arange(256)
    fold[2] = 1
    base = torch.zeros(1, 3, 12, 16)
    base[:, 1] = torch.where(target > 0, 5.0, -5.0)  # footprint right, edge channel says 0 everywhere
    plain = build_loss((("ce", 1.0),), fold=fold, n_main=2)
    one = build_loss((("ce", 1.0),), fold=fold, n_main=2, contact_weight=1.0)
    five = build_loss((("ce", 1.0),), fold=fold, n_main=2, contact_weight=5.0, band_px=1)
    assert float(one(base, target)) == pytest.approx(float(plain(base, target)))
    assert float(five(base, target)) > float(plain(base, target))
    wall = base.clone()
    wall[:, 2] = torch.where(contact, 10.0, 0.0)  # the wall found: the weighted loss gains most
    gain_five = float(five(base, target)) - float(five(wall, target))
    gain_plain = float(plain(base, target)) - float(plain(wall, target))
    assert gain_five > 2 * gain_plain > 0  # (the Dice part is not weighted)


def test_a_bridge_through_a_gap_in_a_faint_wall_is_cut() -> None:
    """Two buildings whose shared wall the model saw only in part: their cores meet through the
    gap in a bridge two pixels wide, which the cores' erosion cuts. The erosion only cuts: a core
    it leaves nothing of (two pixels wide) still seeds, as it did without it."""
    from pipeline.vectors import instance_split

    foot, edge = _pair()
    edge[20:22, 33:37] = 0  # a gap of two pixels in the shared wall (columns 33-36 are the wall)
    assert split_instances(foot, edge, 128, 100).max() == 2
    assert (split_instances(foot, edge, 128, 100)[5:35, 5:35] == 1).all()
    roof = np.zeros((20, 60), np.uint8)
    roof[2:18, 2:58] = 255
    haze = np.where(roof > 0, 60, 0).astype(np.uint8)  # above the cores' edge threshold, no closed band
    haze[4:16, 4:24] = 0     # a core of 240 px, thick
    haze[9:11, 28:56] = 0    # and one two pixels wide: 56 px
    assert split_instances(roof, haze, 128, 40).max() == 2
    old = instance_split.CORE_ERODE_PX
    try:
        instance_split.CORE_ERODE_PX = 0  # the cores as they were: the two buildings are one
        assert split_instances(foot, edge, 128, 100).max() == 1
        assert split_instances(roof, haze, 128, 40).max() == 2
    finally:
        instance_split.CORE_ERODE_PX = old
