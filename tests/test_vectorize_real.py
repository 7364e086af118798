"""Round trip on real building outlines (../shared/data/real: OSM-derived and hand-drawn labels):
burnt into z19 tiles, vectorised and merged back, one polygon per building."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from rasterio.features import rasterize

from pipeline.config.region import ClassSpec, TagFilter
from pipeline.tiles.geo import to_mercator
from pipeline.tiles.tilemath import Tile, cover_mercator, shard_of, tile_transform
from pipeline.vectors.finish import finish, finish_shard, sort_features
from pipeline.vectors.vectorize import VectorizeSpec, cached_loader, region_pieces, shard_box_px, shard_pieces
from tests.conftest import SHARED_DATA

BUILDING = ClassSpec("building", 1, "area", 20, (TagFilter("building", None),))
Z, SIZE, SHARD_Z = 19, 256, 17


@pytest.mark.parametrize("place", ["philippines", "kampala"])
@pytest.mark.parametrize(("regularize", "floor"), [((), 0.93), (None, 0.92)], ids=["raw", "squared"])
def test_real_buildings_round_trip(place: str, regularize: tuple[str, ...] | None, floor: float) -> None:
    """Traced outlines (``regularize = []``) and the default squared ones (buildingregulariser)."""
    path = SHARED_DATA / "real" / place / "labels" / "buildings.geojson"
    if not path.exists():
        pytest.skip(f"{path} is absent (shared sample data beside the project)")
    feats = json.loads(path.read_text())["features"]
    geoms = np.array([shapely.make_valid(shapely.geometry.shape(f["geometry"])) for f in feats], dtype=object)
    geoms = to_mercator(np.array([g for g in geoms if g.geom_type in ("Polygon", "MultiPolygon")], dtype=object))
    # drop overlapping labels (hand-drawn sets have a few): a raster cannot keep them apart
    tree = shapely.STRtree(geoms)
    i, j = tree.query(geoms, predicate="overlaps")
    geoms = np.delete(geoms, np.unique(np.r_[i, j]))
    tiles = [Tile(Z, int(x), int(y)) for x, y in cover_mercator(geoms, Z)]
    probs = {t: rasterize(list(geoms), (SIZE, SIZE), transform=tile_transform(t, SIZE), default_value=255,
                          dtype=np.uint8)[None] for t in tiles}
    load = cached_loader(probs.get, (BUILDING,))
    spec = VectorizeSpec(min_area_m2=0.5, regularize=regularize)
    done, open_parts = [], []
    for k, s in enumerate(sorted({shard_of(t, SHARD_Z) for t in tiles})):
        pieces = shard_pieces([t for t in tiles if shard_of(t, SHARD_Z) == s], load, (BUILDING,), 0.5,
                              shard_box_px(s, Z, SIZE), k)
        finished, still_open = finish_shard(pieces, (BUILDING,), spec, Z, SIZE)
        done.append(finished)
        open_parts.append(still_open)
    out = sort_features([*done, finish(region_pieces(open_parts), (BUILDING,), spec, Z, SIZE)])
    assert shapely.is_valid(out.geometry.to_numpy()).all()
    pred = to_mercator(out.geometry.to_numpy())
    # labels less than a pixel apart fuse in the raster: compare each polygon with the labels in it
    pts = shapely.point_on_surface(geoms)
    owner_p, owner_l = shapely.STRtree(pts).query(pred, predicate="contains")
    assert len(np.unique(owner_l)) >= 0.98 * len(geoms)  # (the smallest slivers may vanish)
    assert len(np.unique(owner_l)) == len(owner_l)  # no label split between two polygons
    truth = np.array([shapely.union_all(geoms[owner_l[owner_p == k]]) for k in range(len(pred))], dtype=object)
    inter = shapely.area(shapely.intersection(pred, truth))
    v = inter / (shapely.area(pred) + shapely.area(truth) - inter)
    assert np.median(v) >= floor, np.median(v)
    assert shapely.area(pred).sum() == pytest.approx(shapely.area(geoms).sum(), rel=0.03)
