"""Local GeoTIFF/COG orthophotos (any CRS) -> slippy-map tiles aligned with the label masks.

One GDAL warped VRT per shard and source: its grid is the shard's exact EPSG:3857 tile grid
(``pipeline.tiles.tilemath.tile_transform`` of the shard's top-left tile, ``size`` pixels per tile), and
its block size is one tile, so each tile is warped once, on its own, into exactly the pixels
that the masks use (pixel ``(row, col)`` covers its share of ``tile_bounds``; see
:mod:`pipeline.tiles.tilemath`). A tile therefore does not depend on which other tiles are made, and the
cost is linear in the number of tiles. The source is read from the overview whose resolution
is the coarsest still at least as fine as the tile's, when the zoom is coarser than the source.

Validity comes from the warper's alpha band: the source's alpha band, or one GDAL derives from
the source nodata value (``[imagery] nodata`` overrides it) and the source's extent. A tile with
less than ``min_valid_share`` valid pixels is skipped (status ``nodata-skipped``); invalid
pixels of kept tiles are 0 in every band, and only they (a valid black pixel is written as 1):
training and evaluation ignore them, prediction writes 0 there. Several rasters mosaic in the
configured order, the first on top.

Non-8-bit sources (e.g. uint16) are rescaled to 8 bits with the configured ``rescale`` range
or with per-band percentiles computed once over all rasters, or kept as they are in TIFF tiles
(``keep_16bit``). The rasters are checked and planned once per region in
:mod:`pipeline.imagery.raster_plan` (:func:`~pipeline.imagery.raster_plan.plan_sources`).
"""

from __future__ import annotations

import contextlib
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.core.errors import InputDataError, TileError
from pipeline.imagery.common import TILE_EXTS, TileRecord, encode_tile
from pipeline.imagery.nodata import reserve_zero
from pipeline.imagery.raster_plan import RasterPlan, SourceInfo, open_raster
from pipeline.tiles.tilemath import Tile, parent, quadkey_to_tile, tile_bounds, tile_transform
from pipeline.tiles.writer import TileStatus, TileWriter

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig

#: GDAL settings while tiling: one thread (shards run in parallel instead), a bounded block cache
GDAL_ENV: dict[str, Any] = {"GDAL_NUM_THREADS": "1", "GDAL_CACHEMAX": 128 * 2**20}  # cache in bytes
#: a pixel is valid when the warped alpha is at least this (half covered by valid source pixels)
ALPHA_VALID = 128


def overview_level(src_res: float, overviews: Sequence[int], target_res: float) -> int:
    """Index (GDAL ``OVERVIEW_LEVEL``) of the coarsest overview whose pixels are still no larger
    than ``target_res``, or -1 for full resolution; both resolutions in source CRS units."""
    level = -1
    for i, f in enumerate(overviews):
        if src_res * f <= target_res * (1 + 1e-9):
            level = i
    return level


def _tiled_vrt_xml(vrt: WarpedVRT, source_path: str, block: int) -> str:
    """The VRT XML of ``vrt`` with blocks of ``block`` x ``block`` pixels (one tile) and an
    absolute source path (GDAL's default blocks are 512 x 128 and pick a slower, wider
    resampling kernel when the source is rotated against the grid)."""
    with tempfile.TemporaryDirectory(prefix="osmsat-vrt-") as tmp:
        out = Path(tmp) / "warped.vrt"
        rasterio.shutil.copy(vrt, out, driver="VRT")
        root = ET.fromstring(out.read_text())
    for tag in ("BlockXSize", "BlockYSize"):
        node = root.find(tag)
        if node is None:
            node = ET.SubElement(root, tag)
        node.text = str(block)
    src = root.find("GDALWarpOptions/SourceDataset")
    if src is None:
        raise InputDataError(f"{source_path}: GDAL did not produce a warped VRT for this raster")
    src.text = str(Path(source_path).resolve())
    src.set("relativeToVRT", "0")
    return ET.tostring(root, encoding="unicode")


