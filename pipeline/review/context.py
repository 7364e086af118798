"""The OSM context of a change candidate: the areas where no building stands (water).

A missing-in-OSM candidate that lies on a mapped pond is the model taking dark water for a roof,
not a building OSM lacks (the demo's most confident false candidate before scores existed). The
areas are read from the region's OSM extract with the extraction's own reader
(:func:`pipeline.labels.osm.extract_features`, one pass, tags of ``[compare] context_tags``) and
the share of each candidate on them scales its evidence
(:func:`pipeline.review.candidates.missing_evidence`). Geometries are EPSG:4326; shares are
ratios of areas in degrees, which at a candidate's size equal the ground ratios.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import shapely


def context_areas(pbf: Path, tags: Sequence[str]) -> np.ndarray:
    """The polygons (EPSG:4326) of the OSM extract ``pbf`` that match one of the tag filters
    ``tags`` (``key``, ``key=value``, ``key=v1|v2``); empty without tags."""
    if not tags:
        return np.empty(0, dtype=object)
    from pipeline.config.classes import ClassSpec
    from pipeline.labels.osm import extract_features
    from pipeline.labels.tags import TagFilter

    spec = ClassSpec("context", 1, "area", 0, tuple(TagFilter.parse(t, "[compare] context_tags") for t in tags))
    return np.asarray(extract_features(Path(pbf), (spec,)).geometry.to_numpy(), dtype=object)


def context_share(geoms: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Per geometry of ``geoms``, the share of its area inside ``areas`` (0 where none lies, or
    for an empty geometry); only the areas near ``geoms`` are united."""
    out = np.zeros(len(geoms))
    if not len(geoms) or not len(areas):
        return out
    geoms = np.asarray(geoms, dtype=object)
    tree = shapely.STRtree(areas)
    near = tree.query(shapely.box(*shapely.total_bounds(geoms)))
    if not len(near):
        return out
    union = shapely.union_all(shapely.make_valid(areas[near]))
    area = shapely.area(geoms)
    inside = shapely.area(shapely.intersection(geoms, union))
    ok = area > 0
    out[ok] = np.clip(inside[ok] / area[ok], 0.0, 1.0)
    return np.round(out, 4)
