"""Imagery from a local slippy-map tile folder (``[imagery] source = "tiles"``).

``path`` is a folder of ``z/x/y.<ext>`` (EPSG:3857 tiles, y from the north, as fAIr,
OpenAerialMap and most tilers write them) or a template with ``{z}``, ``{x}`` and ``{y}`` (or
``{-y}``: TMS rows counted from the south), e.g. ``"ortho/{z}/{x}/{-y}.jpg"``. Without an
extension in the template, each tile may be ``.png``, ``.jpg``, ``.jpeg``, ``.webp`` or ``.tif``
(one zoom may mix them).

The folder's zoom is the region's zoom when it has it; else the coarsest finer zoom it has,
whose tiles are mosaicked down (2**d x 2**d children averaged to one tile, d <= ``MAX_DEPTH``).
A folder with only coarser zooms, or none, is an error naming the folder.

Each tile of a shard is verified first (it decodes, and is ``tile_size`` pixels square: else an
InputDataError naming the file), so a bad tile stops the shard before any file is written.
Then: an opaque RGB/grey tile is copied byte for byte into ``images/``; a tile with alpha (RGBA,
LA, palette transparency) is re-encoded as RGB with the alpha as valid-pixel mask (pixels with
alpha < 128 become 0, the share of valid pixels is recorded, and a tile under
``min_valid_share`` is skipped as ``nodata-skipped``, as for rasters); a tile absent from the
folder is recorded ``missing-on-server``, like a server's 404.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from pipeline.core.errors import ConfigError, InputDataError, MissingInputError
from pipeline.imagery.common import TileRecord, encode_tile, remove_tile_files, verify_image
from pipeline.tiles.tilemath import Tile
from pipeline.tiles.writer import TileStatus, write_tile_files

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig

#: extensions tried, in order, when the template names none
EXTS = ("png", "jpg", "jpeg", "webp", "tif")
#: deepest mosaic: a tile from up to 2**MAX_DEPTH x 2**MAX_DEPTH finer tiles
MAX_DEPTH = 4
#: a pixel is valid when its alpha (or mosaicked valid share x 255) is at least this
ALPHA_VALID = 128
_FIELD = re.compile(r"\{(z|x|y|-y)\}")


@dataclass(frozen=True)
class TileFolder:
    """A tile folder as a path template (``{z} {x} {y} {-y}`` fields, no extension) and the
    extensions to try."""

    template: str
    exts: tuple[str, ...]

    @classmethod
    def of(cls, path: str) -> TileFolder:
        """From ``[imagery] path``: a folder (``<path>/{z}/{x}/{y}``) or a template."""
        path = str(Path(path))  # normalised like the paths glob returns
        if not _FIELD.search(path):
            return cls(os.path.join(path, "{z}", "{x}", "{y}"), EXTS)
        stem, dot, ext = path.rpartition(".")
        if dot and ext and "/" not in ext and "}" not in ext:
            return cls(stem, (ext.lower(),))
        return cls(path, EXTS)

    def path(self, t: Tile, ext: str) -> Path:
        """File of tile ``t`` with extension ``ext``."""
        ny = (1 << t.z) - 1 - t.y
        s = self.template.replace("{z}", str(t.z)).replace("{x}", str(t.x))
        return Path(s.replace("{-y}", str(ny)).replace("{y}", str(t.y)) + "." + ext)

    def find(self, t: Tile) -> Path | None:
        """The existing file of ``t`` (first extension that exists), or None."""
        for ext in self.exts:
            p = self.path(t, ext)
            if p.is_file():
                return p
        return None

    def root(self) -> Path:
        """The folder above the first path component with a field."""
        parts = Path(self.template).parts
        i = next(i for i, part in enumerate(parts) if _FIELD.search(part))
        return Path(*parts[:i]) if i else Path(".")

    def files(self, z: int | None = None) -> Iterator[tuple[Tile, Path]]:
        """Every tile file in the folder (at zoom ``z`` when given), as (tile, path)."""
        regex = self._regex()
        glob = self.template
        if z is not None:
            glob = glob.replace("{z}", str(z))
        glob = _FIELD.sub("*", glob)
        root = self.root()
        rel_glob = os.path.relpath(glob, root) if root != Path(".") else glob
        for p in root.glob(rel_glob + ".*"):
            m = regex.fullmatch(str(p))
            if m is None or m.group("ext").lower() not in self.exts:
                continue
            tz, tx = int(m.group("z")), int(m.group("x"))
            groups = m.groupdict()
            ty = int(groups["y"]) if groups.get("y") is not None else (1 << tz) - 1 - int(groups["ny"])
            if 0 <= tx < (1 << tz) and 0 <= ty < (1 << tz):
                yield Tile(tz, tx, ty), p

    def zooms(self) -> list[int]:
        """Zoom levels that have a folder (folder layout) or a file (other templates)."""
        parts = Path(self.template).parts
        i = next(i for i, part in enumerate(parts) if "{z}" in part)
        base = Path(*parts[:i]) if i else Path(".")
        if not base.is_dir():
            raise MissingInputError(f"{base}: tile folder not found; fix imagery.path in the region config")
        pat = _pattern(parts[i], {"z": r"(\d+)", "x": r"\d+", "y": r"\d+", "-y": r"\d+"}, r"(\.\w+)?")
        found = set()
        for entry in os.scandir(base):
            m = pat.fullmatch(entry.name)
            if m:
                found.add(int(m.group(1)))
        return sorted(found)

    def _regex(self) -> re.Pattern[str]:
        names = {"z": r"(?P<z>\d+)", "x": r"(?P<x>\d+)", "y": r"(?P<y>\d+)", "-y": r"(?P<ny>\d+)"}
        return _pattern(self.template, names, r"\.(?P<ext>\w+)")


def _pattern(text: str, names: dict[str, str], tail: str) -> re.Pattern[str]:
    """A regex of a template: its ``{field}`` replaced by ``names[field]``, the rest literal."""
    out, pos = "", 0
    for m in _FIELD.finditer(text):
        out += re.escape(text[pos:m.start()]) + names[m.group(1)]
        pos = m.end()
    return re.compile(out + re.escape(text[pos:]) + tail)


def folder_zoom(folder: TileFolder, zoom: int, where: str) -> int:
    """The zoom to read for a region at ``zoom``: ``zoom`` itself, else the coarsest finer zoom
    the folder has (mosaicked down). Raises InputDataError naming the folder when it is empty,
    has only coarser zooms, or only zooms more than ``MAX_DEPTH`` finer."""
    zooms = [z for z in folder.zooms() if any(True for _ in _first(folder.files(z)))]
    if not zooms:
        raise InputDataError(f"{where}: no tiles found (expected {folder.template}.{'|'.join(folder.exts)}); "
                             "check imagery.path")
    if zoom in zooms:
        return zoom
    finer = [z for z in zooms if z > zoom]
    if not finer:
        raise InputDataError(f"{where}: tiles at zoom {', '.join(map(str, zooms))} only, coarser than "
                             f"region.zoom = {zoom}; a coarser folder cannot be upsampled: set region.zoom = "
                             f"{max(zooms)} or use a folder with zoom {zoom} or finer")
    if min(finer) - zoom > MAX_DEPTH:
        raise InputDataError(f"{where}: nearest tiles at zoom {min(finer)}, more than {MAX_DEPTH} zooms finer than "
                             f"region.zoom = {zoom}; raise region.zoom")
    return min(finer)


def _first(it: Iterator[tuple[Tile, Path]]) -> Iterator[tuple[Tile, Path]]:
    for item in it:
        yield item
        return


def folder_cover(icfg: ImageryConfig, zoom: int) -> NDArray[np.int64]:
    """(N, 2) x, y of the tiles at ``zoom`` that the folder has imagery for (sorted, unique)."""
    folder = _folder(icfg)
    src = folder_zoom(folder, zoom, str(icfg.path))
    d = src - zoom
    xy = np.array([(t.x >> d, t.y >> d) for t, _ in folder.files(src)], dtype=np.int64).reshape(-1, 2)
    return np.unique(xy, axis=0)


def _folder(icfg: ImageryConfig) -> TileFolder:
    if icfg.source != "tiles" or not icfg.path:
        raise ConfigError("imagery.path: a tile folder is needed for source = 'tiles'")
    return TileFolder.of(icfg.path)


# ---------------------------------------------------------------------------------------------
# A shard


def folder_shard(icfg: ImageryConfig, tiles: Sequence[Tile], size: int, out_root: Path, scratch: Path,
                 progress: Callable[[int, int], None] | None = None) -> list[TileRecord]:
    """Copy (or mosaic down) the folder's tiles of one shard into ``out_root/z/x/y.<ext>``.

    Every source file is verified before anything is written (see the module docstring)."""
    folder = _folder(icfg)
    if not tiles:
        return []
    src_zoom = folder_zoom(folder, tiles[0].z, str(icfg.path))
    sources = [_sources(folder, t, src_zoom) for t in tiles]
    for srcs in sources:
        for p in srcs:
            if p is not None:
                verify_image(p.read_bytes(), size, f"tile {p}")
    records = []
    for i, (t, srcs) in enumerate(zip(tiles, sources)):
        records.append(_one_tile(icfg, t, srcs, src_zoom - t.z, size, out_root, scratch))
        if progress is not None and (i % 64 == 63 or i == len(tiles) - 1):
            progress(i + 1, len(tiles))
    return records


def _sources(folder: TileFolder, t: Tile, src_zoom: int) -> list[Path | None]:
    """The files of ``t``'s children at ``src_zoom`` in row-major order (``t`` itself when equal)."""
    d = src_zoom - t.z
    n = 1 << d
    return [folder.find(Tile(src_zoom, (t.x << d) + i, (t.y << d) + j)) for j in range(n) for i in range(n)]


