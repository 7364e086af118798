"""Local GeoTIFF/COG orthophotos (any CRS) -> slippy-map tiles aligned with the label masks.

One GDAL warped VRT per shard and source: its grid is the shard's exact EPSG:3857 tile grid
(``pipeline.tiles.tile_transform`` of the shard's top-left tile, ``size`` pixels per tile), and
its block size is one tile, so each tile is warped once, on its own, into exactly the pixels
that the masks use (pixel ``(row, col)`` covers its share of ``tile_bounds``; see
:mod:`pipeline.tiles`). A tile therefore does not depend on which other tiles are made, and the
cost is linear in the number of tiles. The source is read from the overview whose resolution
is the coarsest still at least as fine as the tile's, when the zoom is coarser than the source.

Validity comes from the warper's alpha band: the source's alpha band, or one GDAL derives from
the source nodata value (``[imagery] nodata`` overrides it) and the source's extent. A tile with
less than ``min_valid_share`` valid pixels is skipped (status ``nodata-skipped``); invalid
pixels of kept tiles are 0. Several rasters mosaic in the configured order, the first on top.

Non-8-bit sources (e.g. uint16) are rescaled to 8 bits with the configured ``rescale`` range
or with per-band percentiles computed once over all rasters (:func:`plan_sources`), or kept as
they are in TIFF tiles (``keep_16bit``).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from numpy.typing import NDArray
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from pipeline.config import ImageryConfig
from pipeline.errors import ConfigError, InputDataError, MissingInputError, TileError
from pipeline.imagery.common import NODATA, OK, TILE_EXTS, TileRecord, encode_tile
from pipeline.tile_writer import TileWriter
from pipeline.tiles import Tile, parent, quadkey_to_tile, tile_bounds, tile_transform

#: GDAL settings while tiling: one thread (shards run in parallel instead), a bounded block cache
GDAL_ENV: dict[str, Any] = {"GDAL_NUM_THREADS": "1", "GDAL_CACHEMAX": 128 * 2**20}  # cache in bytes
#: a pixel is valid when the warped alpha is at least this (half covered by valid source pixels)
ALPHA_VALID = 128
#: pixels of the longest side read to compute percentiles
STATS_SIDE = 1024


@dataclass(frozen=True)
class SourceInfo:
    """One raster as planned: path, band count, alpha band (1-based, 0: none), nodata value
    used, pixel size in its own CRS units, overview factors, and bounds in EPSG:3857 metres."""

    path: str
    count: int
    alpha: int
    nodata: float | None
    res: tuple[float, float]
    overviews: tuple[int, ...]
    bounds_3857: tuple[float, float, float, float]


@dataclass(frozen=True)
class RasterPlan:
    """The rasters of a region and how to turn them into tiles; computed once per region
    (:func:`plan_sources`) and stored as JSON in the imagery stats manifest.

    ``bands`` are 1-based source band numbers (the same in every raster); ``dtype`` is the
    source data type; ``scale`` gives per output band the (low, high) source values mapped to
    0..255 (None: no rescaling, the source is 8-bit or 16-bit output was asked for)."""

    sources: tuple[SourceInfo, ...]
    bands: tuple[int, ...]
    dtype: str
    scale: tuple[tuple[float, float], ...] | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RasterPlan:
        srcs = tuple(
            SourceInfo(s["path"], int(s["count"]), int(s["alpha"]), s["nodata"], tuple(s["res"]),
                       tuple(s["overviews"]), tuple(s["bounds_3857"]))
            for s in d["sources"]
        )
        scale = tuple((float(a), float(b)) for a, b in d["scale"]) if d["scale"] is not None else None
        return cls(srcs, tuple(int(b) for b in d["bands"]), str(d["dtype"]), scale)


# ---------------------------------------------------------------------------------------------
# Planning (once per region)


def _open(path: Path, **kw: Any) -> Any:
    if not path.is_file():
        raise MissingInputError(f"{path}: raster named in [imagery] paths not found; fix the path")
    try:
        return rasterio.open(path, **kw)
    except RasterioError as exc:
        raise InputDataError(f"{path}: not a readable raster ({exc}); check the file (gdalinfo)") from exc


def _alpha_band(src: Any) -> int:
    for i, ci in enumerate(src.colorinterp, start=1):
        if ci == ColorInterp.alpha:
            return i
    return 0


def _default_bands(src: Any, alpha: int) -> tuple[int, ...]:
    colour = [i for i in range(1, src.count + 1) if i != alpha]
    return tuple(colour[:3]) if len(colour) >= 3 else tuple(colour[:1])


def _source_info(path: Path, icfg: ImageryConfig) -> tuple[SourceInfo, Any, str]:
    with _open(path) as src:
        if src.crs is None:
            raise InputDataError(f"{path}: raster has no CRS; assign one (gdal_edit.py -a_srs EPSG:...)")
        if not src.transform.is_rectilinear:
            raise InputDataError(f"{path}: rotated rasters are not supported; warp it north-up first")
        if src.transform.is_identity and not src.gcps[0]:
            raise InputDataError(f"{path}: raster has a CRS but no geotransform (pixel coordinates only); "
                                 "georeference it (gdal_translate -a_ullr ... or a world file)")
        if not _has_valid_pixels(src, icfg.nodata):
            raise InputDataError(f"{path}: every pixel is nodata (or transparent); check the file or "
                                 "[imagery] nodata")
        alpha = _alpha_band(src)
        nodata = icfg.nodata if icfg.nodata is not None else src.nodata
        bounds = transform_bounds(src.crs, "EPSG:3857", *src.bounds, densify_pts=21)
        info = SourceInfo(str(path), src.count, alpha, None if nodata is None else float(nodata),
                          (abs(src.res[0]), abs(src.res[1])), tuple(src.overviews(1)),
                          tuple(float(v) for v in bounds))  # type: ignore[arg-type]
        return info, _default_bands(src, alpha), src.dtypes[0]


def _has_valid_pixels(src: Any, nodata: float | None) -> bool:
    """True when a reduced read (at most ``STATS_SIDE`` px a side) of ``src`` has a valid pixel."""
    f = max(1, math.ceil(max(src.width, src.height) / STATS_SIDE))
    shape = (max(1, src.height // f), max(1, src.width // f))
    if nodata is None:
        return bool(src.dataset_mask(out_shape=shape, resampling=Resampling.nearest).any())
    data = src.read(out_shape=(src.count, *shape), resampling=Resampling.nearest)
    return bool((data != nodata).any())


def coverage_share(plan: RasterPlan, tiles: Sequence[Tile]) -> float:
    """Share (0..1) of ``tiles`` whose EPSG:3857 bounds overlap some raster's footprint."""
    if not tiles:
        return 1.0
    b = np.array([tile_bounds(t) for t in tiles])
    hit = np.zeros(len(tiles), dtype=bool)
    for s in plan.sources:
        w, so, e, n = s.bounds_3857
        hit |= (b[:, 0] < e) & (b[:, 2] > w) & (b[:, 1] < n) & (b[:, 3] > so)
    return float(hit.mean())


