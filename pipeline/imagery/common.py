"""Shared pieces of the imagery stage: tile statuses and records, tile encoding and
verification, and redaction of secrets (API keys, passwords) in URLs and messages.

Tile arrays are band-first ``(bands, rows, cols)``; tiles are slippy-map tiles in EPSG:3857
(see :mod:`pipeline.tiles.tilemath`).
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from pipeline.core.errors import ConfigError, InputDataError
from pipeline.tiles.writer import TileStatus, tile_path

if TYPE_CHECKING:  # numpy and Pillow are imported where tiles are encoded or checked, not by completeness checks
    import numpy as np
    from numpy.typing import NDArray

    from pipeline.tiles.tilemath import Tile

#: every tile status, in the order the coverage summary counts them (:class:`TileStatus`)
STATUSES = tuple(TileStatus)

#: file extension of each image format PIL can report for a tile
EXTENSIONS = {"PNG": "png", "JPEG": "jpg", "WEBP": "webp", "TIFF": "tif"}
TILE_EXTS = tuple(EXTENSIONS.values())


@dataclass(frozen=True)
class TileRecord:
    """What became of one tile: ``status`` (OK, NODATA or MISSING); for OK tiles the file
    extension, its size in bytes and sha256; ``valid_share`` is the share of valid pixels
    (raster sources; 1.0 for downloads)."""

    tile: Tile
    status: str
    ext: str = ""
    size: int = 0
    sha256: str = ""
    valid_share: float = 1.0

    @property
    def rel_path(self) -> str:
        """``z/x/y.ext`` relative to the product folder (empty unless OK)."""
        return f"{self.tile.z}/{self.tile.x}/{self.tile.y}.{self.ext}" if self.status == TileStatus.OK else ""


# ---------------------------------------------------------------------------------------------
# Secrets

_SECRET_NAME = re.compile(r"key|token|secret|sig|signature|password|passwd|pwd|auth|credential|session",
                          re.IGNORECASE)
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
REDACTED = "REDACTED"


def expand_env(text: str, where: str) -> tuple[str, list[str]]:
    """Replace ``${NAME}`` with environment variable NAME; returns the text and the values
    substituted (secrets to redact). Raises ConfigError naming ``where`` for an unset variable."""
    secrets: list[str] = []

    def sub(m: re.Match[str]) -> str:
        value = os.environ.get(m.group(1))
        if value is None:
            raise ConfigError(f"{where} uses ${{{m.group(1)}}} but the environment variable is not set; "
                              f"export {m.group(1)}=... before running")
        if value:
            secrets.append(value)
        return value

    return _ENV_REF.sub(sub, text), secrets


#: query parameters whose values are printed (lower case): WMS/WMTS/tile-server vocabulary that
#: never carries a credential. Every other value is redacted, whatever its name (``?k=SECRET``).
PUBLIC_PARAMS = frozenset({
    "service", "request", "version", "layers", "layer", "styles", "style", "format", "crs", "srs", "bbox",
    "width", "height", "transparent", "bgcolor", "tilematrixset", "tilematrix", "tilerow", "tilecol", "time",
    "z", "x", "y", "zoom", "scale", "lang", "language", "size", "dpi", "map_resolution", "exceptions",
})


def redact_url(url: str) -> str:
    """``url`` with its userinfo and the value of every query parameter not in
    :data:`PUBLIC_PARAMS` replaced by ``REDACTED`` (so a key under any name, e.g. ``?k=...``,
    never shows); the scheme, host, path and public parameters are kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = "&".join(k + "=" + (REDACTED if _SECRET_NAME.search(k) or k.lower() not in PUBLIC_PARAMS
                                    else quote(v, safe=",:/{}-")) for k, v in pairs)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"https?://[^\s'\"<>()]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Redact every URL in ``text`` (see :func:`redact_url`) and every literal secret value."""
    out = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for s in sorted(set(secrets), key=len, reverse=True):
        if len(s) >= 4:
            out = out.replace(s, REDACTED)
            out = out.replace(quote(s, safe=""), REDACTED)
    return out


# ---------------------------------------------------------------------------------------------
# Encoding and verification


def encode_tile(arr: NDArray[np.generic], fmt: str, tile: Tile | None = None, *, jpeg_quality: int = 90,
                png_level: int = 1) -> bytes:
    """Encode a ``(bands, size, size)`` tile as ``fmt`` (png, jpg: uint8 with 1 or 3 bands;
    tif: any band count, uint8 or uint16, deflate, georeferenced in EPSG:3857 when ``tile``
    is given). Deterministic bytes for the same array."""
    import numpy as np
    from PIL import Image

    if fmt == "tif":
        return _encode_tiff(arr, tile)
    if arr.dtype != np.uint8 or arr.shape[0] not in (1, 3):
        raise ConfigError(f"cannot encode {arr.shape[0]} band(s) of {arr.dtype} as {fmt}; "
                          "use [imagery] format = 'tif' (or bands = [r, g, b])")
    img = Image.fromarray(arr[0] if arr.shape[0] == 1 else np.ascontiguousarray(np.moveaxis(arr, 0, -1)))
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", compress_level=png_level)
    elif fmt == "jpg":
        img.save(buf, format="JPEG", quality=jpeg_quality)
    else:
        raise ConfigError(f"unknown tile format {fmt!r}; use png, jpg or tif")
    return buf.getvalue()


