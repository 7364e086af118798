"""Score a comparison of the synthetic sample region against its truth: are the buildings
``compare/missing_in_osm.geojson`` lists the ones ``truth.geojson`` marks missing in OSM, and are
the ``not_seen`` ones the demolished ones? Works for any predictions (a trained model's too).

    python -m pipeline.synthetic.score configs/demo.toml     (after CompareWithOSM)

Prints JSON: precision / recall of missing_in_osm (one-to-one by IoU >= 0.5 with the truth
footprints, EPSG:3857; ``missing_in_osm_by_area``: a candidate is right when at least half of
it lies in buildings the truth marks missing, and a missing building is found when candidates
cover at least half of it, the figures of ``bench.bench_dense``: a candidate that shows a mapper
part of a missing building points at it, though its IoU is below 0.5), of not_seen (by OSM type
and id) and of offset (by OSM id), all for buildings; ``roads``: the road rows of missing_in_osm
by length (precision: share of the candidates' length within the road class's ``buffer_m`` of
a road the truth marks missing; recall: share of the missing roads' length within it of a
candidate; ``recall_in_imagery``: the same over the missing roads' length on tiles with imagery,
which is all a model can see) and of not_seen by OSM id against the roads the image no longer shows; and
``objects``: the predicted buildings (``predictions.geojson``) against every building the image
shows, one-to-one at IoU >= 0.5 (precision, recall, F1), on all tiles, on the test tiles of
``split.csv`` and for the buildings that share a wall with another (the dense quarters).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.config.region import load_config
from pipeline.review.compare import match, object_f1
from pipeline.review.coverage import ground_scale
from pipeline.synthetic.truth import is_building
from pipeline.tiles.geo import to_mercator

#: half-width (ground metres) within which a road candidate and a truth road count as the same
#: road when no config says otherwise (the demo's road ``buffer_m``)
ROAD_TOL_M = 4.0


def _pr(found: int, hits: int, truth: int) -> dict[str, Any]:
    return {"found": found, "truth": truth, "hits": hits,
            "precision": round(hits / found, 4) if found else None, "recall": round(hits / truth, 4) if truth else None}


def truth_scores(data_dir: Path, min_iou: float = 0.5, road_tol_m: float = ROAD_TOL_M) -> dict[str, Any]:
    """Precision and recall of the change layers in ``data_dir/compare`` against ``truth.geojson``
    (see the module doc; ``road_tol_m``: ground metres)."""
    rows = [f["properties"] | {"geometry": f["geometry"]}
            for f in json.loads((data_dir / "truth.geojson").read_text())["features"]]
    truth = [t for t in rows if is_building(t)]
    layer = {s: _features(data_dir / "compare", s) for s in ("missing_in_osm", "not_seen", "offset")}
    missing = [shapely.geometry.shape(t["geometry"]) for t in truth if t["status"] == "missing_in_osm"]
    found = [shapely.geometry.shape(f["geometry"]) for f in layer["missing_in_osm"]
             if f["properties"]["class"] == "building"]
    _, _, v = match(to_mercator(np.array(found, dtype=object)), to_mercator(np.array(missing, dtype=object)), min_iou)
    demolished = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "demolished"}
    unseen = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in layer["not_seen"]
              if f["properties"]["class"] == "building"}
    shifted = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "mapped" and t["offset_m"] > 0}
    offset = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in layer["offset"]
              if f["properties"].get("class", "building") == "building"}
    return {"missing_in_osm": _pr(len(found), len(v), len(missing)),
            "missing_in_osm_by_area": by_area(to_mercator(np.array(found, dtype=object)),
                                              to_mercator(np.array(missing, dtype=object))),
            "not_seen": _pr(len(unseen), len(unseen & demolished), len(demolished)),
            "offset": _pr(len(offset), len(offset & shifted), len(shifted)),
            "roads": road_scores([t for t in rows if t.get("class") == "road"], layer, road_tol_m,
                                 imagery_footprint(data_dir))}


def imagery_footprint(data_dir: Path) -> shapely.Geometry | None:
    """The union of the tiles with imagery (EPSG:3857), or None when the region has none written."""
    from pipeline.core.errors import ManifestError
    from pipeline.inference.windows import image_paths
    from pipeline.tiles.tilemath import Tile, tile_bounds

    try:
        keys = list(image_paths(data_dir))
    except ManifestError:  # no imagery index: no footprint to score against
        return None
    if not keys:
        return None
    return shapely.union_all(shapely.box(*np.array([tile_bounds(Tile(*k)) for k in keys]).T))


def by_area(cand: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Candidates (EPSG:3857) right when at least half of each lies in ``truth`` polygons; truth
    polygons found when candidates cover at least half of each (precision over candidates,
    recall over truth polygons)."""
    if not len(cand) or not len(truth):
        return _pr(len(cand), 0, len(truth)) | {"found_truth": 0}
    t_all, c_all = shapely.union_all(truth), shapely.union_all(cand)
    right = int((shapely.area(shapely.intersection(cand, t_all)) >= 0.5 * shapely.area(cand)).sum())
    found = int((shapely.area(shapely.intersection(truth, c_all)) >= 0.5 * shapely.area(truth)).sum())
    return {"found": len(cand), "truth": len(truth), "hits": right, "found_truth": found,
            "precision": round(right / len(cand), 4), "recall": round(found / len(truth), 4)}


