"""Planning of a raster imagery source, once per region: the rasters of ``[imagery] paths`` opened and
checked (CRS, geotransform, valid pixels, bands, one data type, nodata within it), their footprints
in EPSG:3857 (:func:`check_coverage`), and the 8-bit rescaling of non-8-bit sources (the configured
``rescale`` range or per-band percentiles over all rasters, :func:`band_percentiles`).

The result, a :class:`RasterPlan`, is stored as JSON in the imagery stats manifest; the shards are
tiled from it by :mod:`pipeline.imagery.raster`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import ColorInterp, Resampling
from rasterio.errors import RasterioError
from rasterio.warp import transform_bounds

from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.tiles.tilemath import Tile, tile_bounds

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig

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


def open_raster(path: Path, **kw: Any) -> Any:
    """``rasterio.open(path, **kw)``; MissingInputError / InputDataError naming ``path``."""
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
    with open_raster(path) as src:
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
        with open_raster(Path(s.path)) as src:
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


def raster_band_names(icfg: ImageryConfig) -> tuple[str, ...]:
    """The names the first raster of ``icfg`` gives the bands its tiles take (``[imagery] bands``,
    else the default colour bands): its band descriptions when every one is set (``nir``), else
    its colour interpretation when that names each (``red``, ``green``, ``blue``, ``gray``); ()
    when it names them not, or not apart. For the model card (:mod:`pipeline.model.export`)."""
    if not icfg.paths:
        return ()
    with open_raster(icfg.paths[0]) as src:
        bands = icfg.bands or _default_bands(src, _alpha_band(src))
        if any(b > src.count for b in bands):
            return ()
        names = [str(src.descriptions[b - 1] or "").strip() for b in bands]
        if not all(names):
            names = [src.colorinterp[b - 1].name for b in bands]
            if any(n in ("undefined", "alpha", "palette") for n in names):
                return ()
    return tuple(names) if len(set(names)) == len(names) else ()
