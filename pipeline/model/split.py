"""Image/mask pairs from the tile index and a spatially blocked train/val/test split with the
training split's band statistics and class pixel shares.

``split.csv`` (one row per usable tile, sorted by z, x, y)::

    z,x,y,split,image,mask,labelled      # split: train|val|test; paths relative to data/<region>/;
                                          # labelled: pixels with a class id > 0 (not 255)

``split_stats.json``: ``band_stats`` {"mean", "std"} per band in units of pixel / 255 (the units
:func:`pipeline.model.network.normalise` uses; 16-bit tiles: pixel / ``max``, also in ``band_stats``),
``dtype`` (uint8 or uint16), ``class_pixels`` {class id: pixel count} and
``class_shares`` over the labelled (not 255) training pixels, tile counts per split, the number of
tiles left out for lack of imagery, ``bands`` and ``tile_size``.

I/O at the edges: pandas, shapely and mercantile are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.train import Box, SplitSpec
from pipeline.core.errors import InputDataError

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("z", "x", "y", "split", "image", "mask", "labelled")
IGNORE = 255


@dataclass(frozen=True)
class TileRow:
    """One row of ``split.csv``: a tile, its split and its files (relative to the data folder)."""

    z: int
    x: int
    y: int
    split: str
    image: str
    mask: str
    labelled: int = 0


def tile_pairs(data_dir: str | Path) -> tuple[list[TileRow], dict[str, int]]:
    """Image/mask pairs from the manifests of ``data_dir/images`` and ``data_dir/masks``
    (``pipeline.tiles.index.read_tile_index``, never a glob). Returns rows with ``split=""`` sorted by
    (z, x, y), and counts: ``tiles`` (masks), ``pairs``, ``no_imagery`` (tiles left out: the
    imagery had no valid pixels or no file), ``no_mask``."""
    from pipeline.tiles.index import WRITTEN, read_tile_index

    data_dir = Path(data_dir)
    images = read_tile_index(data_dir / "images")
    masks = read_tile_index(data_dir / "masks")
    img = {(r.z, r.x, r.y): r.path for r in images.itertuples() if r.status == WRITTEN}
    rows: list[TileRow] = []
    no_mask = 0
    for r in masks.itertuples():
        key = (int(r.z), int(r.x), int(r.y))
        if r.status != WRITTEN:
            no_mask += 1
        elif key in img:
            rows.append(TileRow(*key, "", f"images/{img[key]}", f"masks/{r.path}"))
    counts = {"tiles": len(masks), "pairs": len(rows), "no_imagery": len(masks) - no_mask - len(rows),
              "no_mask": no_mask}
    return rows, counts


def no_pairs_message(data_dir: Path, counts: dict[str, int]) -> str:
    """Why no tile has both imagery and a mask (``counts`` from :func:`tile_pairs`), and the fix:
    no tile at all (no labelled feature, or none the classes can burn), or no imagery."""
    from pipeline.tiles.index import MISSING, NODATA, WRITTEN, read_tile_index

    head = f"{data_dir}: no tile has both imagery and a mask"
    if counts["tiles"] == 0:
        return f"{data_dir}: no tile to split: {_why_no_tiles(data_dir)}"
    with_mask = counts["tiles"] - counts["no_mask"]
    if with_mask == 0:
        return (f"{head}: none of the {counts['tiles']} tile(s) got a mask file (see "
                f"{data_dir / 'masks' / '_manifest.json'}) — rerun MasksAll")
    masks = read_tile_index(data_dir / "masks")
    keys = {(int(r.z), int(r.x), int(r.y)) for r in masks.itertuples() if r.status == WRITTEN}
    images = read_tile_index(data_dir / "images")
    status = [r.status for r in images.itertuples() if (int(r.z), int(r.x), int(r.y)) in keys]
    nodata, missing = status.count(NODATA), status.count(MISSING)
    fixes = []
    if nodata or not missing:
        fixes.append("check that [imagery] covers the region (its paths or url; nodata, min_valid_share)")
    if missing:
        fixes.append("once the server has the missing tiles, rerun with --download-refetch-missing "
                     "(or check [imagery] url)")
    return (f"{head}: none of the {with_mask} tile(s) with a mask has imagery ({nodata} nodata, {missing} missing "
            f"on the server) — {'; '.join(fixes)}")


def _why_no_tiles(data_dir: Path) -> str:
    """Why the region has no tile: what the extract manifest says about the labelled features."""
    from pipeline.core.errors import ManifestError
    from pipeline.core.manifests import read_manifest

    where = data_dir / "_manifests" / "extract.json"
    try:
        m = read_manifest(where)
    except ManifestError:
        m = {}
    stats = m.get("stats")
    stats = stats if isinstance(stats, dict) else {}
    wrong = int(stats.get("wrong_geometry") or 0)
    if m.get("features") == 0 and wrong:
        return (f"no labelled feature: {wrong} feature(s) have a geometry their class cannot burn (Points or lines "
                f"for an area class; see {where}) — give polygons for area classes, or burn points and lines with "
                'a class of kind = "line" and buffer_m (points become discs)')
    if m.get("features") == 0:
        return (f"no labelled feature: the labels hold no feature of any class (see {where}) — check the label "
                "files (or the OSM extract) and the classes' tags (or [labels] attribute and values)")
    return "the region has no tiles (tiles.csv is empty) — check region.bbox and that the labels lie inside it"


def block_of(z: int, x: int, y: int, block_zoom: int) -> tuple[int, int]:
    """The parent tile (x, y) at ``block_zoom`` of tile z/x/y (itself when z <= block_zoom)."""
    shift = max(0, z - block_zoom)
    return x >> shift, y >> shift


def split_by_blocks(tiles: Sequence[tuple[int, int, int]], block_zoom: int, val_fraction: float,
                    test_fraction: float, seed: int) -> list[str]:
    """Assign whole blocks (parent tiles at ``block_zoom``) to test, val, then train, in a seeded
    random order, until each held-out split has about its fraction of the tiles. Neighbouring
    tiles in one block never straddle two splits. Returns one split name per tile."""
    blocks: dict[tuple[int, int], list[int]] = {}
    for i, (z, x, y) in enumerate(tiles):
        blocks.setdefault(block_of(z, x, y, block_zoom), []).append(i)
    keys = sorted(blocks)
    order = np.random.default_rng(seed).permutation(len(keys))
    n = len(tiles)
    want = {"test": test_fraction * n, "val": val_fraction * n}
    out = ["train"] * n
    got = {"test": 0, "val": 0}
    for k in order:
        members = blocks[keys[int(k)]]
        for name in ("test", "val"):
            # take the block if it brings the split closer to its target share
            if want[name] > 0 and abs(got[name] + len(members) - want[name]) < abs(got[name] - want[name]):
                got[name] += len(members)
                for i in members:
                    out[i] = name
                break
    return out


def _area_geoms(areas: tuple[Box, ...] | Path, key: str) -> Any:
    import shapely

    if isinstance(areas, Path):
        try:
            data = json.loads(areas.read_text())
        except (OSError, ValueError) as exc:
            raise InputDataError(f"[split] {key} = {str(areas)!r}: not a readable GeoJSON file ({exc})") from exc
        feats = data.get("features", [data]) if isinstance(data, dict) else []
        geoms = [shapely.geometry.shape(f.get("geometry", f)) for f in feats if isinstance(f, dict)]
        if not geoms:
            raise InputDataError(f"[split] {key} = {str(areas)!r}: no geometries (give EPSG:4326 polygons)")
        return shapely.union_all(geoms)
    return shapely.union_all([shapely.box(*b) for b in areas])


def split_by_areas(tiles: Sequence[tuple[int, int, int]], spec: SplitSpec, block_zoom: int) -> list[str]:
    """Tiles touching ``test_areas`` are test, those touching ``val_areas`` val; when no val areas
    are given, val takes whole blocks of the rest by ``val_fraction``."""
    import mercantile
    import shapely

    boxes = shapely.box(*np.array([list(mercantile.bounds(x, y, z)) for z, x, y in tiles]).T) if tiles else []
    out = ["train"] * len(tiles)
    for name, areas in (("val", spec.val_areas), ("test", spec.test_areas)):
        if areas is not None:
            hit = shapely.intersects(boxes, _area_geoms(areas, f"{name}_areas"))
            for j in np.flatnonzero(hit):
                out[int(j)] = name
    if spec.val_areas is None and spec.val_fraction > 0:
        rest = [i for i, s in enumerate(out) if s == "train"]
        sub = split_by_blocks([tiles[i] for i in rest], block_zoom, spec.val_fraction, 0.0, spec.seed)
        for i, s in zip(rest, sub, strict=True):
            out[i] = s
    return out


#: the tile data types osmsat trains on; band statistics are in units of pixel / ``max`` (255 for
#: 8-bit; for 16-bit the training pixels' 99th percentile: ``band_stats["max"]``)
IMAGE_DTYPES = ("uint8", "uint16")
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def read_image(path: str | Path, bands: int | None = None) -> np.ndarray:
    """An image tile as (H, W, C) uint8, or uint16 for 16-bit tiles (``[imagery] keep_16bit``).

    PNG/JPEG/WebP: palette expanded, alpha dropped (Pillow). TIFF: every band, read with GDAL
    (Pillow would drop a 4th band it takes for alpha, and reads no 16-bit colour): osmsat's
    TIFF tiles carry no alpha, so RGB+NIR keeps its NIR. ``bands`` checks C."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable image tile ({exc}); delete it and rerun ImageryAll") from exc
    arr = _read_tiff(path) if magic in _TIFF_MAGIC else _read_pil(path)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    if bands is not None and arr.shape[2] != bands:
        raise InputDataError(f"{path}: {arr.shape[2]} bands, the other tiles have {bands}")
    return arr


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as src:
            im = src
            if im.mode in ("P", "RGBA", "CMYK", "YCbCr"):
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            elif im.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.uint16)
            elif im.mode not in ("RGB", "L"):
                raise InputDataError(f"{path}: image mode {im.mode}: osmsat reads 8-bit (L, RGB, palette) or 16-bit "
                                     "grey tiles; write tiles as [imagery] format = 'tif' for other kinds")
            return np.asarray(im)
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable image tile ({exc}); delete it and rerun ImageryAll") from exc


