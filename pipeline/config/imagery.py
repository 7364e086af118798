"""The ``[imagery]`` section of a region config: where image tiles come from and how they are
encoded (the download settings live in ``configs/luigi.toml`` ``[download]``, outside digests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError
from pipeline.imagery.registry import Location, check_location
from pipeline.imagery.sources import get_source, source_names

_RESAMPLING = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")


@dataclass(frozen=True)
class ImageryConfig:
    """Imagery source, section ``[imagery]``.

    ``source`` names a registered source (:mod:`pipeline.imagery.sources`; ``python -m tasks
    --help`` lists them), which checks its keys. The shipped ones: ``tiles`` (a local slippy-map folder ``path``, see
    :mod:`pipeline.imagery.folder`), ``raster`` (local GeoTIFF/COG ``paths`` in any CRS, mosaicked in the order
    given: the first path is on top), ``xyz`` (URL template with ``{z} {x} {y}``, ``{-y}``
    (TMS rows from the south), ``{quadkey}``, ``{r}`` (``@2x`` when ``retina``)) or ``wms``
    (GetMap URL template with ``{bbox}`` = minx,miny,maxx,maxy in EPSG:3857 metres and
    ``{width} {height}`` in pixels). ``${NAME}`` in ``url`` and ``headers`` is replaced by the
    environment variable NAME at download time, so API keys stay out of config files; keys
    never appear in logs, manifests or errors (see ``pipeline.imagery.common.redact``).

    Raster tiles are encoded as ``format``; downloaded tiles keep the server's bytes and format.
    How to talk to the server (connections, retries, timeouts, rate limit, user agent) is
    operational: ``configs/luigi.toml`` ``[download]`` (see ``OPERATIONAL_IMAGERY_KEYS``).
    """

    source: str
    paths: tuple[Path, ...] = ()
    url: str | None = None
    path: str | None = None  # tiles source: a folder of z/x/y.<ext>, or a template with {z} {x} {y} / {-y}
    cover_folder: bool = False  # tiles source: the region's tiles are the folder's tiles (not the labels' cover)
    format: str = "png"  # png | jpg | tif (raster source)
    resampling: str = "bilinear"
    bands: tuple[int, ...] | None = None  # 1-based; None: the first 3 colour bands (or band 1)
    nodata: float | None = None  # overrides the rasters' own nodata value
    rescale: tuple[float, float] | None = None  # 16-bit -> 8-bit value range; None: percentiles
    percentiles: tuple[float, float] = (2.0, 98.0)  # computed per band over all rasters
    keep_16bit: bool = False  # write 16-bit TIFF tiles instead of rescaling
    min_valid_share: float = 0.5  # a raster tile with a smaller share of valid pixels is skipped (the rest: ignored)
    jpeg_quality: int = 90
    png_level: int = 1  # zlib level 0-9: on aerial photos 1 is 5x faster than 6, files ~6 % larger
    retina: bool = False  # {r} -> "@2x" (set region.tile_size = 512 for such servers)
    headers: tuple[tuple[str, str], ...] = ()  # extra HTTP headers (e.g. Referer)
    #: the keys only a registered source of its own has (sorted ``(key, value)`` pairs); in the
    #: imagery digest only when set, so configs of the shipped sources keep their digests
    options: tuple[tuple[str, Any], ...] = field(default=(), metadata={"digest": "imagery"})
    #: names of the image bands in tile order (e.g. red, green, blue, nir) for the model card; they
    #: change no pixel, so they are in the export digest only, not the imagery's; () = red/green/blue
    #: for 3 bands, else band1..bandN
    band_names: tuple[str, ...] = field(default=(), metadata={"digest": "export"})

    def option(self, key: str, default: Any = None) -> Any:
        """The value of the source's own key ``key`` (``default`` when unset)."""
        return dict(self.options).get(key, default)


#: download settings that used to sit in ``[imagery]``; now operational (``configs/luigi.toml``)
OPERATIONAL_IMAGERY_KEYS = ("max_connections", "rate_limit_per_s", "retries", "timeout_s", "backoff_s",
                            "max_backoff_s", "user_agent")


