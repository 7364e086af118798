"""Evidence inside polygons (pipeline.review.evidence) from tiny hand-made prediction and image tiles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from PIL import Image

from pipeline.inference.probs import encode_probs
from pipeline.review.evidence import inside_evidence, resolvable_m2, tile_pairs, usable_pixels
from pipeline.tiles.geo import to_lonlat
from pipeline.tiles.index import INDEX_FILE
from pipeline.tiles.tilemath import Tile, tile_bounds, tile_extent_m
from pipeline.tiles.writer import tile_path

Z = 19
T = Tile(Z, 309_600, 261_670)
RIGHT = Tile(Z, T.x + 1, T.y)  # no prediction tile there
PRED_PX, IMG_PX = 64, 128  # prediction tiles smaller than image tiles (a half-resolution model)
RES = tile_extent_m(Z) / PRED_PX


def px_box(c0: float, r0: float, c1: float, r1: float, t: Tile = T) -> shapely.Polygon:
    """A box in prediction-tile pixels (col, row) of tile ``t``, in EPSG:3857."""
    left, _, _, top = tile_bounds(t)
    return shapely.box(left + c0 * RES, top - r1 * RES, left + c1 * RES, top - r0 * RES)


def lonlat(*geoms: shapely.Geometry) -> np.ndarray:
    return to_lonlat(np.array(geoms, dtype=object))


def write_pred(root: Path, t: Tile = T) -> None:
    """Two class bands and one edge band; class band 0 is 0.9 on pixels [10, 30) x [10, 30) and 0.2
    on [40, 50) x [40, 50), band 1 is 1.0 everywhere (to catch a band mix-up)."""
    q = np.zeros((3, PRED_PX, PRED_PX), np.uint8)
    q[0, 10:30, 10:30] = 230
    q[0, 40:50, 40:50] = 51
    q[1] = 255
    p = tile_path(root, t, "png")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(encode_probs(q, edges=(1,)))


def write_image(root: Path, rgb: np.ndarray, t: Tile = T, ext: str = "png") -> Path:
    p = tile_path(root, t, ext)
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(p)
    return p


def grey(value: int, px: int = IMG_PX) -> np.ndarray:
    return np.full((px, px, 3), value, np.uint8)


def test_known_square_and_a_polygon_half_outside_the_predictions(tmp_path: Path) -> None:
    write_pred(tmp_path / "pred")
    geoms = lonlat(px_box(10, 10, 30, 30),  # the 0.9 square, exactly
                   px_box(40, 40, 50, 50),  # the 0.2 square
                   px_box(5, 5, 35, 35),  # the 0.9 square with a ring of zeros around it
                   px_box(54, 10, 74, 30),  # half on T, half on the tile to its right (no prediction)
                   px_box(10, 10, 30, 30, RIGHT))  # wholly outside the predicted tiles
    ev = inside_evidence(geoms, 0, 2, Z, tmp_path / "pred", None)
    assert list(ev.columns) == ["prob_inside", "prob_max_inside", "confident_share", "pred_share", "usable_share"]
    assert ev["prob_inside"].iloc[0] == pytest.approx(230 / 255)
    assert ev["prob_max_inside"].iloc[0] == pytest.approx(230 / 255)
    assert ev["confident_share"].iloc[0] == 1.0
    assert ev["prob_inside"].iloc[1] == pytest.approx(51 / 255) and ev["confident_share"].iloc[1] == 0.0
    assert ev["prob_inside"].iloc[2] == pytest.approx(230 / 255 * 400 / 900)
    assert ev["confident_share"].iloc[2] == pytest.approx(400 / 900)
    assert ev["pred_share"].iloc[:3].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert ev["pred_share"].iloc[3] == pytest.approx(0.5)
    assert ev["prob_inside"].iloc[3] == 0.0  # the half on T holds no building
    assert np.isnan(ev["prob_inside"].iloc[4]) and np.isnan(ev["confident_share"].iloc[4])
    assert ev["pred_share"].iloc[4] == 0.0
    # without imagery, usable means predicted
    assert ev["usable_share"].tolist() == pytest.approx(ev["pred_share"].tolist())
    # another band: band 1 is 1.0 everywhere; the edge band (2) is 0
    assert inside_evidence(geoms[:1], 1, 2, Z, tmp_path / "pred", None)["prob_inside"].iloc[0] == 1.0
    assert inside_evidence(geoms[:1], 2, 2, Z, tmp_path / "pred", None)["prob_inside"].iloc[0] == 0.0
    with pytest.raises(ValueError, match="band 3"):
        inside_evidence(geoms[:1], 3, 2, Z, tmp_path / "pred", None)


def test_usable_share_from_image_tiles_of_another_size(tmp_path: Path) -> None:
    write_pred(tmp_path / "pred")
    write_pred(tmp_path / "pred", RIGHT)
    geoms = lonlat(px_box(10, 10, 30, 30), px_box(10, 10, 30, 30, RIGHT))
    for value, share in ((5, 0.0), (250, 0.0), (0, 0.0), (120, 1.0)):  # dark, cloud, nodata, good
        img = tmp_path / f"img{value}"
        write_image(img, grey(value))
        ev = inside_evidence(geoms, 0, 2, Z, tmp_path / "pred", img)
        assert ev["usable_share"].iloc[0] == share, value
        assert ev["usable_share"].iloc[1] == 1.0  # no image tile there, but a prediction: the model saw imagery
        assert ev["pred_share"].tolist() == [1.0, 1.0]
    # alpha: the left half transparent; the polygon straddles it (columns 0..60 of 128 in image px)
    rgba = np.zeros((IMG_PX, IMG_PX, 4), np.uint8)
    rgba[..., :3] = 120
    rgba[:, IMG_PX // 2:, 3] = 255
    write_image(tmp_path / "alpha", rgba)
    half = lonlat(px_box(16, 10, 48, 30))  # prediction px 16..48 = image px 32..96, the middle
    assert inside_evidence(half, 0, 2, Z, tmp_path / "pred", tmp_path / "alpha")["usable_share"].iloc[0] == 0.5
    # a polygon half on a predicted tile with imagery, half on no tile at all
    across = lonlat(px_box(54, 10, 74, 30))
    write_image(tmp_path / "img120", grey(120), RIGHT)
    ev = inside_evidence(across, 0, 2, Z, tmp_path / "pred", tmp_path / "img120")
    assert ev["usable_share"].iloc[0] == pytest.approx(1.0)
    (tmp_path / "img120" / tile_path(Path(), RIGHT, "png")).unlink()  # predicted tiles without their imagery
    ev = inside_evidence(across, 0, 2, Z, tmp_path / "pred", tmp_path / "img120")
    assert ev["usable_share"].iloc[0] == pytest.approx(1.0)  # the model saw imagery there
    (tmp_path / "pred" / tile_path(Path(), RIGHT, "png")).unlink()  # no prediction, no image: nothing seen
    ev = inside_evidence(across, 0, 2, Z, tmp_path / "pred", tmp_path / "img120")
    assert ev["usable_share"].iloc[0] == pytest.approx(ev["pred_share"].iloc[0]) and ev["pred_share"].iloc[0] < 0.9


def test_usable_pixels_rules(tmp_path: Path) -> None:
    rgb = np.full((2, 3, 3), 120, np.uint8)
    rgb[0, 0] = (10, 20, 25)  # mean 18: dark
    rgb[0, 1] = (240, 250, 236)  # all > 235: cloud
    rgb[0, 2] = (240, 250, 200)  # bright, but one channel is not saturated: usable
    rgb[1, 0] = 0  # nodata
    ok = usable_pixels(write_image(tmp_path, rgb))
    assert ok.tolist() == [[False, False, True], [False, True, True]]
    la = np.zeros((2, 2, 2), np.uint8)
    la[..., 0] = 100
    la[0, :, 1] = 255
    p = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(p)
    assert usable_pixels(p).tolist() == [[True, True], [False, False]]
    rgb[1, 1] = (19, 20, 20)  # mean 19.67: dark (the rule on sums: 59 < 60)
    rgb[1, 2] = (20, 20, 20)  # mean 20: usable
    path = write_image(tmp_path, rgb)  # the same file rewritten: its remembered mask is not reused
    assert usable_pixels(path).tolist() == [[False, False, True], [False, False, True]]
    assert usable_pixels(path).tolist() == [[False, False, True], [False, False, True]]  # remembered


def test_tile_index_names_the_tiles(tmp_path: Path) -> None:
    write_pred(tmp_path / "pred")
    write_pred(tmp_path / "pred", RIGHT)  # a stray tile of an earlier run: not in the index
    pd.DataFrame({"z": [Z], "x": [T.x], "y": [T.y], "shard": ["s"], "path": [f"{T}.png"], "size": [1],
                  "sha256": [""], "status": ["written"]}).to_parquet(tmp_path / "pred" / INDEX_FILE)
    ev = inside_evidence(lonlat(px_box(10, 10, 30, 30), px_box(10, 10, 30, 30, RIGHT)), 0, 2, Z,
                         tmp_path / "pred", None)
    assert ev["pred_share"].tolist() == [1.0, 0.0]


def test_degenerate_inputs(tmp_path: Path) -> None:
    write_pred(tmp_path / "pred")
    tiny = px_box(12.6, 12.6, 12.9, 12.9)  # holds no pixel centre: takes the pixel it touches
    geoms = np.array([*lonlat(tiny), shapely.Polygon(), None, shapely.Point(0, 0)], dtype=object)
    ev = inside_evidence(geoms, 0, 2, Z, tmp_path / "pred", None)
    assert len(ev) == 4
    assert ev["prob_inside"].iloc[0] == pytest.approx(230 / 255)
    assert ev["prob_inside"].iloc[1:].isna().all() and (ev["pred_share"].iloc[1:] == 0).all()
    empty = inside_evidence(np.array([], dtype=object), 0, 2, Z, tmp_path / "pred", tmp_path)
    assert len(empty) == 0 and "prob_inside" in empty.columns


def test_tile_pairs_area_shares() -> None:
    idx, tx, ty, frac = tile_pairs(np.array([px_box(54, 10, 74, 30), px_box(1, 1, 2, 2)], dtype=object), Z)
    assert sorted(zip(idx.tolist(), tx.tolist(), ty.tolist(), frac.round(6).tolist(), strict=True)) == [
        (0, T.x, T.y, 0.5), (0, RIGHT.x, T.y, 0.5), (1, T.x, T.y, 1.0)]


def test_resolvable_area() -> None:
    res = tile_extent_m(Z) / 256  # 0.30 m at the equator
    assert resolvable_m2(Z, 0.0) == pytest.approx(16 * res**2)
    assert resolvable_m2(Z, 0.0, scale=0.5) == pytest.approx(4 * 16 * res**2)  # half-resolution model
    assert resolvable_m2(Z, 60.0) == pytest.approx(16 * (res * 0.5) ** 2)
    assert resolvable_m2(Z - 1, 0.0, min_px=1) == pytest.approx((2 * res) ** 2)
    assert resolvable_m2(Z, 45.0, tile_size=512) == pytest.approx(16 * (res / 2 * math.cos(math.pi / 4)) ** 2)
    with pytest.raises(ValueError):
        resolvable_m2(Z, 0.0, scale=0.0)


def test_outline_edges_tell_a_standing_roof_from_bare_ground(tmp_path: Path) -> None:
    """A roof (a bright box on noisy ground, across two image tiles) keeps its outline as an
    edge; the same outline on plain ground has none (a demolished building, or a placebo); the
    ratio does not depend on which tile the outline lies in. No image tile: NaN."""
    from pipeline.review.evidence import outline_edges, tile_files

    rng = np.random.default_rng(0)
    left = (rng.normal(90, 6, (IMG_PX, IMG_PX, 3))).clip(0, 255).astype(np.uint8)
    right = (rng.normal(90, 6, (IMG_PX, IMG_PX, 3))).clip(0, 255).astype(np.uint8)
    left[40:80, 100:] = 200  # the roof, 40 image px tall, from column 100 of T ...
    right[40:80, :20] = 200  # ... to column 20 of RIGHT
    images = tmp_path / "images"
    write_image(images, left)
    write_image(images, right, RIGHT)
    k = IMG_PX / PRED_PX  # image pixels per prediction pixel (px_box counts prediction pixels)
    roof = px_box(100 / k, 40 / k, (IMG_PX + 20) / k, 80 / k)  # spans both tiles
    bare = px_box(10 / k, 90 / k, 50 / k, 120 / k)  # the same kind of outline on the noisy ground
    lookup = tile_files(images, Z)
    far = shapely.box(*shapely.bounds(px_box(0, 0, 10, 10, Tile(Z, T.x + 5, T.y))))
    edge = outline_edges(lonlat(roof, bare, far), Z, lookup)
    assert edge[0] > 3.0 and edge[1] < 1.3, edge
    assert np.isnan(edge[2])
    assert len(outline_edges(lonlat(), Z, lookup)) == 0


def test_outline_edges_of_a_16_bit_grey_tile(tmp_path: Path) -> None:
    """One-band 16-bit imagery (atlanta's pan): the gradient of the raw values, not of 8-bit
    clipped ones (the roof at 3000, the ground at 1000 would both clip to white)."""
    from pipeline.review.evidence import outline_edges, tile_files

    rng = np.random.default_rng(1)
    img = rng.normal(1000, 30, (IMG_PX, IMG_PX)).clip(0, 65535).astype(np.uint16)
    img[40:80, 40:80] = 3000
    p = tile_path(tmp_path, T, "png")
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(p)
    k = IMG_PX / PRED_PX
    edge = outline_edges(lonlat(px_box(40 / k, 40 / k, 80 / k, 80 / k), px_box(5 / k, 90 / k, 35 / k, 120 / k)),
                         Z, tile_files(tmp_path, Z))
    assert edge[0] > 3.0 and edge[1] < 1.3, edge
