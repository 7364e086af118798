"""Draw ``docs/atlanta_overlay.png``: imagery tiles cut from the Atlanta SpaceNet sample
(UTM 16N, one uint16 band) with the building masks burnt from its labels on top.

Both come out of the pipeline's own code for the same slippy-map tiles: the imagery from
:mod:`pipeline.imagery.raster` (PNG tiles, 16-bit rescaled to 8-bit with 2-98 % percentiles),
the masks from :func:`pipeline.tiles.masks.burn_tile` with the labels reprojected to EPSG:4326. Mask
outlines are drawn in red over a light red fill; thin grey lines are tile borders.

Run: ``python scripts/atlanta_overlay.py [--data ../shared/data/real/atlanta] [--zoom 18]``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config.region import ClassSpec, ImageryConfig, TagFilter  # noqa: E402
from pipeline.core.atomic import atomic_path  # noqa: E402
from pipeline.imagery.raster import iter_tiles  # noqa: E402
from pipeline.imagery.raster_plan import plan_sources  # noqa: E402
from pipeline.tiles.masks import burn_tile, prepare_burn  # noqa: E402
from pipeline.tiles.tilemath import Tile, cover_bbox, shard_of  # noqa: E402

BUILDING = (ClassSpec("building", 1, "area", 1, (TagFilter("building", None),)),)


def overlay(folder: Path, zoom: int, size: int = 256) -> Image.Image:
    """The mosaic of every covered tile with its mask drawn on top, cropped to the imagery."""
    import rasterio
    from rasterio.warp import transform_bounds

    tif = folder / "image.tif"
    with rasterio.open(tif) as src:
        bbox = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    tiles = [Tile(zoom, int(x), int(y)) for x, y in cover_bbox(bbox, zoom)]
    icfg = ImageryConfig(source="raster", paths=(tif,), format="png", min_valid_share=0.0)
    plan = plan_sources(icfg)
    labels = gpd.read_file(folder / "labels" / "buildings.geojson")
    n = len(labels)
    feats = gpd.GeoDataFrame({"class": ["building"] * n, "buffer_m": [0.0] * n}, geometry=labels.geometry.values,
                             crs=labels.crs).to_crs(4326)
    burn = prepare_burn(feats, BUILDING)
    x0, y0 = min(t.x for t in tiles), min(t.y for t in tiles)
    w, h = (max(t.x for t in tiles) - x0 + 1) * size, (max(t.y for t in tiles) - y0 + 1) * size
    rgb = np.zeros((h, w, 3), np.float32)
    valid = np.zeros((h, w), bool)
    inside = np.zeros((h, w), bool)
    shards: dict[str, list[Tile]] = {}
    for t in tiles:
        shards.setdefault(shard_of(t, zoom - 3), []).append(t)
    for shard, members in shards.items():
        for t, blob, _ in iter_tiles(plan, icfg, shard, members, size):
            r, c = (t.y - y0) * size, (t.x - x0) * size
            if blob is not None:
                grey = np.asarray(Image.open(io.BytesIO(blob)).convert("L"), np.float32)
                rgb[r:r + size, c:c + size] = grey[..., None]
                valid[r:r + size, c:c + size] = grey > 0
            inside[r:r + size, c:c + size] = burn_tile(burn, t, size) == 1
    edge = np.zeros_like(inside)
    edge[:, 1:] |= inside[:, 1:] != inside[:, :-1]
    edge[1:, :] |= inside[1:, :] != inside[:-1, :]
    rgb[inside] = 0.75 * rgb[inside] + 0.25 * np.array([255, 60, 60], np.float32)
    rgb[edge] = (255, 0, 0)
    rgb[::size, :] = rgb[:, ::size] = (150, 150, 150)
    rows, cols = np.flatnonzero(valid.any(axis=1)), np.flatnonzero(valid.any(axis=0))
    crop = rgb[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    return Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "real" / "atlanta")
    ap.add_argument("--zoom", type=int, default=18)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "atlanta_overlay.png")
    args = ap.parse_args()
    if not (args.data / "image.tif").is_file():
        print(f"error: {args.data}/image.tif not found; pass --data with the Atlanta sample folder", file=sys.stderr)
        return 2
    img = overlay(args.data, args.zoom)
    with atomic_path(args.out) as tmp:
        img.quantize(colors=96, dither=Image.Dither.NONE).save(tmp, format="PNG", optimize=True)
        tmp.chmod(0o644)
    print(f"wrote {args.out} ({img.width}x{img.height} px, z{args.zoom})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
