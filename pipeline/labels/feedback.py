"""Mapper feedback for the masks: ``[labels] negatives`` and ``[labels] ignore``.

A reviewed candidate list (candidates rejected in JOSM, QGIS or MapRoulette, exported as
GeoJSON, GeoPackage, ...) says where the imagery shows no class: those areas are burnt as
background (0) over everything the labels burnt, and ``ignore`` areas as the ignore value (255)
last, so the next training neither learns the rejected shapes nor is scored on unsure ones.
A rejected candidate mostly lies where the labels have no feature (background already), so the
masks alone teach nothing new: training also weighs the negatives' pixels ``[train]
negatives_weight`` in its loss (hard negatives, :mod:`pipeline.model.negatives`).

Files are read with pyogrio in their own CRS (or ``[labels] crs`` when they declare none; a
GeoJSON without a ``crs`` member is EPSG:4326) and only their polygons are kept (repaired when
invalid); points and lines mark no area and are skipped with a warning. A missing file, one GDAL
cannot read, one without CRS or without any polygon is an error naming the key and the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely

from pipeline.config.labels import LabelsConfig
from pipeline.core.errors import InputDataError, MissingInputError
from pipeline.tiles.geo import polygonal_part

log = logging.getLogger(__name__)

#: mask value of each feedback key, in burn order (ignore last: it wins where both lie)
FEEDBACK_VALUES = (("negatives", 0), ("ignore", 255))


@dataclass(frozen=True)
class Feedback:
    """Feedback areas ready to burn: EPSG:4326 polygons and their mask value (0 or 255), in burn order."""

    geoms: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.geoms)


_CACHE: dict[tuple[object, ...], Feedback] = {}


def load_feedback(lcfg: LabelsConfig) -> Feedback | None:
    """The ``negatives`` and ``ignore`` areas of ``[labels]``, or None when it names none.
    Read once per process and file state (a shard task of the same run reuses them)."""
    if not lcfg.negatives and not lcfg.ignore:
        return None
    key = (lcfg.crs, *[(k, str(p), _stamp(p)) for k, _ in FEEDBACK_VALUES for p in getattr(lcfg, k)])
    got = _CACHE.get(key)
    if got is None:
        geoms: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for k, value in FEEDBACK_VALUES:
            for p in getattr(lcfg, k):
                g = read_areas(Path(p), f"[labels] {k}", lcfg.crs)
                geoms.append(g)
                values.append(np.full(len(g), value, dtype=np.uint8))
        got = Feedback(np.concatenate(geoms), np.concatenate(values))
        _CACHE.clear()
        _CACHE[key] = got
    return got


def _stamp(p: Path) -> tuple[int, int]:
    try:
        st = Path(p).stat()
    except OSError:
        return (-1, -1)
    return (st.st_size, st.st_mtime_ns)


def read_areas(path: Path, key: str, crs: str | None = None) -> np.ndarray:
    """The polygons of vector file ``path`` in EPSG:4326 (an object array of shapely geometries);
    ``key`` (e.g. ``"[labels] negatives"``) names the config key in errors; ``crs`` applies to a
    file that declares none."""
    import pyogrio
    import pyproj

    if not path.is_file():
        raise MissingInputError(f"{key}: {path}: no such file — export the reviewed areas there (GeoJSON, "
                                "GeoPackage, ...) or remove it from the list")
    try:
        info = pyogrio.read_info(path)
        df = pyogrio.read_dataframe(path, columns=[], force_2d=True, on_invalid="ignore")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError, ValueError) as exc:
        why = (str(exc).strip().splitlines() or [""])[0][:160]
        raise InputDataError(f"{key}: {path}: not a vector file GDAL can read ({why}); give polygons as "
                             "GeoJSON, GeoPackage, Shapefile or FlatGeobuf") from exc
    src = info["crs"] or crs
    if src is None:
        raise InputDataError(f"{key}: {path}: the file declares no CRS; add one to the file or set "
                             '[labels] crs (e.g. "EPSG:4326")')
    geoms = np.asarray(df.geometry.array, dtype=object)
    geoms = geoms[~shapely.is_missing(geoms)]
    polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))
    if not polygonal.any():
        raise InputDataError(f"{key}: {path}: no polygons ({len(geoms)} feature(s) of other kinds); the areas "
                             "to burn must be polygons (outline each rejected candidate)")
    if not polygonal.all():
        log.warning("%s: %s: %d point/line feature(s) skipped (they mark no area)", key, path,
                    int((~polygonal).sum()))
    geoms = geoms[polygonal]
    wgs84 = pyproj.CRS.from_epsg(4326)
    if not pyproj.CRS.from_user_input(src).equals(wgs84, ignore_axis_order=True):
        tr = pyproj.Transformer.from_crs(src, "EPSG:4326", always_xy=True)

        def fwd(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        geoms = shapely.transform(geoms, fwd)
    coords = shapely.get_coordinates(geoms)
    if not (np.isfinite(coords).all() and (np.abs(coords[:, 0]) <= 180).all() and (np.abs(coords[:, 1]) <= 90).all()):
        raise InputDataError(f"{key}: {path}: coordinates outside longitude/latitude once read in {src} "
                             "(projected coordinates without a declared CRS?); declare the file's CRS or set "
                             "[labels] crs")
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms[bad] = [polygonal_part(g) for g in shapely.make_valid(geoms[bad])]
        geoms = geoms[~shapely.is_empty(geoms)]
    return geoms
