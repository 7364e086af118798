"""Raster imagery: tiles cut through warped VRTs line up with the masks, honour nodata/alpha,
bands, 16-bit rescaling, overviews and mosaic order, and are written atomically.

Rasters are generated here with seeded code; the real SpaceNet samples under
``../shared/data/real`` are used when present (skipped otherwise).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from PIL import Image
from rasterio.transform import from_origin
from rasterio.warp import transform_bounds

from pipeline.config.region import ClassSpec, ImageryConfig, TagFilter
from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.imagery.common import verify_image
from pipeline.imagery.raster import ShardTiler, iter_tiles, overview_level, raster_shard, to_8bit
from pipeline.imagery.raster_plan import RasterPlan, plan_sources
from pipeline.tiles.geo import lonlat_to_mercator
from pipeline.tiles.masks import burn_tile, prepare_burn
from pipeline.tiles.tilemath import Tile, cover_bbox, shard_of, tile_bounds, tile_extent_m
from pipeline.tiles.writer import TileStatus
from tests.conftest import SHARED_DATA

REAL = SHARED_DATA / "real"
BUILDING = (ClassSpec("building", 1, "area", 1, (TagFilter("building", None),)),)


def write_tif(path: Path, data: np.ndarray, crs: str, transform: Any, **kw: Any) -> Path:
    count, h, w = data.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=data.dtype.name,
                       crs=crs, transform=transform, **kw) as dst:
        dst.write(data)
    return path


def lonlat_bounds(path: Path) -> tuple[float, float, float, float]:
    with rasterio.open(path) as src:
        return tuple(transform_bounds(src.crs, "EPSG:4326", *src.bounds))  # type: ignore[return-value]


def tiles_of(path: Path, z: int) -> list[Tile]:
    return [Tile(z, int(x), int(y)) for x, y in cover_bbox(lonlat_bounds(path), z)]


def read_tile(plan: RasterPlan, t: Tile, size: int = 256,
              resampling: str = "bilinear") -> tuple[np.ndarray, np.ndarray]:
    with ShardTiler(plan, shard_of(t, max(0, t.z - 3)), t.z, size, resampling) as tiler:
        return tiler.read(t)


def edge_offsets(img: np.ndarray, valid: np.ndarray, mask: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Per row crossing the edge: (sub-pixel edge column in the image) - (edge column in the
    mask). The image edge is the number of 'dark' pixels, exact for a resampled step."""
    v = (img.astype(float) - lo) / (hi - lo)
    rows = np.flatnonzero(valid.all(axis=1) & (mask == 1).any(axis=1) & (mask == 0).any(axis=1))
    return np.array([(1 - v[r]).sum() - (mask[r] == 0).sum() for r in rows])


# ---------------------------------------------------------------------------------------------
# Alignment with the masks


def edge_raster(tmp: Path, crs: str, transform: Any, n: int, col: int, dtype: str = "uint16",
                lo: int = 200, hi: int = 1000, count: int = 1, **kw: Any) -> Path:
    """A raster whose columns left of ``col`` are ``lo`` and the others ``hi``."""
    data = np.full((count, n, n), lo, dtype=dtype)
    data[:, :, col:] = hi
    return write_tif(tmp / f"edge-{crs.replace(':', '')}.tif", data, crs, transform, **kw)


def edge_polygon(transform: Any, n: int, col: int, crs: str) -> gpd.GeoDataFrame:
    """The polygon right of column ``col`` of a raster, as labels in EPSG:4326."""
    left, top = transform @ (col, 0)
    right, bottom = transform @ (n, n)
    poly = shapely.segmentize(shapely.box(left, bottom, right, top), (right - left) / 50)
    return gpd.GeoDataFrame({"class": ["building"], "buffer_m": [0.0]}, geometry=[poly], crs=crs).to_crs(4326)


