"""Buildings joined by a narrow neck come apart (pipeline.vectors.necks), and only those."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
import shapely.affinity

from pipeline.config.vectorize import VectorizeSpec
from pipeline.vectors.finish import _split_necks
from pipeline.vectors.necks import split_necks
from pipeline.vectors.table import Table


def _split(*polys: shapely.Geometry, r: float = 2.0, min_core: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    n = len(polys)
    return split_necks(np.array(polys, dtype=object), np.full(n, r), np.full(n, min_core))


def test_two_buildings_joined_at_a_corner_come_apart() -> None:
    a, b = shapely.box(0, 0, 20, 10), shapely.box(19, 9, 39, 19)  # a 1 x 1 m overlap at the corner
    out, src = _split(shapely.union(a, b))
    assert src.tolist() == [0, 0]
    assert sorted(round(float(shapely.area(g))) for g in out) == [199, 200]  # the corner goes to one of them
    assert all(max(float(shapely.area(shapely.intersection(g, a))), float(shapely.area(shapely.intersection(g, b))))
               >= 0.99 * float(shapely.area(g)) for g in out)  # each piece is one of the two buildings
    assert shapely.area(shapely.union_all(out)) == pytest.approx(shapely.area(shapely.union(a, b)))


def _pixelated(poly: shapely.Geometry, px: float) -> shapely.Geometry:
    """``poly`` as a traced raster outline: the union of the ``px`` pixels whose centres it holds."""
    x0, y0, x1, y1 = np.floor(shapely.bounds(poly) / px)
    xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))  # whole pixels: shared edges are exact
    inside = shapely.contains_xy(poly, (xs + 0.5) * px, (ys + 0.5) * px)
    cells = shapely.union_all(shapely.box(xs[inside], ys[inside], xs[inside] + 1, ys[inside] + 1))
    return shapely.affinity.scale(cells, px, px, origin=(0, 0))


def test_traced_outlines_come_apart_on_their_simplified_shape() -> None:
    """A rotated corner join traced at 0.3 m pixels (a staircase of a few hundred vertices): the
    bodies are found on the outline simplified by a pixel, and the pieces, cut from the traced
    outline, are its two buildings with (nearly) all of its area."""
    a, b = shapely.box(0, 0, 20, 10), shapely.box(19, 9, 39, 19)
    traced = _pixelated(shapely.affinity.rotate(shapely.union(a, b), 30, origin=(0, 0)), 0.3)
    assert shapely.get_num_coordinates(traced) > 200
    out, src = split_necks(np.array([traced], dtype=object), np.array([2.0]), np.array([8.0]), 0.3)
    assert src.tolist() == [0, 0]
    assert sorted(round(float(shapely.area(g)) / 10) for g in out) == [20, 20]  # about 200 m² each
    assert shapely.area(shapely.union_all(out)) == pytest.approx(shapely.area(traced), rel=1e-3)
    assert shapely.area(shapely.intersection(*out)) == pytest.approx(0, abs=1e-6)


def test_a_row_joined_by_a_passage_stays_one_block() -> None:
    """Aligned, the pair is nearly as rectangular as its parts (0.87 against 0.93): no split. The
    rule is for the corner joins a block of apartment buildings makes, not for a terrace's gaps."""
    dumbbell = shapely.union_all([shapely.box(0, 0, 10, 10), shapely.box(10, 4, 14, 6), shapely.box(14, 0, 24, 10)])
    out, _ = _split(dumbbell)
    assert len(out) == 1


@pytest.mark.parametrize("poly", [
    shapely.box(0, 0, 50, 30),                                              # a rectangle: one body
    shapely.union(shapely.box(0, 0, 20, 6), shapely.box(0, 0, 6, 20)),     # an L with 6 m wings
    shapely.box(0, 0, 30, 3),                                               # narrower than 2 r: no body
    shapely.box(0, 0, 30, 30).difference(shapely.box(6, 6, 24, 24)),       # a courtyard block
])
def test_single_buildings_stay_whole(poly: shapely.Geometry) -> None:
    out, src = _split(poly)
    assert src.tolist() == [0] and out[0].equals(poly)


def test_a_roof_seen_in_part_is_not_cut_into_pieces() -> None:
    """Two irregular lobes joined by a neck: the pieces are no more rectangular than the whole."""
    lobe = shapely.Point(0, 0).buffer(8, quad_segs=3)
    blob = shapely.union_all([lobe, shapely.box(7, -1, 13, 1), shapely.affinity.translate(lobe, 20, 0)])
    out, _ = _split(blob)
    assert len(out) == 1


def test_finish_shares_pixel_counts_by_area_and_keeps_the_mean() -> None:
    a, b = shapely.box(0, 0, 20, 10), shapely.box(19, 9, 39, 19)
    road = shapely.LineString([(0, 50), (40, 50)])
    pieces = Table({"geometry": np.array([shapely.union(a, b), road], dtype=object),
                    "class_id": np.array([1, 2]), "kind": np.array(["area", "line"], dtype=object),
                    "psum": np.array([399.0 * 200, 10.0]), "count": np.array([399, 1]), "pmax": np.array([255, 100]),
                    "src": np.array([0, 0]), "open": np.array([False, False])})
    from pipeline.config.region import ClassSpec, TagFilter

    classes = (ClassSpec("building", 1, "area", 20, (TagFilter("building", None),)),
               ClassSpec("road", 2, "line", 10, (TagFilter("highway", None),)))
    out, geoms = _split_necks(pieces, pieces["geometry"], classes, VectorizeSpec(), 0.3)
    assert len(geoms) == len(out)
    assert len(out) == 3 and list(out["kind"]).count("area") == 2
    area = out[out["kind"] == "area"]
    assert area["count"].sum() == pytest.approx(399.0) and np.allclose(area["psum"] / area["count"], 200.0)
    off, _ = _split_necks(pieces, pieces["geometry"], classes, VectorizeSpec(neck_m=()), 0.3)
    assert len(off) == 2


def test_neck_widths_in_the_config(tmp_path: object) -> None:
    from pathlib import Path

    from pipeline.config.vectorize import parse_vectorize
    from pipeline.core.errors import ConfigError

    p = Path(str(tmp_path)) / "r.toml"
    assert parse_vectorize(p, {}).neck_m == (2.0, 3.0)
    assert parse_vectorize(p, {"neck_m": 2.5}).neck_m == (2.5,)
    assert parse_vectorize(p, {"neck_m": []}).neck_m == ()
    with pytest.raises(ConfigError, match=r"r.toml: vectorize.neck_m = "):
        parse_vectorize(p, {"neck_m": [2, "wide"]})


def test_a_wider_neck_is_tried_after_the_narrow_one() -> None:
    """A 5 m wide join holds at 2 m (one body) and opens at 3 m: finish tries both widths."""
    a, b = shapely.box(0, 0, 30, 12), shapely.box(25, 11, 37, 41)  # corner overlap 5 x 1 m
    block = np.array([shapely.union(a, b)], dtype=object)
    assert len(split_necks(block, np.array([2.0]), np.array([8.0]))[0]) == 1
    assert len(split_necks(block, np.array([3.0]), np.array([8.0]))[0]) == 2
