"""The finishing step of both label sources, OSM extracts (:mod:`pipeline.labels.osm`) and vector files
(:mod:`pipeline.labels.vector`): rows of (feature, class it matches) -> the features frame of
``features.parquet`` (:data:`pipeline.labels.features.FEATURE_COLUMNS` + geometry, EPSG:4326).

:func:`finalise` repairs invalid area geometries (``shapely.make_valid``, polygonal parts only),
drops rows without geometry or with nothing polygonal left after repair, writes each row's tags
as JSON, sorts the rows by (class_id, osm_type, osm_id) and counts them per class.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np
import shapely

from pipeline.config.region import ClassSpec
from pipeline.labels.features import FEATURE_COLUMNS
from pipeline.tiles.geo import polygonal_part

if TYPE_CHECKING:
    import geopandas as gpd

CRS = "EPSG:4326"


class LabelRows(NamedTuple):
    """Feature rows before :func:`finalise`, one per (feature, class it matches)."""

    osm_type: np.ndarray  # object (str): "way"/"relation", or the label file's name
    osm_id: np.ndarray  # int64
    cls: np.ndarray  # intp: index of the row's class in the classes given to finalise
    buffer_m: np.ndarray  # float64, ground metres
    tags: np.ndarray  # object: per row a dict of tag values (equal ones may share a dict; JSON is cached per dict)
    geometry: np.ndarray  # object: shapely geometries in EPSG:4326, None where none could be built

    @classmethod
    def concat(cls, parts: Sequence[LabelRows]) -> LabelRows:
        """The rows of ``parts``, in order (no rows, with the columns' types, when no parts)."""
        if not parts:
            def objects() -> np.ndarray:
                return np.empty(0, dtype=object)

            return cls(objects(), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.intp),
                       np.empty(0, dtype=np.float64), objects(), objects())
        return cls(*(np.concatenate(cols) for cols in zip(*parts)))


class FinishStats(Protocol):
    """What :func:`finalise` counts (fields of ``osm.ExtractStats`` and ``labels.LabelStats``)."""

    repaired: int  # invalid polygons made valid (rows)
    dropped_invalid: int  # rows dropped: no geometry, or nothing polygonal left after repair
    rows_per_class: dict[str, int]  # output rows per class name


def finalise(rows: LabelRows, classes: Sequence[ClassSpec], stats: FinishStats) -> gpd.GeoDataFrame:
    """``rows`` -> GeoDataFrame (EPSG:4326, columns FEATURE_COLUMNS + geometry): area geometries
    repaired (in place in ``rows.geometry``), rows without geometry dropped, tags as JSON, rows
    sorted by (class_id, osm_type, osm_id), equal keys in the order given."""
    import geopandas as gpd

    specs = tuple(classes)
    geoms = rows.geometry
    is_area = np.array([c.kind == "area" for c in specs] + [False], dtype=bool)[rows.cls]
    keep = repair_areas(geoms, is_area, stats)
    class_id = np.array([c.id for c in specs] + [0], dtype=np.uint8)[rows.cls]
    order = np.lexsort((rows.osm_id, rows.osm_type.astype(str), class_id))
    order = order[keep[order]]
    data = {
        "osm_type": rows.osm_type[order],
        "osm_id": rows.osm_id[order],
        "class": np.array([c.name for c in specs] + [""], dtype=object)[rows.cls[order]],
        "class_id": class_id[order],
        "buffer_m": rows.buffer_m[order],
        "tags": tags_json(rows.tags[order], rows.cls[order], specs),
    }
    gdf = gpd.GeoDataFrame(data, geometry=gpd.GeoSeries(geoms[order], crs=CRS), crs=CRS)
    stats.rows_per_class = {c.name: int((gdf["class"] == c.name).sum()) for c in specs}
    return gdf[[*FEATURE_COLUMNS, "geometry"]]


def repair_areas(geoms: np.ndarray, is_area: np.ndarray, stats: FinishStats) -> np.ndarray:
    """Make invalid area geometries valid in place (polygonal parts only); returns a keep mask
    (False: no geometry, or nothing polygonal left after repair)."""
    keep = ~shapely.is_missing(geoms)
    stats.dropped_invalid += int((~keep).sum())
    bad = np.flatnonzero(keep & is_area & ~shapely.is_valid(geoms))
    if len(bad):
        fixed = shapely.make_valid(geoms[bad], method="structure", keep_collapsed=False)
        fixed = np.array([*(polygonal_part(g) for g in fixed), None], dtype=object)[:-1]
        empty = shapely.is_empty(fixed)
        geoms[bad] = fixed
        keep[bad[empty]] = False
        stats.repaired += int((~empty).sum())
        stats.dropped_invalid += int(empty.sum())
    return keep


def tags_json(tags: np.ndarray, cls: np.ndarray, specs: tuple[ClassSpec, ...]) -> np.ndarray:
    """Per row: a sort_keys JSON object of the tags whose keys its class keeps (``tag_keys``).
    Rows with equal tag values may share one dict, so the text is cached per (class, dict)."""
    cache: dict[tuple[int, int], str] = {}
    out = np.empty(len(tags), dtype=object)
    for r, (sub, i) in enumerate(zip(tags, cls.tolist())):
        text = cache.get((i, id(sub)))
        if text is None:
            text = json.dumps({k: sub[k] for k in specs[i].tag_keys if k in sub}, sort_keys=True)
            cache[(i, id(sub))] = text
        out[r] = text
    return out