@pytest.mark.parametrize("z", [18, 19])
def test_sharp_edge_utm_lands_on_the_mask_edge(tmp_path: Path, z: int) -> None:
    # UTM 16N (Atlanta's CRS), 0.5 m, nodata 0: the grid is rotated ~1.4 degrees against web
    # mercator, so the edge crosses pixel columns at every sub-pixel phase
    transform = from_origin(733600.0, 3725100.0, 0.5, 0.5)
    tif = edge_raster(tmp_path, "EPSG:32616", transform, 800, 403, nodata=0)
    burn = prepare_burn(edge_polygon(transform, 800, 403, "EPSG:32616"), BUILDING)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), rescale=(200.0, 1000.0)))
    offsets = []
    for t in tiles_of(tif, z):
        data, valid = read_tile(plan, t)
        offsets.append(edge_offsets(data[0], valid, burn_tile(burn, t, 256), 200, 1000))
    d = np.concatenate(offsets)
    assert len(d) > 200
    assert np.abs(d).max() <= 0.5 + 0.02  # same pixel column (the mask quantises to whole pixels)
    assert abs(d.mean()) < 0.05  # and no systematic shift (half a pixel would show as +-0.5)


def test_sharp_edge_lonlat_matches_the_exact_column(tmp_path: Path) -> None:
    # EPSG:4326 (Vegas' CRS): meridians are vertical in web mercator, so the edge column is known
    res = 2.7e-6
    transform = from_origin(-115.1706, 36.2406, res, res)
    tif = edge_raster(tmp_path, "EPSG:4326", transform, 1300, 611, dtype="uint8", lo=0, hi=255, count=3)
    burn = prepare_burn(edge_polygon(transform, 1300, 611, "EPSG:4326"), BUILDING)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,)))
    edge_x = lonlat_to_mercator(np.array([[-115.1706 + 611 * res, 36.24]]))[0, 0]
    seen = 0
    for t in tiles_of(tif, 19):
        left = tile_bounds(t)[0]
        col = (edge_x - left) / (tile_extent_m(t.z) / 256)  # exact edge, in tile pixels
        if not 1 < col < 255:
            continue
        data, valid = read_tile(plan, t)
        mask = burn_tile(burn, t, 256)
        rows = valid.all(axis=1)
        img_edge = (1 - data[0][rows] / 255.0).sum(axis=1)
        assert np.allclose(img_edge, col, atol=0.05)
        assert np.all((mask[rows] == 0).sum(axis=1) == np.round(col))  # the mask's column, same place
        seen += 1
    assert seen >= 2


@pytest.mark.skipif(not (REAL / "atlanta" / "image.tif").is_file(), reason="real data ../shared/data absent")
def test_atlanta_real_georeferencing_sharp_edge(tmp_path: Path) -> None:
    # Atlanta's own grid, type and nodata, with a sharp edge painted in
    with rasterio.open(REAL / "atlanta" / "image.tif") as src:
        profile, transform, n = src.profile, src.transform, src.width
        real = src.read(1)
    data = np.where(real > 0, 300, 0).astype("uint16")[None]
    data[0, :, 517:] = np.where(real[:, 517:] > 0, 900, 0)
    tif = write_tif(tmp_path / "atl.tif", data, profile["crs"].to_string(), transform, nodata=profile["nodata"])
    burn = prepare_burn(edge_polygon(transform, n, 517, profile["crs"].to_string()), BUILDING)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), rescale=(300.0, 900.0)))
    offsets = []
    for t in tiles_of(tif, 19):
        arr, valid = read_tile(plan, t)
        offsets.append(edge_offsets(arr[0], valid, burn_tile(burn, t, 256), 300, 900))
    d = np.concatenate(offsets)
    assert len(d) > 300
    assert np.abs(d).max() <= 0.52 and abs(d.mean()) < 0.05


