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
