"""The registry of imagery sources: ``[imagery] source = "<name>"`` names one :class:`ImagerySource`.

A source is one object that says everything the pipeline asks about it: the keys it takes and
how they are checked (config parsing), how one shard of tiles is made, which files its digest
fingerprints, whether it downloads (a Luigi resource per server; tiles a server lacked are
asked again later) or plans its inputs once per region, what QGIS shows beside its tiles, and a
one-line description for the docs and ``--help``. Nothing else in the project compares the
``source`` string: it asks :func:`get_source`.

Adding a source is one module that calls :func:`register_source` and one import line in
:mod:`pipeline.imagery.sources` (see there). This module imports nothing heavy: the config
loader reads it; shard makers import their libraries when they run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig
    from pipeline.config.section import Section
    from pipeline.imagery.common import TileRecord
    from pipeline.tiles.tilemath import Tile
    from pipeline.tiles.writer import ShardWriter

#: the keys of ``[imagery]`` that say where tiles come from; a source takes some of them
LOCATION_KEYS = ("path", "cover_folder", "paths", "url")


@dataclass(frozen=True)
class Location:
    """The location keys of an ``[imagery]`` table as parsed: ``paths`` (files), ``url`` (a
    server's template), ``path`` (a folder or path template), ``cover_folder``."""

    paths: tuple[Path, ...] = ()
    url: str | None = None
    path: str | None = None
    cover_folder: bool = False

    def given(self, key: str) -> bool:
        """True when ``key`` (one of :data:`LOCATION_KEYS`) is set in the table."""
        return getattr(self, key) not in (None, (), False)


@dataclass(frozen=True)
class ShardResult:
    """Records of every tile of a shard (in tile-list order) and request counts (downloads)."""

    records: list[TileRecord]
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ShardJob:
    """One shard to make: the source's config, its region plan (None unless the source plans),
    the shard's quadkey and tiles, the tile side in pixels, the shard's tile writer ``out``
    (files go through ``out``, or through ``out.scratch`` and then ``out.adopt``), progress
    (done, total) and the operational download settings (None: defaults)."""

    icfg: ImageryConfig
    plan: Any
    shard: str
    tiles: Sequence[Tile]
    size: int
    out: ShardWriter
    progress: Callable[[int, int], None] | None = None
    download: Any = None


@dataclass(frozen=True)
class Planner:
    """A source that inspects its inputs once per region (task ``ImageryPlan``): ``make``
    (config, the region's tiles, the config file's name) -> the plan's JSON body; ``load`` (that
    body) -> the plan object shard makers get as ``ShardJob.plan``."""

    make: Callable[[ImageryConfig, Sequence[Tile], str], dict[str, Any]]
    load: Callable[[Mapping[str, Any]], Any]


def _no_options(sec: Section, loc: Location) -> dict[str, Any]:
    return {}


def _no_inputs(icfg: ImageryConfig) -> list[Path]:
    return []


@dataclass(frozen=True)
class ImagerySource:
    """One imagery source.

    * ``name``: the value of ``[imagery] source``; ``description``: one line for docs and --help;
    * ``keys``: the :data:`LOCATION_KEYS` it takes (any other one set is an error naming the
      sources that take it); ``required``: those it needs, with ``hints`` appended to the error;
    * ``check(section, location)``: further checks of its keys; takes (``section.take``) and
      returns the keys only this source has (stored in ``ImageryConfig.options``);
    * ``make_shard(job) -> ShardResult``: the tiles of one shard;
    * ``inputs(icfg)``: the files whose fingerprints enter the imagery digest;
    * ``describe(icfg)``: the source as shard manifests record it (no secrets);
    * ``downloads``: tiles come from a server (one Luigi resource per host; tiles it lacked are
      asked again after ``[download] refetch_missing_after_days``);
    * ``planner``: its inputs are inspected once per region (None: no plan);
    * ``shows_inputs``: the QGIS project shows its input files (rasters) beside the tiles;
    * ``tile_exts``: the tile file extensions it writes (None: any of ``common.TILE_EXTS``);
    * ``imports``: the modules ``make_shard`` imports (loaded by the scheduling process before it
      forks the shard processes: ``tasks.base.preload``).
    """

    name: str
    description: str
    make_shard: Callable[[ShardJob], ShardResult]
    describe: Callable[[ImageryConfig], dict[str, Any]]
    keys: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    hints: Mapping[str, str] = field(default_factory=dict)
    check: Callable[[Section, Location], dict[str, Any]] = _no_options
    inputs: Callable[[ImageryConfig], list[Path]] = _no_inputs
    downloads: bool = False
    planner: Planner | None = None
    shows_inputs: bool = False
    tile_exts: tuple[str, ...] | None = None
    imports: tuple[str, ...] = ()


#: every source by name, in the order they were registered (the order ``--help`` lists them)
SOURCES: dict[str, ImagerySource] = {}


def register_source(source: ImagerySource) -> ImagerySource:
    """Add (or replace) ``source`` in the registry; returns it."""
    unknown = sorted(set(source.keys) - set(LOCATION_KEYS)) + sorted(set(source.required) - set(source.keys))
    if unknown:
        raise ValueError(f"imagery source {source.name!r}: keys {unknown} are not location keys it takes")
    SOURCES[source.name] = source
    return source


def unregister_source(name: str) -> None:
    """Remove source ``name`` (tests that register their own clean up with this)."""
    SOURCES.pop(name, None)


def source_names() -> tuple[str, ...]:
    """The registered source names, in registration order."""
    return tuple(SOURCES)


def get_source(name: str) -> ImagerySource:
    """The registered source ``name``; ConfigError naming the known ones otherwise."""
    if name in SOURCES:
        return SOURCES[name]
    raise ConfigError(f"imagery source {name!r} is not registered; known: {', '.join(SOURCES)}")


def check_location(sec: Section, src: ImagerySource, loc: Location) -> None:
    """The location keys set in ``sec`` are those ``src`` takes, and those it needs are set."""
    for key in LOCATION_KEYS:
        if loc.given(key) and key not in src.keys:
            owners = " or ".join(repr(s.name) for s in SOURCES.values() if key in s.keys)
            raise ConfigError(f"{sec.key(key)} is only for source = {owners}; remove it or change source")
        if not loc.given(key) and key in src.required:
            hint = src.hints.get(key)
            raise ConfigError(f"{sec.key(key)} is required when source = {src.name!r}" + (f" ({hint})" if hint else ""))