@pytest.mark.skipif(not (REAL / "atlanta" / "image.tif").is_file(), reason="real data ../shared/data absent")
def test_atlanta_real_labels_line_up() -> None:
    # the real orthophoto and its building labels (EPSG:32616, legacy crs member): image edges
    # are strongest on the mask outline within 1 m (SpaceNet's labels are 1-2 m off on some houses)
    labels = gpd.read_file(REAL / "atlanta" / "labels" / "buildings.geojson")
    assert labels.crs is not None and labels.crs.to_epsg() == 32616
    n = len(labels)
    feats = gpd.GeoDataFrame({"class": ["building"] * n, "buffer_m": [0.0] * n}, geometry=labels.geometry.values,
                             crs=labels.crs).to_crs(4326)
    img, valid, mask = mosaic(REAL / "atlanta" / "image.tif", feats, BUILDING, 19)
    best, at0, median = edge_score(img, valid, mask > 0, 8)
    assert max(abs(best[0]), abs(best[1])) <= 4  # px at z19 = 0.25 m
    assert at0 > median


@pytest.mark.skipif(not (REAL / "vegas-roads" / "image.tif").is_file(), reason="real data ../shared/data absent")
def test_vegas_real_roads_line_up() -> None:
    # RGBA in EPSG:4326; road centrelines buffered 3 m fall on the dark asphalt, not beside it
    labels = gpd.read_file(REAL / "vegas-roads" / "labels" / "roads.geojson").to_crs(4326)
    classes = (ClassSpec("road", 2, "line", 1, (TagFilter("highway", None),), buffer_m=3.0),)
    n = len(labels)
    feats = gpd.GeoDataFrame({"class": ["road"] * n, "buffer_m": [3.0] * n}, geometry=labels.geometry.values, crs=4326)
    img, valid, mask = mosaic(REAL / "vegas-roads" / "image.tif", feats, classes, 19)
    road = mask > 0
    inside = img[road & valid].mean()
    assert inside < 0.5 * img[~road & valid].mean()
    # the mask is darkest where it is (within 2 m: SpaceNet centrelines are approximate)
    shifts = [(dy, dx) for dy in range(-16, 17, 4) for dx in range(-16, 17, 4)]
    dark = {s: img[np.roll(np.roll(road, s[0], 0), s[1], 1) & valid].mean() for s in shifts}
    best = min(dark, key=lambda s: dark[s])
    assert max(abs(best[0]), abs(best[1])) <= 8
    assert dark[(0, 0)] < 1.1 * dark[best] and max(dark.values()) > 1.25 * dark[(0, 0)]


