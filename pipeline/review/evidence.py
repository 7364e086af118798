"""Evidence inside polygons, read from the prediction and imagery tiles of a region.

For any polygons (OSM buildings the model did not see, candidate features, ...) this measures
what the model predicted inside each one (:func:`inside_evidence`) and whether the imagery there
could show anything at all, so that a reviewer can tell "the building is gone" (the model is
confident there is nothing, on good imagery) from "the model missed it" (a weak probability, a
cloud, no imagery); :func:`resolvable_m2` gives the smallest area the model can resolve.

Conventions: polygons come in EPSG:4326 (lon/lat); tiles are slippy-map tiles in EPSG:3857
(:mod:`pipeline.tiles.tilemath`), each raster spanning exactly its tile's bounds whatever its pixel size,
so prediction tiles and image tiles of different sizes are both read on their own grid. A pixel
is inside a polygon when its centre is (GDAL's rule); a polygon that holds no pixel centre of a
tile takes the pixels it touches there instead. Shares are of the polygon's area (the share of
its area in each tile, exact, times the share of its pixels there). Probabilities are the
prediction tile's uint8 bands / 255 (:mod:`pipeline.inference.probs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from numpy.typing import NDArray
from PIL import Image
from rasterio.features import rasterize

from pipeline.core.errors import InputDataError, ManifestError
from pipeline.core.outputs import file_identity
from pipeline.inference.probs import decode_prob_tile
from pipeline.tiles.geo import HALF_WORLD_M, to_mercator
from pipeline.tiles.index import WRITTEN, read_tile_index
from pipeline.tiles.tilemath import Tile, tile_bounds, tile_extent_m
from pipeline.tiles.writer import tile_path

#: probability (0-1) at or above which a pixel counts as confident
CONFIDENT_P = 0.5
#: image pixels whose mean RGB is below this (0-255) are too dark to show anything
DARK_BELOW = 20
#: image pixels whose every channel is above this (0-255) are saturated or cloud
BRIGHT_ABOVE = 235
#: tile file extensions tried, in order, in a tile folder that has no tile index
TILE_EXTS = ("png", "jpg", "jpeg", "tif", "tiff", "webp")
COLUMNS = ("prob_inside", "prob_max_inside", "confident_share", "pred_share", "usable_share")

TileKey = tuple[int, int]


def resolvable_m2(zoom: int, lat: float, scale: float = 1.0, min_px: int = 16, tile_size: int = 256) -> float:
    """The smallest ground area (m²) a model can resolve: ``min_px`` pixels at its ground
    resolution, for tiles of ``tile_size`` px at ``zoom`` and latitude ``lat`` (degrees), with
    the model trained on tiles resampled by ``scale`` (``[train] scale``: 0.5 = half resolution,
    so each model pixel covers 4 image pixels)."""
    if scale <= 0 or min_px < 0 or tile_size <= 0:
        raise ValueError(f"need scale > 0, min_px >= 0, tile_size > 0; got {scale}, {min_px}, {tile_size}")
    res_m = tile_extent_m(zoom) / tile_size * math.cos(math.radians(lat)) / scale
    return float(min_px * res_m**2)


#: a tile lookup: (x, y) -> its file, or None
TileLookup = Callable[[TileKey], Path | None]


def tile_files(product_dir: Path, zoom: int) -> TileLookup:
    """A lookup ``(x, y) -> file`` of the written tiles at ``zoom`` of a tile product folder
    (``predictions``, ``images``): from its tile index (:func:`pipeline.tiles.index.read_tile_index`) when
    it has one, else the tile tree's ``z/x/y.<ext>`` (a folder of tiles written by hand)."""
    product_dir = Path(product_dir)
    try:
        index = read_tile_index(product_dir)
    except ManifestError:
        def probe(key: TileKey) -> Path | None:
            for ext in TILE_EXTS:
                p = tile_path(product_dir, Tile(zoom, *key), ext)
                if p.is_file():
                    return p
            return None

        return probe
    index = index[(index["z"] == zoom) & (index["status"] == WRITTEN) & (index["path"] != "")]
    files = {(int(x), int(y)): product_dir / str(p)
             for x, y, p in zip(index["x"], index["y"], index["path"], strict=True)}
    return files.get


#: usable-pixel masks already computed, bit-packed, by (path, size, mtime): the comparison asks
#: for the same image tiles several times (the region, then each gap-simulation pool); kept up
#: to :data:`USABLE_CACHE_BYTES` (8 KiB a 256-px tile: 4,400 tiles in 36 MiB), then not added to
_USABLE: dict[tuple[str, int, int], tuple[NDArray[np.uint8], tuple[int, int]]] = {}
_USABLE_HELD = [0]  # bytes in _USABLE
USABLE_CACHE_BYTES = 64 << 20


