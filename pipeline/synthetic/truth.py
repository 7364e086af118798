"""Write ``truth.geojson``: every building of the town with its status, then the roads that are
missing from OSM or gone from the image (RFC 7946, lon/lat).

Building rows carry no ``class`` (they are the truth's buildings, as they always were); road rows
carry ``class: "road"``. Readers that want buildings only keep the rows without a class or
with ``class == "building"`` (:func:`is_building`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer

from pipeline.core.atomic import atomic_write_bytes
from pipeline.synthetic.model import Town
from pipeline.synthetic.osmfile import OsmIds


def is_building(props: dict[str, Any]) -> bool:
    """True for a building row of ``truth.geojson`` (from its properties)."""
    return props.get("class", "building") == "building"


def truth_features(town: Town, osm_ids: OsmIds) -> list[dict[str, Any]]:
    """One GeoJSON feature per building: its geometry as the image shows it (demolished ones:
    as OSM has them), in EPSG:4326 with 7 decimals, and properties ``id``, ``status``,
    ``offset_m`` (and ``offset_east_m``/``offset_north_m``), ``osm_type``, ``osm_id``,
    ``shape``, ``building`` and ``height_m``; then one per road that OSM lacks
    (``missing_in_osm``) or the image no longer shows (``demolished``): its centreline, with
    ``id`` (``road-<n>``), ``class`` (``road``), ``status``, ``osm_type``, ``osm_id``
    (None when OSM lacks it), ``highway``, ``name`` and ``length_m`` (ground metres)."""
    tr = Transformer.from_crs(town.epsg, 4326, always_xy=True)

    def to_lonlat(xy: np.ndarray) -> np.ndarray:
        lon, lat = tr.transform(xy[:, 0] + town.left, xy[:, 1] + town.bottom)
        return np.round(np.column_stack([lon, lat]), 7)

    feats = []
    for b in town.buildings:
        geom = shapely.orient_polygons(shapely.transform(b.geom, to_lonlat))
        osm_type, osm_id = osm_ids.buildings.get(b.id, (None, None))
        dx, dy = b.offset
        feats.append({
            "type": "Feature",
            "id": b.id,
            "properties": {
                "id": b.id, "status": b.status, "offset_m": round(math.hypot(dx, dy), 3),
                "offset_east_m": dx, "offset_north_m": dy, "osm_type": osm_type, "osm_id": osm_id,
                "shape": b.shape, "building": b.use, "height_m": b.height_m,
            },
            "geometry": shapely.geometry.mapping(geom),
        })
    for k, r in enumerate(town.roads):
        if r.status == "mapped":
            continue
        way = osm_ids.roads.get(k)
        rid = f"road-{k + 1}"
        feats.append({
            "type": "Feature",
            "id": rid,
            "properties": {
                "id": rid, "class": "road", "status": r.status, "osm_type": None if way is None else "way",
                "osm_id": way, "highway": r.highway, "name": r.name, "length_m": round(float(r.line.length), 2),
            },
            "geometry": shapely.geometry.mapping(shapely.transform(r.line, to_lonlat)),
        })
    return feats


def write_truth(town: Town, osm_ids: OsmIds, path: str | Path) -> None:
    """Write the truth FeatureCollection atomically, one feature per line, keys sorted."""
    feats = truth_features(town, osm_ids)
    lines = [json.dumps(_lists(f), sort_keys=True, separators=(",", ":")) for f in feats]
    head = '{"type":"FeatureCollection","name":"synthetic town buildings","features":[\n'
    body = ",\n".join(lines)
    atomic_write_bytes(path, (head + body + "\n]}\n").encode())


def _lists(obj: Any) -> Any:
    """Tuples (from shapely's mapping) as lists, recursively."""
    if isinstance(obj, (list, tuple)):
        return [_lists(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    return obj
