"""XYZ / TMS / quadkey tile servers: URL templates and downloading a shard's tiles.

A template holds ``{z} {x} {y}`` (slippy-map rows from the north), ``{-y}`` (TMS rows from the
south), ``{quadkey}`` (Bing) and ``{r}`` (``@2x`` when ``retina``), plus ``${NAME}`` references to
environment variables for API keys. The tiles are the slippy-map tiles of
:mod:`pipeline.tiles.tilemath`, so their pixels line up with the masks of the same ``z/x/y``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.core.errors import ConfigError
from pipeline.imagery.common import TileRecord, redact_url
from pipeline.imagery.download import DownloadOptions, FetchOptions, FetchStats
from pipeline.imagery.fetch import Downloader
from pipeline.tiles.tilemath import Tile, quadkey

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig


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


@dataclass(frozen=True)
class FetchRun:
    """How one download run goes: ``reuse`` keeps verified tiles already on disk, ``progress``
    (done, total) is called as tiles arrive, ``shard`` names the batch in messages, ``seed``
    seeds the retry jitter (None: from the OS)."""

    reuse: bool = False
    progress: Callable[[int, int], None] | None = None
    shard: str = ""
    seed: int | None = None


def fetch_tiles(icfg: ImageryConfig, tiles: Sequence[Tile], size: int, out_root: Path, scratch: Path,
                run: FetchRun | None = None, download: DownloadOptions | None = None,
                ) -> tuple[list[TileRecord], FetchStats]:
    """Download ``tiles`` from the server of an ``xyz`` or ``wms`` config into
    ``out_root/z/x/y.<ext>``; returns a record per tile and the request counts. ``run``: reuse,
    progress, shard name and jitter seed (:class:`FetchRun`; defaults when None); ``download``:
    the operational settings (connections, retries, timeouts; defaults when None). Raises
    TileServerError (redacted) after trying every tile if some kept failing, or when the server
    had none of them (unless ``allow_empty_shards``)."""
    run = run or FetchRun()
    opts = replace(FetchOptions.from_config(icfg, size, download), seed=run.seed)
    dl = Downloader(url_function(icfg, size), opts, source=redact_url(icfg.url or ""))
    records = dl.run(tiles, out_root, scratch, reuse=run.reuse, progress=run.progress, shard=run.shard)
    return records, dl.stats