def usable_pixels(path: Path) -> NDArray[np.bool_]:
    """(H, W) True where an image tile shows something: not nodata (alpha 0 where the tile has
    alpha, else all-zero RGB), not dark (mean RGB < ``DARK_BELOW``), not saturated or cloud
    (every channel > ``BRIGHT_ABOVE``); 8-bit values. Remembered per file (see :data:`_USABLE`)."""
    try:
        key = file_identity(path)
        if key in _USABLE:
            bits, shape = _USABLE[key]
            return np.unpackbits(bits, count=shape[0] * shape[1]).reshape(shape).astype(bool)
        with Image.open(path) as src:
            im = src
            alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
            arr = np.asarray(im.convert("RGBA" if alpha else "RGB"))
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable image tile ({exc}); delete it and rerun ImageryAll") from exc
    rgb = arr[:, :, :3]
    nodata = arr[:, :, 3] == 0 if alpha else rgb.max(axis=2) == 0
    dark = rgb.sum(axis=2, dtype=np.uint16) < 3 * DARK_BELOW  # (the mean below DARK_BELOW)
    bright = rgb.min(axis=2) > BRIGHT_ABOVE  # (every channel above it)
    ok = ~(nodata | dark | bright)
    if _USABLE_HELD[0] < USABLE_CACHE_BYTES:
        _USABLE[key] = (np.packbits(ok), ok.shape)
        _USABLE_HELD[0] += _USABLE[key][0].nbytes
    return ok


#: a polygon's pixels on a tile: (row slice, col slice, mask of that window)
Window = tuple[slice, slice, NDArray[np.bool_]]


def pixel_window(geom: shapely.Geometry, bounds: tuple[float, float, float, float],
                 shape: tuple[int, int]) -> Window | None:
    """The pixels of a raster of ``shape`` (rows, cols) spanning EPSG:3857 ``bounds`` that
    ``geom`` (EPSG:3857) covers: (row slice, col slice, mask of that window); pixel centres
    inside, or the pixels it touches when it holds no centre. None when it reaches no pixel."""
    left, bottom, right, top = bounds
    h, w = shape
    rx, ry = (right - left) / w, (top - bottom) / h
    gx0, gy0, gx1, gy1 = shapely.bounds(geom)
    c0, c1 = max(0, math.floor((gx0 - left) / rx)), min(w, math.ceil((gx1 - left) / rx))
    r0, r1 = max(0, math.floor((top - gy1) / ry)), min(h, math.ceil((top - gy0) / ry))
    if c0 >= c1 or r0 >= r1:
        return None
    transform = Affine(rx, 0.0, left + c0 * rx, 0.0, -ry, top - r0 * ry)
    out_shape = (r1 - r0, c1 - c0)
    mask = rasterize([geom], out_shape=out_shape, transform=transform, fill=0, default_value=1, dtype=np.uint8)
    if not mask.any():
        mask = rasterize([geom], out_shape=out_shape, transform=transform, fill=0, default_value=1,
                         dtype=np.uint8, all_touched=True)
    if not mask.any():
        return None
    return slice(r0, r1), slice(c0, c1), mask.astype(bool)


def tile_pairs(geoms_3857: NDArray[np.object_], zoom: int) -> tuple[NDArray[np.int64], NDArray[np.int64],
                                                                    NDArray[np.int64], NDArray[np.float64]]:
    """Every (polygon, tile) pair at ``zoom`` where the polygon has area in the tile: polygon
    indices, tile x, tile y and the share of the polygon's area in that tile, sorted by tile."""
    geoms = np.asarray(geoms_3857, dtype=object)
    area = shapely.area(geoms)
    ok = np.flatnonzero(area > 0)
    if len(ok) == 0:
        e = np.empty(0, dtype=np.int64)
        return e, e, e, np.empty(0)
    b = shapely.bounds(geoms[ok])
    e_m = tile_extent_m(zoom)
    n = (1 << zoom) - 1
    x0 = np.clip(np.floor((b[:, 0] + HALF_WORLD_M) / e_m), 0, n).astype(np.int64)
    x1 = np.clip(np.floor((b[:, 2] + HALF_WORLD_M) / e_m), 0, n).astype(np.int64)
    y0 = np.clip(np.floor((HALF_WORLD_M - b[:, 3]) / e_m), 0, n).astype(np.int64)
    y1 = np.clip(np.floor((HALF_WORLD_M - b[:, 1]) / e_m), 0, n).astype(np.int64)
    w, h = x1 - x0 + 1, y1 - y0 + 1
    cnt = w * h
    fi = np.repeat(np.arange(len(ok)), cnt)
    off = np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)
    tx, ty = x0[fi] + off % w[fi], y0[fi] + off // w[fi]
    left, top = -HALF_WORLD_M + tx * e_m, HALF_WORLD_M - ty * e_m
    single = cnt[fi] == 1
    frac = np.ones(len(fi))
    multi = np.flatnonzero(~single)
    if len(multi):
        boxes = shapely.box(left[multi], top[multi] - e_m, left[multi] + e_m, top[multi])
        gi = ok[fi[multi]]
        frac[multi] = shapely.area(shapely.intersection(geoms[gi], boxes)) / area[gi]
    keep = frac > 0
    idx, tx, ty, frac = ok[fi[keep]], tx[keep], ty[keep], frac[keep]
    order = np.lexsort((idx, ty, tx))
    return idx[order], tx[order], ty[order], frac[order]