def _one_tile(icfg: ImageryConfig, t: Tile, srcs: list[Path | None], depth: int, size: int, out_root: Path,
              scratch: Path) -> TileRecord:
    if all(p is None for p in srcs):
        return TileRecord(t, TileStatus.MISSING)
    p = srcs[0]
    if depth == 0 and p is not None:
        data = p.read_bytes()
        rgb, valid = _decode(data, str(p), opaque_only=True)
        if valid is None:  # opaque: the file as it is
            ext = "jpg" if p.suffix.lower() in (".jpg", ".jpeg") else p.suffix.lower().lstrip(".")
            return _write(t, data, ext, 1.0, out_root, scratch)
    else:
        rgb, valid = _mosaic(srcs, depth, size)
    share = float(valid.mean()) if valid is not None else 1.0
    if share < icfg.min_valid_share or share == 0.0:
        remove_tile_files(out_root, t)
        return TileRecord(t, TileStatus.NODATA, valid_share=round(share, 4))
    if valid is not None:
        from pipeline.imagery.nodata import reserve_zero

        rgb = reserve_zero(np.where(valid[None], rgb, 0).astype(np.uint8), valid)
    fmt = icfg.format if icfg.format in ("png", "jpg") else "png"
    data = encode_tile(rgb, fmt, t, jpeg_quality=icfg.jpeg_quality, png_level=icfg.png_level)
    return _write(t, data, fmt, round(share, 4), out_root, scratch)


