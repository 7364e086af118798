"""Prediction tiles that show the sample region's truth, for checking the compare stage without
a trained model: buildings the orthophoto shows (truth.geojson, status != demolished) burnt at
probability 1 into the building band, with their edge bands as a perfect model with instance
outputs would predict them (``[masks] instances``); the streets the orthophoto shows (the OSM
ones less the demolished, plus those OSM lacks) burnt into the road band; the other bands
copied from the masks.

    python scripts/truth_predictions.py configs/demo.toml   (after MasksAll)

Writes data/<region>/predictions/z/x/y.png and predictions/_shards/<quadkey>.json, the layout
the Predict stage writes; then ``python -m tasks CompareWithOSM --config ...`` runs on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import shapely

from pipeline.config.region import RegionConfig, load_config
from pipeline.core.manifests import write_manifest
from pipeline.inference.probs import encode_probs
from pipeline.labels.features import read_features
from pipeline.labels.tags import buffer_for
from pipeline.synthetic.truth import is_building
from pipeline.tiles.index import read_tile_index
from pipeline.tiles.masks import burn_tile, prepare_burn
from pipeline.tiles.tilemath import Tile
from pipeline.tiles.writer import write_tile_files
from pipeline.vectors.vectorize import mask_to_probs, read_tile


def write_truth_predictions(cfg: RegionConfig, building: str = "building") -> int:
    """Write the truth prediction tiles of a ``[synthetic]`` region; returns the tile count."""
    index = read_tile_index(cfg.data_dir / "masks")
    index = index[index.status == "written"]
    truth = json.loads((cfg.data_dir / "truth.geojson").read_text())["features"]
    shown = [shapely.geometry.shape(f["geometry"]) for f in truth
             if is_building(f["properties"]) and f["properties"]["status"] != "demolished"]
    ordered = sorted(cfg.classes, key=lambda c: c.id)
    ids = [c.id for c in ordered]
    band = [c.name for c in ordered].index(building)
    cid = ordered[band].id
    edges = (cid,) if cid in cfg.edge_ids else ()
    burn = prepare_burn(gpd.GeoDataFrame({"class": [building] * len(shown), "buffer_m": 0.0}, geometry=shown, crs=4326),
                        (ordered[band],), edges)
    roads = _shown_roads(cfg, truth)
    road_band = [c.name for c in ordered].index(roads[0]) if roads else -1
    out = cfg.data_dir / "predictions"
    n = 0
    for shard in sorted(index.shard.unique()):
        items = []
        for r in index[index.shard == shard].itertuples():
            t = Tile(int(r.z), int(r.x), int(r.y))
            probs = read_tile((cfg.data_dir / "masks" / r.path).read_bytes(), "masks", ids, str(t), edges)
            shown_mask = burn_tile(burn, t, cfg.tile_size, edge_px=cfg.masks.edge_px if edges else 0)
            shown_probs = mask_to_probs(shown_mask, [cid], edges)  # its footprint band, then its edge band
            probs[band] = shown_probs[0]
            if roads:
                road = burn_tile(roads[1], t, cfg.tile_size) > 0
                probs[road_band] = np.where(road & (shown_probs[0] == 0), 255, 0).astype(np.uint8)
            if edges:
                probs[len(ids)] = shown_probs[1]
            items.append((t, encode_probs(probs, edges=edges)))
        files = write_tile_files(out, items, "png", out / "_tmp" / shard)
        (out / "_tmp" / shard).rmdir()
        write_manifest(out / "_shards" / f"{shard}.json", "truth", {"root": str(out), "shard": shard, "files": files})
        n += len(files)
    return n


def _shown_roads(cfg: RegionConfig, truth: list[dict[str, Any]]) -> tuple[str, Any] | None:
    """(road class, burn set) of the streets the image shows; None without a line class ``road``."""
    road = next((c for c in cfg.classes if c.kind == "line" and c.name == "road"), None)
    if road is None:
        return None
    rows = [f["properties"] | {"geometry": shapely.geometry.shape(f["geometry"])} for f in truth
            if f["properties"].get("class") == "road"]
    gone = {(r["osm_type"], r["osm_id"]) for r in rows if r["status"] == "demolished"}
    osm = read_features(cfg.data_dir / "features.parquet")
    keep = np.array([(a, b) not in gone for a, b in zip(osm.osm_type, osm.osm_id)], dtype=bool)
    osm = osm[(osm["class"] == road.name).to_numpy() & keep]
    added = [r for r in rows if r["status"] == "missing_in_osm"]
    geoms = [*osm.geometry, *(r["geometry"] for r in added)]
    buffers = [*osm.buffer_m, *(buffer_for(road, {"highway": r.get("highway", "")}) for r in added)]
    shown = gpd.GeoDataFrame({"class": [road.name] * len(geoms), "buffer_m": buffers}, geometry=geoms, crs=4326)
    return road.name, prepare_burn(shown, (road,))


if __name__ == "__main__":
    config = load_config(Path(sys.argv[1]))
    print(f"{write_truth_predictions(config)} prediction tiles written under {config.data_dir / 'predictions'}")