class ShardTiler:
    """Reads tiles of one shard from all rasters of a plan (a context manager).

    ``read(tile)`` returns ``(data, valid)``: data ``(bands, size, size)`` in the source type
    (invalid pixels 0) and a boolean validity mask; the rasters are mosaicked, first on top.
    """

    def __init__(self, plan: RasterPlan, shard: str, zoom: int, size: int, resampling: str = "bilinear"):
        self.plan, self.zoom, self.size = plan, zoom, size
        self.origin = quadkey_to_tile(shard)
        if zoom < self.origin.z:
            raise TileError(f"shard {shard!r} is deeper than zoom {zoom}")
        self.n = 1 << (zoom - self.origin.z)
        self.resampling = Resampling[resampling]
        self._stack = contextlib.ExitStack()
        self._vrts: list[tuple[SourceInfo, Any, list[int]]] = []

    def __enter__(self) -> ShardTiler:
        self._stack.enter_context(rasterio.Env(**GDAL_ENV))
        left, bottom, right, top = tile_bounds(self.origin)
        for s in self.plan.sources:
            sb = s.bounds_3857
            if sb[0] >= right or sb[2] <= left or sb[1] >= top or sb[3] <= bottom:
                continue
            self._vrts.append(self._open_vrt(s))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open_vrt(self, s: SourceInfo) -> tuple[SourceInfo, Any, list[int]]:
        first = Tile(self.zoom, self.origin.x * self.n, self.origin.y * self.n)
        transform = tile_transform(first, self.size)
        width = self.n * self.size
        with open_raster(Path(s.path)) as src:
            # tile pixel size expressed in the source CRS, from the shard's footprint
            sb = transform_bounds("EPSG:3857", src.crs, *tile_bounds(self.origin), densify_pts=21)
            target = min((sb[2] - sb[0]) / width, (sb[3] - sb[1]) / width)
            level = overview_level(min(s.res), s.overviews, target)
        kw: dict[str, Any] = {"overview_level": level} if level >= 0 else {}
        opts: dict[str, Any] = dict(crs="EPSG:3857", transform=transform, width=width, height=width,
                                    resampling=self.resampling, warp_extras={"NUM_THREADS": 1})
        if s.nodata is not None and not s.alpha:
            opts.update(src_nodata=s.nodata)
        if not s.alpha:
            opts.update(add_alpha=True)
        with open_raster(Path(s.path), **kw) as src, WarpedVRT(src, **opts) as vrt:
            xml = _tiled_vrt_xml(vrt, s.path, self.size)
        tiled = self._stack.enter_context(rasterio.open(xml))  # the VRT opens the raster (or overview) itself
        alpha = s.alpha if s.alpha else tiled.count
        return s, tiled, [*self.plan.bands, alpha]

    def read(self, tile: Tile) -> tuple[NDArray[Any], NDArray[np.bool_]]:
        """Mosaic of every raster for ``tile`` (which must lie in this shard)."""
        if tile.z != self.zoom or parent(tile, self.origin.z) != self.origin:
            raise TileError(f"tile {tile} is not in shard {self.origin} at zoom {self.zoom}")
        size = self.size
        out = np.zeros((len(self.plan.bands), size, size), dtype=self.plan.dtype)
        valid = np.zeros((size, size), dtype=bool)
        left, bottom, right, top = tile_bounds(tile)
        win = Window((tile.x - self.origin.x * self.n) * size, (tile.y - self.origin.y * self.n) * size, size, size)
        for s, vrt, idx in self._vrts:
            sb = s.bounds_3857
            if sb[0] >= right or sb[2] <= left or sb[1] >= top or sb[3] <= bottom:
                continue
            try:
                arr = vrt.read(idx, window=win)
            except RasterioError as exc:
                raise InputDataError(f"{s.path}: read failed for tile {tile} ({exc}); the file may be "
                                     "truncated") from exc
            take = arr[-1] >= ALPHA_VALID
            if not valid.any() and take.all():  # the usual case: one raster covers the whole tile
                return arr[:-1], take
            take &= ~valid
            np.copyto(out, arr[:-1], where=take[None])
            valid |= take
            if valid.all():
                break
        return out, valid


