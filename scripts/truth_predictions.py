"""Prediction tiles that show the sample region's truth, for checking the compare stage without
a trained model: buildings the orthophoto shows (truth.geojson, status != demolished) burnt at
probability 1 into the building band, with their edge bands as a perfect model with instance
outputs would predict them (``[masks] instances``), the other bands copied from the masks.

    python scripts/truth_predictions.py configs/demo.toml   (after MasksAll)

Writes data/<region>/predictions/z/x/y.png and predictions/_shards/<quadkey>.json, the layout
the Predict stage writes; then ``python -m tasks CompareWithOSM --config ...`` runs on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import geopandas as gpd
import shapely

from pipeline.config import RegionConfig, load_config
from pipeline.io import read_tile_index, write_manifest, write_tile_files
from pipeline.masks import burn_tile, prepare_burn
from pipeline.probs import encode_probs
from pipeline.synthetic.truth import is_building
from pipeline.tiles import Tile
from pipeline.vectorize import mask_to_probs, read_tile


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
            if edges:
                probs[len(ids)] = shown_probs[1]
            items.append((t, encode_probs(probs, edges=edges)))
        files = write_tile_files(out, items, "png", out / "_tmp" / shard)
        (out / "_tmp" / shard).rmdir()
        write_manifest(out / "_shards" / f"{shard}.json", "truth", {"root": str(out), "shard": shard, "files": files})
        n += len(files)
    return n


if __name__ == "__main__":
    config = load_config(Path(sys.argv[1]))
    print(f"{write_truth_predictions(config)} prediction tiles written under {config.data_dir / 'predictions'}")