def check_coverage(plan: RasterPlan, tiles: Sequence[Tile], where: str) -> float:
    """The share of the region's ``tiles`` the rasters cover; raises InputDataError naming
    ``where`` (the config) when they cover none, since the imagery stage would yield nothing."""
    share = coverage_share(plan, tiles)
    if share == 0.0:
        foot = "; ".join(f"{Path(s.path).name}: {tuple(round(v) for v in s.bounds_3857)}" for s in plan.sources)
        raise InputDataError(
            f"{where}: [imagery] paths: no raster overlaps the region's {len(tiles)} tiles (raster footprints in "
            f"EPSG:3857: {foot}) — check region.bbox and the rasters' CRS (gdalinfo)")
    return share


def plan_sources(icfg: ImageryConfig) -> RasterPlan:
    """Open every raster of ``[imagery] paths``, check that they agree (band count, data type),
    choose the bands, and compute the 8-bit rescaling (configured range, or per-band
    percentiles over all rasters). Raises MissingInputError / InputDataError / ConfigError
    naming the file or key."""
    infos: list[SourceInfo] = []
    dtypes: set[str] = set()
    bands: tuple[int, ...] | None = icfg.bands
    for p in icfg.paths:
        info, default, dtype = _source_info(Path(p), icfg)
        bands = bands or default
        for b in bands:
            if b > info.count or b == info.alpha:
                raise ConfigError(f"[imagery] bands = {list(bands)}: {p} has {info.count} band(s)"
                                  + (f", band {info.alpha} is alpha" if info.alpha else "") + "; pick others")
        infos.append(info)
        dtypes.add(dtype)
    if len(dtypes) != 1 or bands is None:
        raise InputDataError(f"[imagery] paths mix data types {sorted(dtypes)}; convert them to one type")
    dtype = dtypes.pop()
    check_nodata(icfg.nodata, dtype)
    if icfg.format in ("png", "jpg") and len(bands) not in (1, 3):
        raise ConfigError(f"[imagery] bands: {len(bands)} band(s) cannot be written as {icfg.format}; "
                          "choose 1 or 3 bands or format = 'tif'")
    scale: tuple[tuple[float, float], ...] | None = None
    if dtype != "uint8" and not icfg.keep_16bit:
        if icfg.rescale is not None:
            scale = tuple(icfg.rescale for _ in bands)
        else:
            scale = band_percentiles(infos, bands, icfg.percentiles)
    return RasterPlan(tuple(infos), tuple(bands), dtype, scale)