def _encode_tiff(arr: NDArray[np.generic], tile: Tile | None) -> bytes:
    from rasterio.io import MemoryFile

    from pipeline.tiles.tilemath import tile_transform

    count, h, w = arr.shape
    profile: dict[str, object] = dict(driver="GTiff", width=w, height=h, count=count, dtype=arr.dtype.name,
                                      compress="deflate", predictor=2, interleave="pixel")
    if count > 3 and arr.dtype.name == "uint8":
        # GDAL would tag band 4 of a byte RGB as alpha (a viewer shows NIR as transparency): a data band
        profile["alpha"] = "UNSPECIFIED"
    if tile is not None:
        profile.update(crs="EPSG:3857", transform=tile_transform(tile, w))
    with MemoryFile() as mem:
        with mem.open(**profile) as dst:
            dst.write(arr)
        return bytes(mem.read())


@dataclass(frozen=True)
class DecodedInfo:
    """What verification learnt about an image file: its extension and pixel size."""

    ext: str
    width: int
    height: int


def verify_image(data: bytes, size: int | None = None, what: str = "tile") -> DecodedInfo:
    """Check with Pillow that ``data`` decodes as a PNG, JPEG, WebP or TIFF image of ``size`` x
    ``size`` pixels (any size when ``size`` is None); raise InputDataError naming ``what`` otherwise.

    PNG: ``verify()`` (chunk structure, IEND reached, every chunk's CRC: a cut-short or altered
    body fails) and the header's size; no full decode, which costs 1.5 ms a tile and would only
    add a zlib stream broken under valid CRCs (a server bug, not a transport fault). JPEG:
    decoded at 1/8 scale (every entropy-coded block is still read). Others: a full decode.
    """
    from PIL import Image

    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n"):
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
                im.verify()
            info = DecodedInfo("png", width, height)
        else:
            info = _verify_pil(data, draft=data.startswith(b"\xff\xd8\xff"))
    except (OSError, SyntaxError, ValueError, zlib.error, struct.error, Image.DecompressionBombError) as exc:
        raise InputDataError(f"{what}: not a decodable image ({type(exc).__name__}: {exc})") from exc
    if size is not None and (info.width, info.height) != (size, size):
        raise InputDataError(f"{what}: {size_mismatch(info, size)}")
    return info


def _verify_tiff(data: bytes) -> DecodedInfo:
    """A TIFF decoded with GDAL: Pillow reads neither 16-bit colour nor more than 4 bands."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
    from rasterio.io import MemoryFile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with MemoryFile(data) as mem, mem.open() as src:
                src.read()
                return DecodedInfo("tif", src.width, src.height)
    except RasterioIOError as exc:
        raise ValueError(f"not a decodable TIFF ({exc})") from exc


def size_mismatch(info: DecodedInfo, size: int) -> str:
    """What is wrong with an image of the wrong size, and the fix ("" when it is ``size`` x ``size``)."""
    if (info.width, info.height) == (size, size):
        return ""
    return (f"image is {info.width}x{info.height} px, expected {size}x{size} "
            "(set region.tile_size, or imagery.retina for @2x tiles)")


def _verify_pil(data: bytes, draft: bool) -> DecodedInfo:
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _verify_tiff(data)
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        fmt = im.format or ""
        width, height = im.size
        if draft:
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
        im.load()
    ext = EXTENSIONS.get(fmt)
    if ext is None:
        raise ValueError(f"unsupported image format {fmt!r}; expected PNG, JPEG, WebP or TIFF")
    return DecodedInfo(ext, width, height)


def existing_tile(root: Path, tile: Tile, size: int | None) -> tuple[Path, DecodedInfo] | tuple[None, None]:
    """The file already on disk for ``tile`` (any tile extension) if it decodes at ``size``."""
    for ext in TILE_EXTS:
        path = tile_path(root, tile, ext)
        try:
            data = path.read_bytes()
        except OSError:
            continue
        try:
            return path, verify_image(data, size, str(path))
        except InputDataError:
            continue
    return None, None


def remove_tile_files(root: Path, tile: Tile, keep_ext: str = "") -> None:
    """Delete the files of ``tile`` under ``root`` with any tile extension but ``keep_ext``
    (left over from an earlier run whose source or format differed)."""
    for ext in TILE_EXTS:
        if ext != keep_ext:
            tile_path(root, tile, ext).unlink(missing_ok=True)