def parse_imagery(path: Path, table: dict[str, Any]) -> ImageryConfig:
    """Parse and check the ``[imagery]`` table of config ``path``; errors name the key at fault."""
    moved = [k for k in OPERATIONAL_IMAGERY_KEYS if isinstance(table, dict) and k in table]
    if moved:
        raise ConfigError(
            f"{path}: imagery.{moved[0]}: download settings ({', '.join(moved)}) moved out of the region "
            "config (changing them must not redo tiles); delete them here and set them in configs/luigi.toml "
            "under [download] (or in the file LUIGI_CONFIG_PATH names)")
    sec = Section(path, "imagery", table)
    d = ImageryConfig(source="raster")
    source, loc, options = _source_keys(sec)
    bands = _bands(sec)
    rescale, pct = _value_ranges(sec, d)
    headers = _headers(sec)
    cfg = ImageryConfig(
        source=source, paths=loc.paths, url=loc.url, path=loc.path, cover_folder=loc.cover_folder,
        format=sec.choice("format", ("png", "jpg", "tif"), d.format),
        resampling=sec.choice("resampling", _RESAMPLING, d.resampling),
        bands=tuple(bands) if bands else None,
        nodata=sec.number("nodata", None),
        rescale=(float(rescale[0]), float(rescale[1])) if rescale else None,
        percentiles=(float(pct[0]), float(pct[1])),
        keep_16bit=sec.take("keep_16bit", bool, d.keep_16bit),
        min_valid_share=sec.number("min_valid_share", d.min_valid_share, lo=0, hi=1),
        jpeg_quality=sec.integer("jpeg_quality", d.jpeg_quality, lo=1, hi=100),
        png_level=sec.integer("png_level", d.png_level, lo=0, hi=9),
        retina=sec.take("retina", bool, d.retina),
        headers=tuple(sorted((str(k), str(v)) for k, v in headers.items())),
        options=tuple(sorted(options.items())),
        band_names=_band_names(sec),
    )
    sec.done()
    if cfg.keep_16bit and cfg.format != "tif":
        raise ConfigError(f"{sec.key('keep_16bit')} needs format = 'tif'")
    if cfg.band_names and cfg.bands is not None and len(cfg.band_names) != len(cfg.bands):
        raise ConfigError(f"{sec.key('band_names')} names {len(cfg.band_names)} bands but imagery.bands "
                          f"selects {len(cfg.bands)}; give one name per selected band, in tile order")
    if cfg.bands is not None and len(cfg.bands) not in (1, 3) and cfg.format != "tif":
        raise ConfigError(f"{sec.key('bands')} = {list(cfg.bands)}: {cfg.format} tiles take 1 or 3 bands; "
                          "use format = 'tif' for other band counts")
    return cfg


def _source_keys(sec: Section) -> tuple[str, Location, dict[str, Any]]:
    """``source`` (a registered one), the keys that say where tiles come from (``paths``,
    ``url``, ``path``, ``cover_folder``), each checked against the source, and the keys only the
    source has (its ``check`` takes them)."""
    source = sec.choice("source", source_names())
    loc = Location(paths=tuple(Path(p) for p in sec.strings("paths", [])), url=sec.take("url", str, None),
                   path=sec.take("path", str, None), cover_folder=sec.take("cover_folder", bool, False))
    src = get_source(source)
    check_location(sec, src, loc)
    return source, loc, src.check(sec, loc)


def _band_names(sec: Section) -> tuple[str, ...]:
    """``band_names``: distinct, non-empty names (``[]`` when absent)."""
    names = [n.strip() for n in sec.strings("band_names", [])]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"{sec.key('band_names')} = {names}: give distinct, non-empty names, e.g. "
                          "[\"red\", \"green\", \"blue\", \"nir\"]")
    return tuple(names)


def _bands(sec: Section) -> list[Any] | None:
    """``bands``: None, or a non-empty list of 1-based band numbers."""
    bands = sec.take("bands", list, None)
    if bands is not None and not (bands and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1
                                                for b in bands)):
        raise ConfigError(f"{sec.key('bands')} must be a non-empty list of 1-based band numbers, e.g. [4, 1, 2]")
    return bands


def _value_ranges(sec: Section, d: ImageryConfig) -> tuple[list[Any] | None, list[Any]]:
    """``rescale`` (None or [low, high]) and ``percentiles`` ([low, high] within [0, 100])."""
    rescale = sec.take("rescale", list, None)
    pct = sec.take("percentiles", list, list(d.percentiles))
    for k, pair in (("rescale", rescale), ("percentiles", pct)):
        if pair is not None and (len(pair) != 2 or not all(isinstance(v, (int, float)) for v in pair)
                                 or not pair[0] < pair[1]):
            raise ConfigError(f"{sec.key(k)} must be [low, high] with low < high")
    if not 0 <= pct[0] < pct[1] <= 100:
        raise ConfigError(f"{sec.key('percentiles')} = {pct}: both must lie in [0, 100]")
    return rescale, pct


def _headers(sec: Section) -> dict[Any, Any]:
    """``headers``: header name -> one-line string."""
    headers = sec.take("headers", dict, {})
    if not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{sec.key('headers')} must map header names to strings")
    for k, v in headers.items():
        if any(c in str(k) + v for c in "\r\n\0"):
            raise ConfigError(f"{sec.key('headers')}.{k} holds a line break (CR/LF) or NUL; "
                              "an HTTP header is one line: remove it")
    return headers
