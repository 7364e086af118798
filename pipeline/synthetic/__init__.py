"""A generated sample region: a small synthetic town, its OSM extract, an aerial orthophoto,
and the truth of which buildings OSM lacks.

Deterministic from :class:`~pipeline.config.region.SyntheticConfig` (same seed and parameters, same
bytes). The orthophoto is a JPEG COG in the UTM zone of the town's centre (so the pipeline
must reproject it to web-mercator tiles); the OSM file leaves out ``share_missing`` of the
buildings the image shows, keeps ``share_demolished`` buildings the image no longer shows, and
maps ``share_offset`` of them 1-2 m off. ``truth.geojson`` lists every building with its status.
About a quarter of the building area is in dense quarters (:mod:`~pipeline.synthetic.dense`):
terraced rows and perimeter blocks around courtyards, whose buildings share walls; each is its
own OSM way and its own roof in the image, told apart by a slightly different tone and a faint
line along the party wall.

Public API: :func:`make_town`, :func:`write_sample_region`, :func:`sample_paths`,
:func:`check_sample_outputs`,
:func:`building_footprint`, :class:`Town`, :class:`Scene`, :func:`utm_epsg`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from pipeline.config.region import RegionConfig, SyntheticConfig
from pipeline.core.errors import ConfigError
from pipeline.synthetic.generate import image_frame, make_town, utm_epsg
from pipeline.synthetic.model import STATUSES, Building, Town
from pipeline.synthetic.ortho import write_orthophoto
from pipeline.synthetic.osmfile import write_osm
from pipeline.synthetic.render import Scene
from pipeline.synthetic.truth import write_truth

TRUTH_NAME = "truth.geojson"


def sample_paths(cfg: RegionConfig) -> tuple[Path, Path, Path]:
    """(OSM PBF, orthophoto, truth GeoJSON) paths of a region with a ``[synthetic]`` section:
    ``[osm] path``, the first ``[imagery] paths`` entry, and ``<data_dir>/truth.geojson``."""
    if cfg.synthetic is None:
        raise ConfigError(f"{cfg.path}: no [synthetic] section; add one to generate a sample region")
    if cfg.imagery is None or cfg.imagery.source != "raster" or not cfg.imagery.paths:
        raise ConfigError(f"{cfg.path}: [imagery] must have source = 'raster' and paths = [<orthophoto.tif>] "
                          "for a synthetic region")
    if cfg.osm is None:
        raise ConfigError(f"{cfg.path}: a synthetic region needs [osm] path (where its .osm.pbf is written)")
    return cfg.osm.path, cfg.imagery.paths[0], cfg.data_dir / TRUTH_NAME


def check_sample_outputs(cfg: RegionConfig, own: set[Path]) -> None:
    """Refuse to overwrite a file outside the region's ``data_dir`` that this region did not
    write (``own``: the files its previous sample manifest lists): a copied config whose ``[osm]
    path`` still points into another region would otherwise rewrite that region's inputs."""
    root = cfg.data_dir.resolve()
    mine = {p.resolve() for p in own}
    for p in sample_paths(cfg):
        full = Path(p).resolve()
        if full.is_relative_to(root) or not full.exists() or full in mine:
            continue
        key = "[osm] path" if Path(p) == (cfg.osm.path if cfg.osm else None) else "[imagery] paths[0]"
        raise ConfigError(f"{cfg.path}: {key} {p} lies outside this region's data_dir {cfg.data_dir} and "
                          "was not written by it (another region's input?); point it into "
                          f"{cfg.data_dir} or delete {p} to let this region generate it")


def write_sample_region(syn: SyntheticConfig, osm_path: str | Path, ortho_path: str | Path,
                        truth_path: str | Path) -> dict[Path, int]:
    """Generate the town for ``syn`` and write its three files, each atomically; returns
    ``{path: size in bytes}``."""
    town = make_town(syn)
    osm_ids = write_osm(town, osm_path)
    write_truth(town, osm_ids, truth_path)
    write_orthophoto(Scene(town), ortho_path, syn.jpeg_quality)
    return {Path(p): Path(p).stat().st_size for p in (osm_path, ortho_path, truth_path)}


def building_footprint(town: Town, scene: Scene | None = None) -> NDArray[np.int32]:
    """The renderer's building raster on the orthophoto's grid (``town.utm_transform``, EPSG
    ``town.epsg``): each pixel holds the ``Building.id`` whose roof was drawn there, 0 elsewhere."""
    scene = scene or Scene(town)
    return scene.footprint(0, 0, town.size_px, town.size_px)


__all__ = [
    "STATUSES",
    "TRUTH_NAME",
    "Building",
    "Scene",
    "Town",
    "building_footprint",
    "image_frame",
    "make_town",
    "sample_paths",
    "utm_epsg",
    "write_sample_region",
]
