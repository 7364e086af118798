"""The imagery sources the project ships, registered in :mod:`pipeline.imagery.registry`.

``raster`` (local GeoTIFF/COG), ``tiles`` (a local slippy-map folder), ``xyz`` and ``wms`` (tile
servers). Each is one :class:`~pipeline.imagery.registry.ImagerySource`; its shard maker imports
its libraries (rasterio, PIL, urllib3) only when a shard runs, so the config loader, which
imports this module to know the sources, stays light.

To add a source: write a module that calls ``register_source(ImagerySource(...))`` (see the
four below, or ``tests/test_registries.py`` for a source in a dozen lines) and add its import to
the list at the end of this file. Nothing else changes: config parsing, the stage digest, the
shard task, the manifests and the QGIS project all ask the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.imagery.registry import (
    ImagerySource,
    Location,
    Planner,
    ShardJob,
    ShardResult,
    get_source,
    register_source,
    source_names,
)

if TYPE_CHECKING:
    from pipeline.config.imagery import ImageryConfig
    from pipeline.config.section import Section
    from pipeline.tiles.tilemath import Tile

__all__ = ["describe_sources", "get_source", "source_names", "source_of"]


def source_of(icfg: ImageryConfig) -> ImagerySource:
    """The registered source of an ``[imagery]`` config."""
    return get_source(icfg.source)


def describe_sources() -> str:
    """One line per registered source, ``name: description`` (for docs and ``--help``)."""
    return "\n".join(f"{name}: {get_source(name).description}" for name in source_names())


# --- raster: local GeoTIFF/COG files in any CRS ------------------------------------------------

def _raster_shard(job: ShardJob) -> ShardResult:
    from pipeline.imagery.raster import raster_tiles

    return ShardResult(raster_tiles(job.plan, job.icfg, job.shard, job.tiles, job.size, job.out, job.progress))


def _raster_plan(icfg: ImageryConfig, tiles: Sequence[Tile], where: str) -> dict[str, Any]:
    from pipeline.imagery.raster_plan import check_coverage, plan_sources

    plan = plan_sources(icfg)
    share = check_coverage(plan, tiles, where)
    return {"plan": plan.to_json(), "coverage_share": round(share, 4)}


def _raster_load(body: Mapping[str, Any]) -> Any:
    from pipeline.imagery.raster_plan import RasterPlan

    return RasterPlan.from_json(dict(body["plan"]))


def _raster_inputs(icfg: ImageryConfig) -> list[Path]:
    return list(icfg.paths)


RASTER = ImagerySource(
    "raster", "local GeoTIFF/COG orthophotos (`paths`, any CRS, the first on top), cut into tiles",
    _raster_shard, lambda icfg: {"type": "raster", "paths": [str(p) for p in icfg.paths]},
    keys=("paths",), required=("paths",), inputs=_raster_inputs, planner=Planner(_raster_plan, _raster_load),
    shows_inputs=True, imports=("pipeline.imagery.raster",))


# --- tiles: a local slippy-map folder ----------------------------------------------------------

def _folder_shard(job: ShardJob) -> ShardResult:
    from pipeline.imagery.folder import folder_shard

    out = job.out
    records = folder_shard(job.icfg, job.tiles, job.size, out.root, out.scratch, job.progress)
    for r in records:  # the folder reader wrote its files through the writer's scratch folder
        out.adopt(r.tile, r.status, r.ext, r.size, r.sha256, r.valid_share)
    return ShardResult(records)


def _folder_check(sec: Section, loc: Location) -> dict[str, Any]:
    from pipeline.imagery.template import check_folder_template

    check_folder_template(sec, loc.path or "")
    return {}


def _folder_inputs(icfg: ImageryConfig) -> list[Path]:
    # the folder: its own entry (a file added or removed at its top changes it)
    return [Path(icfg.path)] if icfg.path else []


TILES = ImagerySource(
    "tiles", "a local folder of slippy-map tiles (`path`: z/x/y.<ext> or a {z}/{x}/{y} template)",
    _folder_shard, lambda icfg: {"type": "tiles", "path": str(icfg.path)},
    keys=("path", "cover_folder"), required=("path",),
    hints={"path": "a folder of z/x/y.png|jpg or a template like 'tiles/{z}/{x}/{y}.png'"},
    check=_folder_check, inputs=_folder_inputs, imports=("pipeline.imagery.folder",))


# --- xyz, wms: tile servers --------------------------------------------------------------------

def _server_shard(job: ShardJob) -> ShardResult:
    from pipeline.imagery.xyz import FetchRun, fetch_tiles

    out = job.out
    records, stats = fetch_tiles(job.icfg, job.tiles, job.size, out.root, out.scratch,
                                 FetchRun(reuse=out.resumable, progress=job.progress, shard=job.shard),
                                 download=job.download)
    for r in records:  # the downloader wrote its files through the writer's scratch folder
        out.adopt(r.tile, r.status, r.ext, r.size, r.sha256, r.valid_share)
    return ShardResult(records, stats.as_dict())


def _server_describe(icfg: ImageryConfig) -> dict[str, Any]:
    from pipeline.imagery.common import redact_url

    return {"type": icfg.source, "url": redact_url(icfg.url or "")}


def _xyz_check(sec: Section, loc: Location) -> dict[str, Any]:
    from pipeline.imagery.template import check_url_template

    check_url_template(sec, loc.url or "", "xyz")
    return {}


def _wms_check(sec: Section, loc: Location) -> dict[str, Any]:
    from pipeline.imagery.template import check_url_template

    check_url_template(sec, loc.url or "", "wms")
    return {}


XYZ = ImagerySource(
    "xyz", "an XYZ/TMS/quadkey tile server (`url` with {z} {x} {y}, {-y}, {quadkey}, {r})",
    _server_shard, _server_describe, keys=("url",), required=("url",), check=_xyz_check, downloads=True,
    imports=("pipeline.imagery.xyz", "pipeline.imagery.fetch"))
WMS = ImagerySource(
    "wms", "a WMS (`url`: a GetMap template with {bbox} in EPSG:3857, {width} and {height} in pixels)",
    _server_shard, _server_describe, keys=("url",), required=("url",), check=_wms_check, downloads=True,
    imports=("pipeline.imagery.xyz", "pipeline.imagery.fetch"))

# in the order ``--help`` and config errors list them
for _source in (RASTER, XYZ, WMS, TILES):
    register_source(_source)

# --- more sources: one import line each, below (the module calls register_source), e.g.
# ``from pipeline.imagery import stac`` (with a noqa for E402 and F401)
