"""Any band count, 8 or 16 bits: RGB+NIR and 16-bit pan tiles through the imagery encoder, the
tile reader, the split statistics, the Dataset (augmented), the model's first convolution and
prediction's normalisation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from pipeline.config.region import ImageryConfig
from pipeline.config.train import SplitSpec, TrainSpec
from pipeline.core.manifests import write_manifest
from pipeline.imagery.common import encode_tile, verify_image
from pipeline.imagery.raster import iter_tiles
from pipeline.imagery.raster_plan import plan_sources
from pipeline.model.dataset import TileDataset, build_augment
from pipeline.model.network import ModelSpec, build_model, normalise
from pipeline.model.split import CEILING_QUANTILE, make_split, read_image
from pipeline.tiles.tilemath import Tile, quadkey, shard_of
from pipeline.tiles.writer import write_tile_files
from tests.conftest import SHARED_DATA
from tests.test_imagery_raster import tiles_of
from tests.train_fixtures import SHARD_Z, X0, Y0, Z, tile_arrays

ATLANTA = SHARED_DATA / "real" / "atlanta"


def _rgbn_raster(path: Path, n: int = 400) -> Path:
    """A seeded RGB+NIR uint8 GeoTIFF (UTM 35N, 0.5 m): NIR high where the red band is low."""
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (3, n // 20, n // 20)).astype(np.uint8).repeat(20, 1).repeat(20, 2)
    nir = (255 - rgb[0]).astype(np.uint8)[None]
    with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=4, dtype="uint8", crs="EPSG:32635",
                       transform=from_origin(385000, 6672000, 0.5, 0.5), photometric="MINISBLACK") as dst:
        dst.write(np.concatenate([rgb, nir]))
    return path


def test_rgb_nir_raster_keeps_its_nir_band(tmp_path: Path) -> None:
    tif = _rgbn_raster(tmp_path / "rgbn.tif")
    icfg = ImageryConfig(source="raster", paths=(tif,), bands=(1, 2, 3, 4), format="tif", min_valid_share=0.9)
    plan = plan_sources(icfg)
    tiles = tiles_of(tif, 19)
    shard = shard_of(tiles[len(tiles) // 2], 16)
    got = [(t, b) for t, b, _ in iter_tiles(plan, icfg, shard, [t for t in tiles if shard_of(t, 16) == shard], 256)
           if b is not None]
    assert got
    blob = got[0][1]
    path = tmp_path / "tile.tif"
    path.write_bytes(blob)
    arr = read_image(path, 4)
    assert arr.dtype == np.uint8 and arr.shape == (256, 256, 4)
    # band 4 is NIR, not alpha: the encoder marks it a data band, the reader keeps it
    with Image.open(io.BytesIO(blob)) as im:
        assert im.mode == "RGB"  # Pillow alone would lose the NIR band
    assert np.corrcoef(arr[..., 0].ravel().astype(float), arr[..., 3].ravel().astype(float))[0, 1] < -0.9
    with rasterio.MemoryFile(blob) as mem, mem.open() as ds:
        assert ds.colorinterp[3] != rasterio.enums.ColorInterp.alpha


def test_16bit_colour_tiles_verify_and_read(tmp_path: Path) -> None:
    arr = (np.arange(4 * 32 * 32).reshape(4, 32, 32) * 7 % 4096).astype(np.uint16)
    blob = encode_tile(arr, "tif")
    assert verify_image(blob, 32).ext == "tif"  # Pillow cannot decode it; GDAL does
    (tmp_path / "t.tif").write_bytes(blob)
    np.testing.assert_array_equal(read_image(tmp_path / "t.tif"), np.moveaxis(arr, 0, -1))


def _write_tif_region(data_dir: Path, bands: int, dtype: str, n: int = 4, size: int = 64) -> list[Tile]:
    """``n`` x ``n`` tiles (like tests.train_fixtures.write_region) with TIFF images of
    ``bands`` bands: 16-bit values up to 2040 (11-bit pan), 8-bit otherwise."""
    rng = np.random.default_rng(1)
    tiles = [Tile(Z, X0 + i, Y0 + j) for j in range(n) for i in range(n)]
    shards: dict[str, list[Tile]] = {}
    for t in tiles:
        shards.setdefault(quadkey(Tile(SHARD_Z, t.x >> (Z - SHARD_Z), t.y >> (Z - SHARD_Z))), []).append(t)
    for qk, members in sorted(shards.items()):
        imgs, masks = [], []
        for t in members:
            rgb, mask = tile_arrays(rng, size, int(rng.integers(1, 4)))
            grey = rgb.mean(axis=2)
            chans = [rgb[..., c] for c in range(3)] + [255 - rgb[..., 0]]
            img = np.stack(chans[:bands] if bands > 1 else [grey]).astype(float)
            img = (img * 8).astype(np.uint16) if dtype == "uint16" else img.astype(np.uint8)
            imgs.append((t, encode_tile(img, "tif")))
            buf = io.BytesIO()
            Image.fromarray(mask).save(buf, "PNG")
            masks.append((t, buf.getvalue()))
        for product, items, ext in (("images", imgs, "tif"), ("masks", masks, "png")):
            root = data_dir / product
            files = write_tile_files(root, items, ext, root / "_tmp")
            body = {"root": str(root), "shard": qk, "files": files,
                    **({"status": {str(t): "ok" for t in members}} if product == "images" else {})}
            write_manifest(root / "_shards" / f"{qk}.json", "test", body)
    return tiles


@pytest.mark.parametrize(("bands", "dtype"), [(1, "uint16"), (4, "uint8"), (4, "uint16")])
def test_split_dataset_model_and_prediction_agree(tmp_path: Path, bands: int, dtype: str) -> None:
    _write_tif_region(tmp_path, bands, dtype)
    rows, stats = make_split(tmp_path, SplitSpec(block_zoom=17, val_fraction=0.25, test_fraction=0.25), Z)
    assert stats["bands"] == bands and stats["dtype"] == dtype
    bs = stats["band_stats"]
    assert ("max" in bs) == (dtype == "uint16")
    train = [r for r in rows if r.split == "train"]
    raw = np.concatenate([read_image(tmp_path / r.image).reshape(-1, bands) for r in train]).astype(float)
    vmax = bs.get("max", 255)
    if dtype == "uint16":  # the 99th percentile of the training pixels; brighter ones count as it
        assert vmax == int(np.quantile(raw, CEILING_QUANTILE, method="inverted_cdf"))
        assert (raw > vmax).mean() <= 1 - CEILING_QUANTILE
    np.testing.assert_allclose(bs["mean"], np.minimum(raw, vmax).mean(0) / vmax, rtol=1e-5)
    np.testing.assert_allclose(bs["std"], (np.minimum(raw, vmax) / vmax).std(0), rtol=1e-4)
    ds = TileDataset(tmp_path, train, bs, augment=build_augment(TrainSpec(), bands))
    x = torch.stack([ds[(i, 11 + i)]["image"] for i in range(len(ds))])
    assert x.shape[1] == bands and x.dtype == torch.float32
    assert abs(float(x.mean())) < 2.0 and 0.5 < float(x.std()) < 3.0  # augmented (colour jitter), normalised
    # prediction normalises the raw (uint8/uint16) tile tensor exactly as the dataset does
    plain = TileDataset(tmp_path, train, bs)
    tile = torch.from_numpy(np.ascontiguousarray(read_image(tmp_path / train[0].image).transpose(2, 0, 1)))
    torch.testing.assert_close(normalise(tile, bs), plain[0]["image"], rtol=1e-5, atol=1e-5)
    model = build_model(ModelSpec(encoder="resnet18", in_channels=bands, classes=2)).eval()
    with torch.no_grad():
        assert model(x[:2]).shape == (2, 2, 64, 64)


@pytest.mark.skipif(not (ATLANTA / "image.tif").is_file(), reason="real data ../shared/data absent")
def test_atlanta_pan_stays_16bit(tmp_path: Path) -> None:
    icfg = ImageryConfig(source="raster", paths=(ATLANTA / "image.tif",), format="tif", keep_16bit=True,
                         min_valid_share=0.5)
    plan = plan_sources(icfg)
    assert plan.dtype == "uint16" and len(plan.bands) == 1
    tiles = tiles_of(ATLANTA / "image.tif", 18)
    shard = shard_of(tiles[len(tiles) // 2], 16)
    got = [b for _, b, _ in iter_tiles(plan, icfg, shard, [t for t in tiles if shard_of(t, 16) == shard], 256)
           if b is not None]
    assert got
    (tmp_path / "a.tif").write_bytes(got[0])
    arr = read_image(tmp_path / "a.tif", 1)
    assert arr.dtype == np.uint16 and arr.max() > 255  # kept, not rescaled to 8 bits