def inside_evidence(geoms_4326: np.ndarray, band: int, n_classes: int, zoom: int, pred_dir: Path,
                    image_dir: Path | None, files: tuple[TileLookup, TileLookup | None] | None = None) -> pd.DataFrame:
    """Per polygon (EPSG:4326; same order), what the prediction and imagery tiles at ``zoom``
    show inside it:

    * ``prob_inside``: mean probability (0-1) of prediction band ``band`` (0-based, in
      :mod:`pipeline.inference.probs` order: the ``n_classes`` class bands, then edge bands) over the
      polygon's pixels on existing prediction tiles; NaN when no prediction tile covers it;
    * ``prob_max_inside``: their maximum; ``confident_share``: the share of them with
      p >= ``CONFIDENT_P`` (both NaN like ``prob_inside``);
    * ``pred_share``: the share (0-1) of the polygon's area on prediction tiles that exist;
    * ``usable_share``: the share of its area where the imagery is usable (an image tile exists
      and :func:`usable_pixels` says so, or no image tile but a prediction tile: the model saw
      imagery there); 0 without either; ``pred_share`` when ``image_dir`` is None.

    Tiles come from each folder's tile index (:func:`tile_files`; ``files``: the two lookups made
    once by a caller that asks many times); each is read once. Empty, missing or zero-area
    geometries get NaN and 0.
    """
    geoms = np.asarray(geoms_4326, dtype=object)
    n = len(geoms)
    bad = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms)) & ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    merc = to_mercator(geoms) if n else geoms
    psum, pmax, nconf, npix = np.zeros(n), np.full(n, np.nan), np.zeros(n), np.zeros(n)
    pred_share, usable = np.zeros(n), np.zeros(n)
    idx, tx, ty, frac = tile_pairs(merc, zoom)
    pred_file, image_file = files if files is not None else (
        tile_files(pred_dir, zoom), tile_files(image_dir, zoom) if image_dir is not None else None)
    conf_u8 = math.ceil(CONFIDENT_P * 255 - 1e-9)
    starts = np.flatnonzero(np.r_[True, (np.diff(tx) != 0) | (np.diff(ty) != 0)]) if len(idx) else np.empty(0, int)
    with rasterio.Env():  # one GDAL environment for every window (rasterize opens one per call otherwise)
        for s, e in zip(starts, np.r_[starts[1:], len(idx)].astype(int) if len(idx) else [], strict=True):
            key = (int(tx[s]), int(ty[s]))
            bounds = tile_bounds(Tile(zoom, *key))
            members = range(s, e)
            path = pred_file(key)
            windows: dict[int, Window | None] = {}  # per pair, on the prediction tile's grid
            if path is not None:
                bands, _ = decode_prob_tile(path.read_bytes(), n_classes, str(path))
                if not 0 <= band < len(bands):
                    raise ValueError(f"band {band} is not in {path} ({len(bands)} bands)")
                p = bands[band]
                for k in members:
                    i = idx[k]
                    pred_share[i] += frac[k]
                    win = windows[k] = pixel_window(merc[i], bounds, p.shape)
                    if win is None:
                        continue
                    v = p[win[0], win[1]][win[2]]
                    psum[i] += float(v.sum(dtype=np.int64))
                    npix[i] += v.size
                    nconf[i] += int((v >= conf_u8).sum())
                    pmax[i] = max(float(v.max()), 0.0 if np.isnan(pmax[i]) else pmax[i])
            ipath = image_file(key) if image_file is not None else None
            if ipath is not None:
                ok = usable_pixels(ipath)
                same = path is not None and ok.shape == p.shape  # the same grid: the same windows
                for k in members:
                    i = idx[k]
                    win = windows[k] if same else pixel_window(merc[i], bounds, ok.shape)
                    if win is not None:
                        usable[i] += frac[k] * float(ok[win[0], win[1]][win[2]].mean())
            elif path is not None:  # predicted without an image tile here (imagery since removed): the model saw it
                for k in members:
                    usable[idx[k]] += frac[k]
    seen = npix > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        out = pd.DataFrame({
            "prob_inside": np.where(seen, psum / npix / 255.0, np.nan),
            "prob_max_inside": np.where(seen, pmax / 255.0, np.nan),
            "confident_share": np.where(seen, nconf / npix, np.nan),
            "pred_share": np.clip(pred_share, 0.0, 1.0),
            "usable_share": np.clip(usable if image_dir is not None else pred_share, 0.0, 1.0),
        })
    return out