def _read_tiff(path: Path) -> np.ndarray:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                arr = src.read()
    except RasterioIOError as exc:
        raise InputDataError(f"{path}: unreadable image tile ({exc}); delete it and rerun ImageryAll") from exc
    if arr.dtype.name not in IMAGE_DTYPES:
        raise InputDataError(f"{path}: {arr.dtype} pixels; osmsat trains on 8- or 16-bit unsigned tiles: set "
                             "[imagery] keep_16bit = false (rescaled to 8 bits) or convert the rasters to uint16")
    return np.ascontiguousarray(np.moveaxis(arr, 0, -1))


def value_max(band_stats: Mapping[str, Any]) -> float:
    """The pixel value that band statistics count as 1.0: ``band_stats["max"]``, 255 without it."""
    return float(band_stats.get("max", 255))


def read_mask(path: str | Path) -> np.ndarray:
    """A mask tile as uint8 (H, W) class ids (255 = ignore)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im if im.mode in ("P", "L") else im.convert("L"))
    except OSError as exc:
        raise InputDataError(f"{path}: unreadable mask tile ({exc}); delete it and rerun MasksAll") from exc


#: share of the 16-bit training pixels at or below ``band_stats["max"]`` (brighter ones count as it).
#: 0.99: on Atlanta's pan the pixels then spread as a 2-98 % stretched 8-bit image's do (std 0.21 of
#: the range against 0.28; 0.999 gave 0.12, doubling the colour jitter's relative strength)
CEILING_QUANTILE = 0.99


def training_stats(data_dir: Path, rows: Iterable[TileRow]) -> dict[str, Any]:
    """Band mean/std and class pixel counts/shares over ``rows``. 8-bit tiles: mean/std in
    pixel / 255 units, as always. 16-bit tiles: in pixel / ``max`` units, ``max`` (in
    ``band_stats``) the 99th percentile of the training pixels (all bands), brighter pixels
    counted as ``max`` (:func:`pipeline.model.network.normalise` clips them alike): pixels fill 0..1 as
    8-bit ones do whatever the sensor's range and outliers, so colour jitter means the same;
    7 significant digits."""
    s1: np.ndarray | None = None
    s2: np.ndarray | None = None
    hist: np.ndarray | None = None  # 16-bit: per band, counts of each value
    n: int = 0
    dtype: str | None = None
    counts = np.zeros(256, dtype=np.int64)
    for r in rows:
        raw = read_image(data_dir / r.image, None if s1 is None else len(s1))
        if dtype is None:
            dtype = raw.dtype.name
        elif raw.dtype.name != dtype:
            raise InputDataError(f"{data_dir / r.image}: {raw.dtype} pixels, the other tiles are {dtype}; a region's "
                                 "tiles share one data type: rerun ImageryAll")
        if dtype == "uint8":
            img = raw.astype(np.float64) / 255.0  # as the 8-bit statistics always were (same arithmetic, digits)
            flat = img.reshape(-1, img.shape[2])
            s1 = flat.sum(0) + (0 if s1 is None else s1)
            s2 = (flat * flat).sum(0) + (0 if s2 is None else s2)
        else:
            h = np.stack([np.bincount(raw[:, :, b].ravel(), minlength=65536) for b in range(raw.shape[2])])
            hist = h if hist is None else hist + h
            s1 = s2 = np.zeros(raw.shape[2])  # the band count; the sums come from the histograms
        n += raw.shape[0] * raw.shape[1]
        counts += np.bincount(read_mask(data_dir / r.mask).ravel(), minlength=256)
    if s1 is None or s2 is None or n == 0:
        raise InputDataError(f"{data_dir}: the training split is empty; lower [split] val_fraction/test_fraction "
                             "or make the region larger")
    vmax = 255
    if hist is not None:
        pooled = np.cumsum(hist.sum(0))
        vmax = max(255, int(np.searchsorted(pooled, CEILING_QUANTILE * pooled[-1])))
        vals = np.minimum(np.arange(65536, dtype=np.float64), vmax) / vmax
        s1 = (hist * vals).sum(1)
        s2 = (hist * vals * vals).sum(1)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))
    std = np.maximum(std, 1e-3)
    counts[IGNORE] = 0
    total = int(counts.sum())
    ids = [int(i) for i in np.flatnonzero(counts)]
    if dtype == "uint8":
        band_stats: dict[str, Any] = {"mean": [round(float(v), 6) for v in mean],
                                      "std": [round(float(v), 6) for v in std]}
    else:
        band_stats = {"mean": [float(f"{v:.7g}") for v in mean], "std": [float(f"{v:.7g}") for v in std],
                      "max": vmax}
    return {"band_stats": band_stats,
            "class_pixels": {str(i): int(counts[i]) for i in ids},
            "class_shares": {str(i): round(float(counts[i]) / total, 6) for i in ids} if total else {},
            "bands": len(mean), "dtype": dtype}


def make_split(data_dir: str | Path, spec: SplitSpec, zoom: int) -> tuple[list[TileRow], dict[str, Any]]:
    """Rows of ``split.csv`` and the stats of ``split_stats.json`` for region folder ``data_dir``."""
    data_dir = Path(data_dir)
    rows, counts = tile_pairs(data_dir)
    if not rows:
        raise InputDataError(no_pairs_message(data_dir, counts))
    bz = spec.block_zoom if spec.block_zoom is not None else max(0, zoom - 2)
    keys = [(r.z, r.x, r.y) for r in rows]
    if spec.test_areas is not None or spec.val_areas is not None:
        names = split_by_areas(keys, spec, bz)
    else:
        names = split_by_blocks(keys, bz, spec.val_fraction, spec.test_fraction, spec.seed)
    out: list[TileRow] = []
    for r, name in zip(rows, names, strict=True):
        m = read_mask(data_dir / r.mask)
        out.append(TileRow(r.z, r.x, r.y, name, r.image, r.mask, int(((m > 0) & (m != IGNORE)).sum())))
    stats = training_stats(data_dir, [r for r in out if r.split == "train"])
    first = read_image(data_dir / out[0].image)
    stats.update({"tiles": {s: sum(r.split == s for r in out) for s in SPLITS}, "counts": counts,
                  "block_zoom": bz, "tile_size": int(first.shape[0])})
    return out, stats


def write_split_csv(path: str | Path, rows: Iterable[TileRow]) -> None:
    """Write ``split.csv`` atomically."""
    from pipeline.core.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(SPLIT_COLUMNS)
        for r in rows:
            w.writerow([r.z, r.x, r.y, r.split, r.image, r.mask, r.labelled])


def read_split_csv(path: str | Path) -> list[TileRow]:
    """Rows of ``split.csv`` (csv module only: usable on a host without pandas)."""
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != SPLIT_COLUMNS:
                raise InputDataError(f"{path}: columns {reader.fieldnames}, expected {list(SPLIT_COLUMNS)}; "
                                     "delete it and run SplitDataset")
            return [TileRow(int(d["z"]), int(d["x"]), int(d["y"]), d["split"], d["image"], d["mask"],
                            int(d["labelled"])) for d in reader]
    except OSError as exc:
        raise InputDataError(f"{path}: cannot read the split ({exc}); run SplitDataset first") from exc