def mosaic(tif: Path, feats: gpd.GeoDataFrame, classes: Any, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grey image, validity and mask of every tile of a raster, as one block."""
    from pipeline.tiles.masks import TileBlock, burn_block

    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), min_valid_share=0.0))
    tiles = tiles_of(tif, z)
    x0, y0 = min(t.x for t in tiles), min(t.y for t in tiles)
    nx, ny = max(t.x for t in tiles) - x0 + 1, max(t.y for t in tiles) - y0 + 1
    img = np.zeros((ny * 256, nx * 256))
    valid = np.zeros(img.shape, bool)
    for t in tiles:
        data, ok = read_tile(plan, t)
        if plan.scale is not None:
            data = to_8bit(data, plan.scale, ok)
        r, c = (t.y - y0) * 256, (t.x - x0) * 256
        img[r:r + 256, c:c + 256] = data.astype(float).mean(axis=0)
        valid[r:r + 256, c:c + 256] = ok
    return img, valid, burn_block(prepare_burn(feats, classes), TileBlock(z, x0, y0, nx, ny), 256)


def edge_score(img: np.ndarray, valid: np.ndarray, inside: np.ndarray, s: int) -> tuple[tuple[int, int], float, float]:
    """Mean image gradient on the mask outline shifted by (dy, dx) in [-s, s]: the best shift,
    the score at no shift, and the median score."""
    gy, gx = np.gradient(img)
    grad = np.hypot(gx, gy) * valid
    edge = np.zeros(inside.shape, bool)
    edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    edge[1:, :] |= inside[1:, :] != inside[:-1, :]
    scores = np.array([[grad[np.roll(np.roll(edge, dy, 0), dx, 1)].mean() for dx in range(-s, s + 1)]
                       for dy in range(-s, s + 1)])
    iy, ix = np.unravel_index(int(scores.argmax()), scores.shape)
    return (int(iy) - s, int(ix) - s), float(scores[s, s]), float(np.median(scores))


# ---------------------------------------------------------------------------------------------
# Nodata, alpha, bands, 16-bit, overviews, mosaics


def rgb_raster(tmp: Path, name: str = "rgb.tif", seed: int = 1, n: int = 600, origin: tuple[float, float] = (
        385000.0, 6672000.0), **kw: Any) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 255, (3, n, n), dtype=np.uint8)
    return write_tif(tmp / name, data, "EPSG:32635", from_origin(*origin, 0.5, 0.5), **kw)


def test_nodata_share_skips_and_records(tmp_path: Path) -> None:
    tif = rgb_raster(tmp_path)
    tiles = tiles_of(tif, 18)
    out = tmp_path / "images"
    icfg = ImageryConfig(source="raster", paths=(tif,), min_valid_share=0.5)
    plan = plan_sources(icfg)
    shard = max({shard_of(t, 15) for t in tiles}, key=lambda q: sum(shard_of(t, 15) == q for t in tiles))
    mine = [t for t in tiles if shard_of(t, 15) == shard]
    # a stale file from an earlier run of a now skipped tile must go
    recs = raster_shard(plan, icfg, shard, mine, 256, out, tmp_path / "scratch")
    assert [r.tile for r in recs] == mine
    statuses = {r.status for r in recs}
    assert statuses == {TileStatus.OK, TileStatus.NODATA}
    for r in recs:
        path = out / f"{r.tile.z}/{r.tile.x}/{r.tile.y}.png"
        if r.status == TileStatus.OK:
            assert r.valid_share >= 0.5 and path.stat().st_size == r.size
            assert verify_image(path.read_bytes(), 256).ext == "png"
        else:
            assert r.valid_share < 0.5 and not path.exists()
    skipped = next(r.tile for r in recs if r.status == TileStatus.NODATA)
    stale = out / f"{skipped.z}/{skipped.x}/{skipped.y}.png"
    stale.write_bytes(b"old")
    raster_shard(plan, icfg, shard, mine, 256, out, tmp_path / "scratch")
    assert not stale.exists()
    assert not list((tmp_path / "scratch").iterdir())
    assert TileStatus.MISSING not in statuses


def test_alpha_band_is_honoured(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    data = rng.integers(1, 255, (4, 400, 400), dtype=np.uint8)
    data[3] = 255
    data[3, :, :200] = 0  # west half transparent
    transform = from_origin(385000, 6672000, 0.5, 0.5)
    tif = write_tif(tmp_path / "rgba.tif", data, "EPSG:32635", transform, photometric="RGB", alpha="YES")
    with rasterio.open(tif) as src:
        assert src.colorinterp[3].name == "alpha"
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,)))
    assert plan.bands == (1, 2, 3) and plan.sources[0].alpha == 4
    edge_e = 385000 + 200 * 0.5
    west = east = 0
    for t in tiles_of(tif, 19):
        w, s_, e, n = transform_bounds("EPSG:3857", "EPSG:32635", *tile_bounds(t))
        arr, valid = read_tile(plan, t)
        assert not arr[:, ~valid].any()  # invalid pixels are 0
        if e < edge_e - 1:
            assert not valid.any()
            west += 1
        elif w > edge_e + 1 and e < 385200 - 1 and s_ > 6671800 + 1 and n < 6672000 - 1:
            assert valid.all()
            east += 1
    assert west and east


def test_band_selection_and_order(tmp_path: Path) -> None:
    data = np.stack([np.full((300, 300), v, np.uint8) for v in (10, 20, 30, 40)])  # 4 bands, e.g. NIR last
    tif = write_tif(tmp_path / "four.tif", data, "EPSG:32635", from_origin(385000, 6672000, 0.5, 0.5),
                    photometric="MINISBLACK")
    for bands, expect in (((4, 1, 2), [40, 10, 20]), ((4,), [40]), (None, [10, 20, 30])):
        plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), bands=bands, min_valid_share=0.0))
        t = tiles_of(tif, 19)[4]
        arr, valid = read_tile(plan, t)
        assert valid.any()
        assert [int(np.median(b[valid])) for b in arr] == expect
    with pytest.raises(ConfigError, match="bands"):
        plan_sources(ImageryConfig(source="raster", paths=(tif,), bands=(5,)))
    with pytest.raises(ConfigError, match=r"1 or 3 bands"):
        plan_sources(ImageryConfig(source="raster", paths=(tif,), bands=(1, 2)))


def test_16bit_percentiles_rescale_and_keep(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    data = rng.integers(100, 4000, (1, 500, 500)).astype(np.uint16)
    data[0, :50] = 0  # nodata strip
    tif = write_tif(tmp_path / "pan.tif", data, "EPSG:32635", from_origin(385000, 6672000, 0.5, 0.5), nodata=0)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), percentiles=(2.0, 98.0)))
    (lo, hi), = plan.scale or ()
    valid_vals = data[0, 50:].astype(float)
    assert abs(lo - np.percentile(valid_vals, 2)) < 60 and abs(hi - np.percentile(valid_vals, 98)) < 60
    fixed = plan_sources(ImageryConfig(source="raster", paths=(tif,), rescale=(100.0, 4000.0)))
    assert fixed.scale == ((100.0, 4000.0),)
    arr = np.array([[[100, 2050, 4000, 9000]]], dtype=np.uint16)
    assert to_8bit(arr, fixed.scale, np.ones((1, 4), bool)).tolist() == [[[0, 128, 255, 255]]]
    # kept as 16-bit, georeferenced TIFF tiles
    icfg = ImageryConfig(source="raster", paths=(tif,), format="tif", keep_16bit=True, min_valid_share=0.9)
    plan16 = plan_sources(icfg)
    assert plan16.scale is None and plan16.dtype == "uint16"
    t = tiles_of(tif, 19)
    shard = shard_of(t[len(t) // 2], 16)
    got = [(tt, b) for tt, b, _ in iter_tiles(plan16, icfg, shard, [x for x in t if shard_of(x, 16) == shard], 256)
           if b is not None]
    assert got
    tile, blob = got[0]
    with rasterio.MemoryFile(blob) as mem, mem.open() as ds:
        assert ds.dtypes[0] == "uint16" and ds.crs.to_epsg() == 3857
        assert ds.bounds == pytest.approx(tile_bounds(tile), abs=1e-6)
        assert ds.read(1).max() > 255


def test_overviews_are_used_when_coarser(tmp_path: Path) -> None:
    # the main image is 100 everywhere; an external overview (2x coarser) says 200, so reading it
    # shows whether the tiler took the overview
    n = 1024
    t = from_origin(385000, 6672000, 0.25, 0.25)
    tif = write_tif(tmp_path / "ov.tif", np.full((1, n, n), 100, np.uint8), "EPSG:32635", t)
    write_tif(tmp_path / "ov.tif.ovr", np.full((1, n // 2, n // 2), 200, np.uint8), "EPSG:32635",
              from_origin(385000, 6672000, 0.5, 0.5))
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,), min_valid_share=0.0))
    assert plan.sources[0].overviews == (2,)
    for z, expect in ((20, 100), (18, 100), (17, 200)):  # at 60N: z18 0.30 m/px, z17 0.60 m/px
        tiles = tiles_of(tif, z)
        arr, valid = read_tile(plan, tiles[len(tiles) // 2])
        assert int(np.median(arr[0][valid])) == expect
    assert overview_level(0.5, (2, 4, 8), 1.1) == 0
    assert overview_level(0.5, (2, 4, 8), 2.0) == 1
    assert overview_level(0.5, (2, 4, 8), 0.9) == -1


def test_mosaic_order_first_on_top(tmp_path: Path) -> None:
    a = write_tif(tmp_path / "a.tif", np.full((3, 400, 400), 50, np.uint8), "EPSG:32635",
                  from_origin(385000, 6672000, 0.5, 0.5))
    b = write_tif(tmp_path / "b.tif", np.full((3, 400, 400), 150, np.uint8), "EPSG:32635",
                  from_origin(385100, 6671900, 0.5, 0.5))  # overlaps a's south-east quarter
    for order, top in (((a, b), 50), ((b, a), 150)):
        plan = plan_sources(ImageryConfig(source="raster", paths=order, min_valid_share=0.0))
        # a only, the middle of the overlap (the first raster wins), b only
        for (e, n), expect in (((385050.0, 6671950.0), 50), ((385150.0, 6671850.0), top),
                               ((385250.0, 6671750.0), 150)):
            p = lonlat_point(e, n)
            t = next(x for x in tiles_of(a, 19) + tiles_of(b, 19) if contains(x, p))
            arr, valid = read_tile(plan, t)
            px = pixel_of(t, p)
            assert valid[px] and arr[0][px] == expect


def lonlat_point(e: float, n: float) -> tuple[float, float]:
    from rasterio.warp import transform

    xs, ys = transform("EPSG:32635", "EPSG:3857", [e], [n])
    return xs[0], ys[0]


def contains(t: Tile, p: tuple[float, float]) -> bool:
    left, bottom, right, top = tile_bounds(t)
    return left <= p[0] < right and bottom < p[1] <= top


def pixel_of(t: Tile, p: tuple[float, float]) -> tuple[int, int]:
    left, _, _, top = tile_bounds(t)
    res = tile_extent_m(t.z) / 256
    return int((top - p[1]) / res), int((p[0] - left) / res)


def test_tiles_do_not_depend_on_the_other_tiles(tmp_path: Path) -> None:
    tif = rgb_raster(tmp_path, n=800)
    icfg = ImageryConfig(source="raster", paths=(tif,), min_valid_share=0.0)
    plan = plan_sources(icfg)
    tiles = tiles_of(tif, 19)
    shard = shard_of(tiles[0], 16)
    mine = [t for t in tiles if shard_of(t, 16) == shard]
    alone = {t: b for t, b, _ in iter_tiles(plan, icfg, shard, mine[-1:], 256)}
    together = {t: b for t, b, _ in iter_tiles(plan, icfg, shard, mine, 256)}
    assert alone[mine[-1]] == together[mine[-1]]
    again = {t: b for t, b, _ in iter_tiles(plan, icfg, shard, mine, 256)}
    assert again == together


def test_formats_decode_at_size(tmp_path: Path) -> None:
    tif = rgb_raster(tmp_path, n=400)
    for fmt, pil in (("png", "PNG"), ("jpg", "JPEG"), ("tif", "TIFF")):
        icfg = ImageryConfig(source="raster", paths=(tif,), format=fmt, min_valid_share=0.0)
        plan = plan_sources(icfg)
        t = tiles_of(tif, 18)[0]
        (_, blob, _), = iter_tiles(plan, icfg, shard_of(t, 16), [t], 512)
        assert blob is not None
        with Image.open(io.BytesIO(blob)) as im:
            assert im.format == pil and im.size == (512, 512)


def test_plan_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"nope\.tif"):
        plan_sources(ImageryConfig(source="raster", paths=(tmp_path / "nope.tif",)))
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(InputDataError, match=r"bad\.tif"):
        plan_sources(ImageryConfig(source="raster", paths=(bad,)))
    tif = rgb_raster(tmp_path)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,)))
    assert RasterPlan.from_json(plan.to_json()) == plan