def to_8bit(data: NDArray[Any], scale: Sequence[tuple[float, float]], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Map each band's (low, high) to 0..255 (clipped, rounded); invalid pixels become 0."""
    out = np.empty(data.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(scale):
        v = (data[i].astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo)) + np.float32(0.5)
        out[i] = np.clip(v, 0, 255).astype(np.uint8)
    out[:, ~valid] = 0
    return out


def render_tile(tiler: ShardTiler, tile: Tile, icfg: ImageryConfig) -> tuple[bytes | None, float]:
    """Encoded bytes of ``tile`` (None when its valid share is below ``min_valid_share``) and
    its share of valid pixels."""
    data, valid = tiler.read(tile)
    share = float(valid.mean())
    if share < icfg.min_valid_share or share == 0.0:
        return None, share
    if tiler.plan.scale is not None:
        data = to_8bit(data, tiler.plan.scale, valid)
    data = reserve_zero(data, valid)
    return encode_tile(data, icfg.format, tile, jpeg_quality=icfg.jpeg_quality, png_level=icfg.png_level), share


def raster_shard(plan: RasterPlan, icfg: ImageryConfig, shard: str, tiles: Sequence[Tile], size: int,
                 out_root: Path, scratch: Path,
                 progress: Callable[[int, int], None] | None = None) -> list[TileRecord]:
    """Make the tiles of one shard from the rasters into ``out_root/z/x/y.<format>`` (temporary
    files in ``scratch``); see :func:`raster_tiles`."""
    scratch.mkdir(parents=True, exist_ok=True)
    return raster_tiles(plan, icfg, shard, tiles, size, TileWriter(out_root, scratch, TILE_EXTS), progress)


def raster_tiles(plan: RasterPlan, icfg: ImageryConfig, shard: str, tiles: Sequence[Tile], size: int,
                 out: TileWriter, progress: Callable[[int, int], None] | None = None) -> list[TileRecord]:
    """Make the tiles of one shard from the rasters through the tile writer ``out`` (which also
    deletes files of tiles now skipped) and return one record per tile (in ``tiles`` order)."""
    if not tiles:
        return []
    ext = icfg.format
    records: dict[Tile, TileRecord] = {}
    order = sorted(tiles, key=lambda t: (t.y, t.x))  # row by row: source blocks are reused
    with ShardTiler(plan, shard, order[0].z, size, icfg.resampling) as tiler:
        for i, t in enumerate(order):
            if progress is not None and i % 64 == 0:
                progress(i, len(order))
            data, share = render_tile(tiler, t, icfg)
            if data is None:
                out.skip(t, TileStatus.NODATA, round(share, 4))
                records[t] = TileRecord(t, TileStatus.NODATA, valid_share=round(share, 4))
                continue
            sha = out.write(t, data, ext, round(share, 4))
            records[t] = TileRecord(t, TileStatus.OK, ext, len(data), sha, round(share, 4))
    if progress is not None:
        progress(len(order), len(order))
    return [records[t] for t in tiles]


def iter_tiles(plan: RasterPlan, icfg: ImageryConfig, shard: str, tiles: Sequence[Tile],
               size: int) -> Iterator[tuple[Tile, bytes | None, float]]:
    """Yield ``(tile, encoded bytes or None, valid share)`` for tiles of one shard (no files)."""
    if not tiles:
        return
    with ShardTiler(plan, shard, tiles[0].z, size, icfg.resampling) as tiler:
        for t in tiles:
            data, share = render_tile(tiler, t, icfg)
            yield t, data, share
