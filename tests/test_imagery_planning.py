"""Imagery that would yield nothing is an error at planning time (once per region), not a run
that exits 0 with no tiles: a raster with a CRS but no geotransform, one that is all nodata,
rasters that miss the region; partial coverage is a warning with the share."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.warp import transform_bounds

from pipeline.config.region import ImageryConfig
from pipeline.core.errors import InputDataError
from pipeline.imagery.raster_plan import check_coverage, coverage_share, plan_sources
from pipeline.tiles.tilemath import Tile, cover_bbox
from tests.tileserver import write_test_geotiff


def _tiles_around(tif: Path, zoom: int = 18, dx: float = 0.0) -> list[Tile]:
    with rasterio.open(tif) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    return [Tile(zoom, int(x), int(y)) for x, y in cover_bbox((w + dx, s, e + dx, n), zoom)]


def test_crs_without_geotransform_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "nogeo.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
                           crs="EPSG:32635") as dst:
            dst.write(np.full((3, 64, 64), 100, np.uint8))
        with pytest.raises(InputDataError, match=r"nogeo\.tif: raster has a CRS but no geotransform"):
            plan_sources(ImageryConfig(source="raster", paths=(path,)))


@pytest.mark.parametrize("how", ["nodata", "config-nodata"])
def test_all_nodata_is_an_error(tmp_path: Path, how: str) -> None:
    path = tmp_path / "empty.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8", crs="EPSG:32635",
                       transform=rasterio.transform.from_origin(385000, 6672000, 0.3, 0.3),
                       nodata=0 if how == "nodata" else None) as dst:
        dst.write(np.full((3, 300, 300), 0 if how == "nodata" else 7, np.uint8))
    icfg = ImageryConfig(source="raster", paths=(path,), nodata=7.0 if how == "config-nodata" else None)
    with pytest.raises(InputDataError, match=r"empty\.tif: every pixel is nodata"):
        plan_sources(icfg)


def test_coverage_outside_and_partial(tmp_path: Path) -> None:
    tif = write_test_geotiff(tmp_path / "o.tif", size_px=400)
    plan = plan_sources(ImageryConfig(source="raster", paths=(tif,)))
    inside = _tiles_around(tif)
    assert coverage_share(plan, inside) == 1.0
    far = _tiles_around(tif, dx=0.5)  # half a degree east: nowhere near
    with pytest.raises(InputDataError, match=r"region\.toml: \[imagery\] paths: no raster overlaps the region's "
                                             r"\d+ tiles .*o\.tif.*check region\.bbox"):
        check_coverage(plan, far, "region.toml")
    share = check_coverage(plan, inside + far, "region.toml")
    assert share == pytest.approx(len(inside) / (len(inside) + len(far)))