#: the band along an outline (image pixels each side) and the ground around and inside it (pixels
#: from the outline) that :func:`outline_edges` compares
EDGE_BAND_PX = 2.0
EDGE_GAP_PX, EDGE_RING_PX = 3.0, 8.0


def _gradient(path: Path) -> NDArray[np.float32]:
    """Sobel gradient magnitude of an image tile's grey level: the mean of its first three bands,
    or its one band (any bit depth: a ratio of gradients does not depend on the scale)."""
    from scipy import ndimage

    try:
        with Image.open(path) as src:
            arr = np.asarray(src.convert("RGB") if src.mode in ("P", "PA", "LA", "RGBA", "CMYK") else src,
                             dtype=np.float32)
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable image tile ({exc}); delete it and rerun ImageryAll") from exc
    grey = arr[..., :3].mean(axis=2) if arr.ndim == 3 else arr
    return np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)).astype(np.float32)


def outline_edges(geoms_4326: np.ndarray, zoom: int, image_file: TileLookup) -> NDArray[np.float64]:
    """Per polygon (EPSG:4326), how strongly the imagery still shows its outline: the mean grey-level
    gradient (Sobel) within :data:`EDGE_BAND_PX` image pixels of the outline, over the mean
    gradient of the ground inside and around it (from :data:`EDGE_GAP_PX` to
    :data:`EDGE_RING_PX` pixels away) plus one. A standing building keeps its roof edges and
    shadow whether or not a model sees it (about 3 on the sample towns); the outline of a
    demolished one has faded into the ground (about 1.5), as has an outline moved onto empty
    ground (the gap simulation's placebos). NaN without image tiles under it."""
    geoms = np.asarray(geoms_4326, dtype=object)
    n = len(geoms)
    on_sum, on_n, bg_sum, bg_n = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    if n == 0:
        return np.empty(0)
    merc = to_mercator(np.where(shapely.is_valid(geoms), geoms, shapely.make_valid(geoms)))
    # the tiles the ring reaches (at 256 px a tile); pairs come sorted by tile, so one gradient is held at a time
    idx, tx, ty, _ = tile_pairs(shapely.buffer(merc, EDGE_RING_PX * tile_extent_m(zoom) / 256), zoom)
    key: TileKey | None = None
    g: NDArray[np.float32] | None = None
    zones: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per image tile width: every polygon's band and ground
    with rasterio.Env():  # one GDAL environment for every window
        for i, x, y in zip(idx.tolist(), tx.tolist(), ty.tolist(), strict=True):
            if (x, y) != key:
                key = (x, y)
                path = image_file(key)
                g = _gradient(path) if path is not None else None
            if g is None:
                continue
            if g.shape[1] not in zones:
                zones[g.shape[1]] = _outline_zones(merc, tile_extent_m(zoom) / g.shape[1])
            bounds = tile_bounds(Tile(zoom, *key))
            band, ground = zones[g.shape[1]]
            for geom, sums, counts in ((band[i], on_sum, on_n), (ground[i], bg_sum, bg_n)):
                win = pixel_window(geom, bounds, g.shape)
                if win is not None:
                    v = g[win[0], win[1]][win[2]]
                    sums[i] += float(v.sum())
                    counts[i] += v.size
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((on_n > 0) & (bg_n > 0), (on_sum / on_n) / (bg_sum / bg_n + 1.0), np.nan)


def _outline_zones(merc: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Per polygon (EPSG:3857) the band within :data:`EDGE_BAND_PX` image pixels of ``px`` metres
    of its outline and the ground from :data:`EDGE_GAP_PX` to :data:`EDGE_RING_PX` pixels of it."""
    edge = shapely.boundary(merc)
    band = shapely.buffer(edge, EDGE_BAND_PX * px)
    ground = shapely.difference(shapely.buffer(merc, EDGE_RING_PX * px), shapely.buffer(edge, EDGE_GAP_PX * px))
    return band, ground