def check_nodata(nodata: float | None, dtype: str) -> None:
    """Raise ConfigError unless ``[imagery] nodata`` is a value of the rasters' data type (an
    integer within its range for integer rasters): otherwise no pixel could ever match it."""
    if nodata is None or not np.issubdtype(np.dtype(dtype), np.integer):
        return
    info = np.iinfo(np.dtype(dtype))
    if not (float(nodata).is_integer() and info.min <= nodata <= info.max):
        raise ConfigError(f"[imagery] nodata = {nodata:g} is not a {dtype} value (integers {info.min}..{info.max}), "
                          "the data type of [imagery] paths; fix nodata or remove it to use the rasters' own")


def band_percentiles(sources: Sequence[SourceInfo], bands: Sequence[int],
                     pct: tuple[float, float]) -> tuple[tuple[float, float], ...]:
    """Per band, the ``pct`` percentiles of the valid pixels of all rasters, read at most
    ``STATS_SIDE`` pixels on a side (from overviews when there are some). Deterministic."""
    values: list[list[NDArray[np.float64]]] = [[] for _ in bands]
    for s in sources:
        with _open(Path(s.path)) as src:
            f = max(1, math.ceil(max(src.width, src.height) / STATS_SIDE))
            shape = (max(1, src.height // f), max(1, src.width // f))
            data = src.read(list(bands), out_shape=(len(bands), *shape), resampling=Resampling.nearest)
            if s.alpha:
                valid = src.read(s.alpha, out_shape=shape, resampling=Resampling.nearest) > 0
            elif s.nodata is not None:
                valid = ~np.all(data == s.nodata, axis=0)
            else:
                valid = np.ones(shape, dtype=bool)
        for i in range(len(bands)):
            values[i].append(data[i][valid].astype(np.float64))
    out = []
    for i, b in enumerate(bands):
        v = np.concatenate(values[i]) if values[i] else np.empty(0)
        if v.size == 0:
            raise InputDataError(f"[imagery] paths: band {b} has no valid pixels; check nodata / alpha")
        lo, hi = np.percentile(v, pct)
        out.append((float(lo), float(max(hi, lo + 1))))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Tiling (per shard)


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
        with _open(Path(s.path)) as src:
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
        with _open(Path(s.path), **kw) as src, WarpedVRT(src, **opts) as vrt:
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
                out.skip(t, NODATA, round(share, 4))
                records[t] = TileRecord(t, NODATA, valid_share=round(share, 4))
                continue
            sha = out.write(t, data, ext, round(share, 4))
            records[t] = TileRecord(t, OK, ext, len(data), sha, round(share, 4))
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
