"""pipeline.vectors.trace gives exactly the outlines of rasterio.features.shapes (4-connectivity)."""

from __future__ import annotations

import numpy as np
import shapely
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from rasterio.features import shapes
from scipy import ndimage

from pipeline.vectors.trace import trace


def _check(b: np.ndarray) -> None:
    lab, _ = ndimage.label(b)
    polys, comp = trace(b, lab, 100.0, 200.0)
    ref = {int(v): shapely.geometry.shape(g) for g, v in shapes(lab, mask=b, connectivity=4)}
    ref = {k: shapely.affinity.translate(g, 100.0, 200.0) for k, g in ref.items()}
    got = dict(zip(comp.tolist(), polys))
    assert set(got) == set(ref)
    for k, g in got.items():
        assert g.is_valid and g.geom_type == "Polygon"
        assert shapely.equals(g, ref[k]), (b.astype(int), g.wkt, ref[k].wkt)


@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))))
def test_same_outlines_as_rasterio(b: np.ndarray) -> None:
    _check(b)


def test_holes_islands_and_saddles() -> None:
    b = np.zeros((9, 9), dtype=bool)
    b[1:8, 1:8] = True
    b[2:7, 2:7] = False  # a hole...
    b[4, 4] = True  # ...with an island
    b[2, 2] = True
    b[3, 3] = False  # a saddle: hole pixels touching the outline's corner
    _check(b)
    lab, _ = ndimage.label(b)
    polys, _ = trace(b, lab)
    assert sorted(len(p.interiors) for p in polys) == [0, 1]
    # vertices only where the outline turns: a 3x2 block is 4 corners
    blk = np.zeros((4, 5), dtype=bool)
    blk[1:3, 1:4] = True
    p, _ = trace(blk, ndimage.label(blk)[0])
    assert shapely.get_num_coordinates(p[0]) == 5
    assert len(trace(np.zeros((3, 3), dtype=bool), np.zeros((3, 3), dtype=np.int32))[0]) == 0


@given(arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12))), st.integers(1, 3))
def test_a_label_of_several_parts_gives_a_polygon_per_part(b: np.ndarray, groups: int) -> None:
    """Labels that are not 4-connected (an instance split can leave such a label: the 25 km²
    town's vectorising met a part of one instance taken for a hole of another, an invalid polygon
    GEOS then failed on): one valid polygon per part, each with its own holes, as rasterio's."""
    lab, _ = ndimage.label(b)
    merged = np.where(lab > 0, lab % groups + 1, 0).astype(np.int32)
    polys, comp = trace(b, merged)
    assert all(shapely.is_valid(polys)) and all(p.geom_type == "Polygon" for p in polys)
    ref = [(shapely.geometry.shape(g), int(v)) for g, v in shapes(merged, mask=b, connectivity=4)]
    assert len(polys) == len(ref)
    for v in set(comp.tolist()) | {v for _, v in ref}:
        mine = shapely.union_all(polys[comp == v])
        theirs = shapely.union_all([g for g, w in ref if w == v])
        assert shapely.equals(mine, theirs), (merged, v)


def test_a_hole_goes_to_the_part_around_it() -> None:
    b = np.zeros((7, 12), dtype=bool)
    b[1:6, 1:6] = True
    b[3, 3] = False  # a hole in the left part
    b[1:6, 7:11] = True  # the right part: same label, no hole
    polys, comp = trace(b, np.where(b, 5, 0).astype(np.int32))
    assert comp.tolist() == [5, 5] and sorted(len(p.interiors) for p in polys) == [0, 1]
    assert all(p.is_valid for p in polys)
