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


class ContextAreas:
    """The context areas (EPSG:4326 polygons) with their spatial index, built once per region
    and asked for the share of every batch of candidates (the comparison and each round of the
    gap simulation)."""

    def __init__(self, areas: np.ndarray) -> None:
        self.areas = shapely.make_valid(np.asarray(areas, dtype=object)) if len(areas) else np.empty(0, dtype=object)
        self.tree = shapely.STRtree(self.areas)

    def share(self, geoms: np.ndarray) -> np.ndarray:
        """Per geometry, the share of its area inside the areas (0 where none lies, or for an
        empty geometry); overlapping areas are united only where a geometry meets several."""
        geoms = np.asarray(geoms, dtype=object)
        out = np.zeros(len(geoms))
        if not len(geoms) or not len(self.areas):
            return out
        gi, ai = self.tree.query(geoms, predicate="intersects")
        if not len(gi):
            return out
        order = np.argsort(gi, kind="stable")
        gi, ai = gi[order], ai[order]
        cut = np.r_[0, np.flatnonzero(np.diff(gi)) + 1]
        hit = gi[cut]
        cover = np.empty(len(hit), dtype=object)
        one = np.diff(np.r_[cut, len(gi)]) == 1
        cover[one] = self.areas[ai[cut[one]]]
        for k in np.flatnonzero(~one):
            cover[k] = shapely.union_all(self.areas[ai[cut[k]:(cut[k + 1] if k + 1 < len(cut) else len(gi))]])
        area = shapely.area(geoms[hit])
        inside = shapely.area(shapely.intersection(geoms[hit], cover))
        ok = area > 0
        out[hit[ok]] = np.clip(inside[ok] / area[ok], 0.0, 1.0)
        return np.round(out, 4)

