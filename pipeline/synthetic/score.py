"""Score a comparison of the synthetic sample region against its truth: are the buildings
``compare/missing_in_osm.geojson`` lists the ones ``truth.geojson`` marks missing in OSM, and are
the ``not_seen`` ones the demolished ones? Works for any predictions (a trained model's too).

    python -m pipeline.synthetic.score configs/demo.toml     (after CompareWithOSM)

Prints JSON: precision / recall of missing_in_osm (one-to-one by IoU >= 0.5 with the truth
footprints, EPSG:3857), of not_seen (by OSM type and id) and of offset (by OSM id).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.compare import match
from pipeline.config import load_config
from pipeline.geo import to_mercator


def _pr(found: int, hits: int, truth: int) -> dict[str, Any]:
    return {"found": found, "truth": truth, "hits": hits,
            "precision": round(hits / found, 4) if found else None, "recall": round(hits / truth, 4) if truth else None}


def truth_scores(data_dir: Path, min_iou: float = 0.5) -> dict[str, Any]:
    """Precision and recall of the change layers in ``data_dir/compare`` against ``truth.geojson``."""
    truth = [f["properties"] | {"geometry": f["geometry"]}
             for f in json.loads((data_dir / "truth.geojson").read_text())["features"]]
    layer = {s: json.loads((data_dir / "compare" / f"{s}.geojson").read_text())["features"]
             for s in ("missing_in_osm", "not_seen", "offset")}
    missing = [shapely.geometry.shape(t["geometry"]) for t in truth if t["status"] == "missing_in_osm"]
    found = [shapely.geometry.shape(f["geometry"]) for f in layer["missing_in_osm"]
             if f["properties"]["class"] == "building"]
    _, _, v = match(to_mercator(np.array(found, dtype=object)), to_mercator(np.array(missing, dtype=object)), min_iou)
    demolished = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "demolished"}
    unseen = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in layer["not_seen"]
              if f["properties"]["class"] == "building"}
    shifted = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "mapped" and t["offset_m"] > 0}
    offset = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in layer["offset"]}
    return {"missing_in_osm": _pr(len(found), len(v), len(missing)),
            "not_seen": _pr(len(unseen), len(unseen & demolished), len(demolished)),
            "offset": _pr(len(offset), len(offset & shifted), len(shifted))}


if __name__ == "__main__":
    print(json.dumps(truth_scores(load_config(Path(sys.argv[1])).data_dir), indent=1))
