"""Write the rendered town as a Cloud-Optimised GeoTIFF (RGB uint8, JPEG, tiled, overviews)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.windows import Window

from pipeline.core.atomic import atomic_path
from pipeline.synthetic.render import Scene

WINDOW_PX = 2048  # rendered at a time (a multiple of the 512-pixel block size)


def write_orthophoto(scene: Scene, path: str | Path, quality: int = 90, window_px: int = WINDOW_PX) -> None:
    """Render ``scene`` window by window into a tiled GeoTIFF beside ``path``, then copy it
    atomically to ``path`` as a COG (JPEG ``quality``, 512-pixel blocks, averaged overviews).
    No timestamps are written, so the same scene gives the same bytes."""
    town = scene.town
    n = town.size_px
    path = Path(path)
    with atomic_path(path) as tmp:
        src = tmp.with_name(tmp.name + ".src.tif")
        try:
            profile = dict(
                driver="GTiff", width=n, height=n, count=3, dtype="uint8", crs=CRS.from_epsg(town.epsg),
                transform=town.utm_transform, tiled=True, blockxsize=512, blockysize=512,
                photometric="RGB", interleave="pixel",
            )
            with rasterio.open(src, "w", **profile) as dst:
                dst.update_tags(source="osmsat synthetic town", seed=str(town.seed))
                for r0 in range(0, n, window_px):
                    for c0 in range(0, n, window_px):
                        h, w = min(window_px, n - r0), min(window_px, n - c0)
                        dst.write(scene.render(r0, c0, h, w).transpose(2, 0, 1), window=Window(c0, r0, w, h))
            rasterio.shutil.copy(
                src, tmp, driver="COG", compress="JPEG", quality=str(quality), blocksize="512",
                overview_resampling="average", bigtiff="IF_SAFER",
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(src)
