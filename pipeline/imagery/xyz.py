"""XYZ / TMS / quadkey tile servers: URL templates and downloading a shard's tiles.

A template holds ``{z} {x} {y}`` (slippy-map rows from the north), ``{-y}`` (TMS rows from the
south), ``{quadkey}`` (Bing) and ``{r}`` (``@2x`` when ``retina``), plus ``${NAME}`` references to
environment variables for API keys. The tiles are the slippy-map tiles of
:mod:`pipeline.tiles`, so their pixels line up with the masks of the same ``z/x/y``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from pipeline.config import ImageryConfig
from pipeline.errors import ConfigError
from pipeline.imagery.common import TileRecord, redact_url
from pipeline.imagery.download import DownloadOptions, FetchOptions, FetchStats
from pipeline.imagery.fetch import Downloader
from pipeline.tiles import Tile, quadkey


def xyz_url(template: str, tile: Tile, retina: bool = False) -> str:
    """Fill an XYZ/TMS/quadkey URL template for ``tile``."""
    out = (template.replace("{z}", str(tile.z)).replace("{x}", str(tile.x)).replace("{y}", str(tile.y))
           .replace("{-y}", str((1 << tile.z) - 1 - tile.y)).replace("{quadkey}", quadkey(tile))
           .replace("{r}", "@2x" if retina else ""))
    return out


def url_function(icfg: ImageryConfig, size: int) -> Callable[[Tile], str]:
    """``tile -> URL`` for an ``xyz`` or ``wms`` config (``size``: tile side in pixels)."""
    if icfg.url is None:
        raise ConfigError("[imagery] url is required for a tile server")
    template = icfg.url
    if icfg.source == "wms":
        from pipeline.imagery.wms import wms_url

        return lambda t: wms_url(template, t, size)
    retina = icfg.retina
    return lambda t: xyz_url(template, t, retina)


def fetch_tiles(icfg: ImageryConfig, tiles: Sequence[Tile], size: int, out_root: Path, scratch: Path,
                reuse: bool = False, progress: Callable[[int, int], None] | None = None,
                seed: int | None = None, download: DownloadOptions | None = None, shard: str = "",
                ) -> tuple[list[TileRecord], FetchStats]:
    """Download ``tiles`` from the server of an ``xyz`` or ``wms`` config into
    ``out_root/z/x/y.<ext>``; returns a record per tile and the request counts. ``download``:
    the operational settings (connections, retries, timeouts; defaults when None); ``shard``
    names the batch in messages. Raises TileServerError (redacted) after trying every tile if
    some kept failing, or when the server had none of them (unless ``allow_empty_shards``)."""
    opts = replace(FetchOptions.from_config(icfg, size, download), seed=seed)
    dl = Downloader(url_function(icfg, size), opts, source=redact_url(icfg.url or ""))
    records = dl.run(tiles, out_root, scratch, reuse=reuse, progress=progress, shard=shard)
    return records, dl.stats