def _features(folder: Path, status: str) -> list[dict[str, Any]]:
    """The features of a change layer: ``<status>.geojson`` (areas) and ``<status>_lines.geojson``."""
    files = [folder / f"{status}.geojson", folder / f"{status}_lines.geojson"]
    return [f for p in files if p.is_file() for f in json.loads(p.read_text())["features"]]


def road_scores(truth: list[dict[str, Any]], layer: dict[str, list[dict[str, Any]]], tol_m: float,
                imagery: shapely.Geometry | None = None) -> dict[str, Any]:
    """Road figures (see the module doc): ``truth`` the road rows of ``truth.geojson`` (properties
    and geometry), ``layer`` the features of the change layers by status, ``tol_m`` ground metres,
    ``imagery`` the tiles with imagery (EPSG:3857) for ``recall_in_imagery``."""
    def lines(feats: list[dict[str, Any]]) -> np.ndarray:
        return to_mercator(np.array([shapely.geometry.shape(f["geometry"]) for f in feats], dtype=object))

    missing = lines([t for t in truth if t["status"] == "missing_in_osm"])
    found = lines([f for f in layer["missing_in_osm"] if f["properties"]["class"] == "road"])
    s = ground_scale(np.concatenate([missing, found]))
    found_m, truth_m = float(shapely.length(found).sum()), float(shapely.length(missing).sum())
    near_truth = shapely.union_all(shapely.buffer(missing, tol_m * s)) if len(missing) else shapely.Polygon()
    near_found = shapely.union_all(shapely.buffer(found, tol_m * s)) if len(found) else shapely.Polygon()
    hit_found = float(shapely.length(shapely.intersection(found, near_truth)).sum()) if len(found) else 0.0
    hit_truth = float(shapely.length(shapely.intersection(missing, near_found)).sum()) if len(missing) else 0.0
    seen_m = seen_hit = math.nan
    if imagery is not None and len(missing):
        inside = shapely.intersection(missing, imagery)
        seen_m = float(shapely.length(inside).sum())
        seen_hit = float(shapely.length(shapely.intersection(inside, near_found)).sum())
    removed = {(t["osm_type"], t["osm_id"]) for t in truth if t["status"] == "demolished"}
    unseen = {(f["properties"]["osm_type"], f["properties"]["osm_id"]) for f in layer["not_seen"]
              if f["properties"]["class"] == "road"}
    return {"tolerance_m": tol_m,
            "missing_in_osm": {"found": len(found), "truth": len(missing), "found_m": round(found_m / s, 1),
                               "truth_m": round(truth_m / s, 1),
                               "precision": round(hit_found / found_m, 4) if found_m > 0 else None,
                               "recall": round(hit_truth / truth_m, 4) if truth_m > 0 else None,
                               "recall_in_imagery": round(seen_hit / seen_m, 4) if seen_m > 0 else None},
            "not_seen": _pr(len(unseen), len(unseen & removed), len(removed))}