def _write(t: Tile, data: bytes, ext: str, share: float, out_root: Path, scratch: Path) -> TileRecord:
    info = write_tile_files(out_root, [(t, data)], ext, scratch)[f"{t.z}/{t.x}/{t.y}.{ext}"]
    remove_tile_files(out_root, t, keep_ext=ext)
    return TileRecord(t, TileStatus.OK, ext, info["size"], info["sha256"], share)


def _decode(data: bytes, what: str, opaque_only: bool = False) -> tuple[Any, NDArray[np.bool_] | None]:
    """(bands, h, w) uint8 and the valid mask from alpha (None: no alpha, or fully opaque).

    Grey tiles keep one band; everything else becomes RGB. With ``opaque_only``, a tile
    without alpha is not decoded at all: (None, None)."""
    with Image.open(io.BytesIO(data)) as im:  # reads the header only
        has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
        if not has_alpha and opaque_only:
            return None, None
        try:
            if has_alpha:
                arr = np.asarray(im.convert("RGBA"))
            elif im.mode == "L":
                arr = np.asarray(im)[..., None]
            else:
                arr = np.asarray(im.convert("RGB"))
        except OSError as exc:
            raise InputDataError(f"tile {what}: not a decodable image ({exc})") from exc
    if not has_alpha:
        return np.moveaxis(arr, -1, 0), None
    valid = arr[..., 3] >= ALPHA_VALID
    return np.moveaxis(arr[..., :3], -1, 0), (None if valid.all() else valid)


def _mosaic(srcs: list[Path | None], depth: int, size: int) -> tuple[NDArray[np.uint8], NDArray[np.bool_]]:
    """Average 2**depth x 2**depth child tiles (row-major, None: missing) into one tile of
    ``size`` px: each output pixel is the mean of the valid child pixels it covers, and valid
    when at least half of them are."""
    n = f = 1 << depth
    big = n * size
    canvas = np.zeros((3, big, big), dtype=np.uint8)
    valid = np.zeros((big, big), dtype=bool)
    for k, p in enumerate(srcs):
        if p is None:
            continue
        rgb, v = _decode(p.read_bytes(), str(p))
        j, i = divmod(k, n)
        win = (slice(j * size, (j + 1) * size), slice(i * size, (i + 1) * size))
        canvas[(slice(None), *win)] = rgb  # grey broadcasts to the three bands
        valid[win] = True if v is None else v
    if valid.all():  # the common case: a plain box average (PIL's reduce, in C)
        img = Image.fromarray(np.ascontiguousarray(np.moveaxis(canvas, 0, -1))).reduce(f)
        return np.moveaxis(np.asarray(img), -1, 0), np.ones((size, size), dtype=bool)
    w = valid.reshape(size, f, size, f).sum(axis=(1, 3), dtype=np.float32)
    acc = (canvas * valid).reshape(3, size, f, size, f).sum(axis=(2, 4), dtype=np.float32)
    out = np.where(w > 0, acc / np.maximum(w, 1), 0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), w >= (f * f) / 2
