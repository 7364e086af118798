"""Prediction tiles that show the sample region's truth, for checking the compare stage without
a trained model: buildings the orthophoto shows (truth.geojson, status != demolished) burnt at
probability 1 into the building band, the other bands copied from the masks.

    python scripts/truth_predictions.py configs/demo.toml   (after MasksAll)

Writes data/<region>/predictions/z/x/y.png and predictions/_shards/<quadkey>.json, the layout
the Predict stage writes; then ``python -m tasks CompareWithOSM --config ...`` runs on them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import shapely
from rasterio.features import rasterize

from pipeline.config import RegionConfig, load_config
from pipeline.geo import to_mercator
from pipeline.io import read_tile_index, write_manifest, write_tile_files
from pipeline.probs import encode_probs
from pipeline.tiles import Tile, tile_transform
from pipeline.vectorize import read_tile


def write_truth_predictions(cfg: RegionConfig, building: str = "building") -> int:
    """Write the truth prediction tiles of a ``[synthetic]`` region; returns the tile count."""
    index = read_tile_index(cfg.data_dir / "masks")
    index = index[index.status == "written"]
    truth = json.loads((cfg.data_dir / "truth.geojson").read_text())["features"]
    shown = [shapely.geometry.shape(f["geometry"]) for f in truth if f["properties"]["status"] != "demolished"]
    shown_m = list(to_mercator(np.array(shown, dtype=object)))
    ordered = sorted(cfg.classes, key=lambda c: c.id)
    ids = [c.id for c in ordered]
    band = [c.name for c in ordered].index(building)
    out = cfg.data_dir / "predictions"
    n = 0
    for shard in sorted(index.shard.unique()):
        items = []
        for r in index[index.shard == shard].itertuples():
            t = Tile(int(r.z), int(r.x), int(r.y))
            probs = read_tile((cfg.data_dir / "masks" / r.path).read_bytes(), "masks", ids, str(t))
            probs[band] = rasterize(shown_m, (cfg.tile_size, cfg.tile_size), transform=tile_transform(t, cfg.tile_size),
                                    default_value=255, dtype=np.uint8)
            items.append((t, encode_probs(probs)))
        files = write_tile_files(out, items, "png", out / "_tmp" / shard)
        (out / "_tmp" / shard).rmdir()
        write_manifest(out / "_shards" / f"{shard}.json", "truth", {"root": str(out), "shard": shard, "files": files})
        n += len(files)
    return n


if __name__ == "__main__":
    config = load_config(Path(sys.argv[1]))
    print(f"{write_truth_predictions(config)} prediction tiles written under {config.data_dir / 'predictions'}")