def flat_scores(scores: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``truth_scores`` as one level of figure groups, each with ``precision`` and ``recall``:
    the building groups as they are, the road groups as ``roads missing_in_osm`` and
    ``roads not_seen``."""
    out = {k: v for k, v in scores.items() if isinstance(v, dict) and "precision" in v}
    for k, v in scores.get("roads", {}).items():
        if isinstance(v, dict) and "precision" in v:
            out[f"roads {k}"] = v
    return out


def object_scores(data_dir: Path, zoom: int, min_iou: float = 0.5) -> dict[str, Any]:
    """Object precision / recall / F1 of the predicted buildings against the truth (see the module doc)."""
    import csv

    from pipeline.review.compare import features_in_tiles

    truth = json.loads((data_dir / "truth.geojson").read_text())["features"]
    shown = np.array([shapely.geometry.shape(f["geometry"]) for f in truth
                      if is_building(f["properties"]) and f["properties"]["status"] != "demolished"], dtype=object)
    pred = np.array([shapely.geometry.shape(f["geometry"]) for f in json.loads(
        (data_dir / "predictions.geojson").read_text())["features"] if f["properties"]["class"] == "building"],
        dtype=object)
    sm, pm = to_mercator(shown), to_mercator(pred)
    a, b = shapely.STRtree(sm).query(sm, predicate="intersects")
    walls = shapely.length(shapely.intersection(shapely.boundary(sm[a]), shapely.boundary(sm[b])))
    touching = np.zeros(len(sm), dtype=bool)
    touching[a[(a != b) & (walls > 1.0)]] = True
    dense = shapely.union_all(sm[touching])
    in_dense = shapely.area(shapely.intersection(pm, dense)) >= 0.5 * shapely.area(pm)
    out = {"all": _f1(pm, sm, min_iou), "dense": _f1(pm[in_dense], sm[touching], min_iou)}
    split = data_dir / "split.csv"
    if split.is_file():
        with open(split, newline="") as fh:
            tiles = {(int(r["x"]), int(r["y"])) for r in csv.DictReader(fh) if r["split"] == "test"}
        if tiles:
            out["test_tiles"] = _f1(pm[features_in_tiles(pred, tiles, zoom)], sm[features_in_tiles(shown, tiles, zoom)],
                                    min_iou)
    return out


def _f1(pm: np.ndarray, tm: np.ndarray, min_iou: float) -> dict[str, Any]:
    hits, p, r, f1 = object_f1(pm, tm, min_iou)
    return {"predicted": len(pm), "truth": len(tm), "hits": hits, "precision": round(p, 4), "recall": round(r, 4),
            "f1": round(f1, 4)}


def main(argv: list[str]) -> int:
    """``python -m pipeline.synthetic.score configs/demo.toml``: the truth scores as JSON; a
    user's mistake (no config, a region without truth) is one line on stderr, exit status 2."""
    from pipeline.core.errors import OsmsatError

    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m pipeline.synthetic.score configs/<sample region>.toml  (scores its outputs "
              "against truth.geojson)", file=sys.stderr)
        return 2
    try:
        cfg = load_config(Path(argv[0]))
        road = next((c for c in cfg.classes if c.kind == "line" and c.name == "road"), None)
        tol = road.buffer_m if road is not None and road.buffer_m > 0 else ROAD_TOL_M
        scores = truth_scores(cfg.data_dir, road_tol_m=tol)
        if (cfg.data_dir / "predictions.geojson").is_file():
            scores["objects"] = object_scores(cfg.data_dir, cfg.zoom)
    except (OsmsatError, OSError) as exc:
        from pipeline.core.user_errors import clear_message

        print(f"error: {clear_message(exc)}", file=sys.stderr)
        return 2
    print(json.dumps(scores, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
