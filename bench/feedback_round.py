"""One round of mapper feedback on the sample region (issue 19): reject the false candidates,
fine-tune with them as negatives, count what is left.

    python -m bench.feedback_round [--base configs/demo.toml] [--out data/demo-feedback]

1. The base region (``make demo`` first) has ``compare/missing_in_osm.geojson``. A mapper who
   reviews it rejects the building candidates that cover no building in the image; the truth
   (``truth.geojson``) stands in for the mapper: a candidate is rejected when less than
   ``--covered`` (0.25) of its area lies inside buildings the image shows. Only candidates on the
   region's train and validation tiles are reviewed, so the test tiles measure whether the lesson
   carries to tiles no mapper looked at.
2. The rejected candidates are written as ``<out>/rejected.geojson`` (EPSG:4326), what a JOSM,
   QGIS or MapRoulette export would be, and a region config ``<out>/<name>.toml`` is written: the
   base config without ``[synthetic]`` (it reads the base region's OSM extract and orthophoto),
   with ``[labels] negatives = [rejected.geojson]`` and ``[train] init = <base config>`` (a
   fine-tune of the base model, ``--epochs`` epochs).
3. ``RegionPipeline`` runs for that config, and both regions are scored against the truth:
   rejectable candidates left (train/val tiles, test tiles), and precision / recall of
   ``missing_in_osm`` buildings (:func:`pipeline.synthetic.score.truth_scores`).

Prints a JSON summary and writes it to ``<out>/feedback_round.json``. CPU minutes: the fine-tune
(``--epochs``, default 20) and a prediction of the region.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import mercantile
import numpy as np
import shapely
import toml

from pipeline.config.region import load_config
from pipeline.synthetic.score import truth_scores
from pipeline.synthetic.truth import is_building
from pipeline.tiles.geo import to_mercator


def shown_buildings(data_dir: Path) -> np.ndarray:
    """The buildings the image shows (every truth building but the demolished ones), EPSG:4326."""
    feats = json.loads((data_dir / "truth.geojson").read_text())["features"]
    return np.array([shapely.geometry.shape(f["geometry"]) for f in feats
                     if is_building(f["properties"]) and f["properties"]["status"] != "demolished"], dtype=object)


def tile_splits(data_dir: Path) -> dict[tuple[int, int], str]:
    """``(x, y) -> split`` of the region's tiles (``split.csv``)."""
    with open(data_dir / "split.csv", newline="") as fh:
        return {(int(r["x"]), int(r["y"])): r["split"] for r in csv.DictReader(fh)}


def candidates(data_dir: Path, zoom: int, covered: float) -> list[dict[str, Any]]:
    """The building candidates of ``missing_in_osm``, each with ``split`` (of the tile under its
    centroid) and ``reject`` (less than ``covered`` of its area inside a shown building)."""
    feats = [f for f in json.loads((data_dir / "compare" / "missing_in_osm.geojson").read_text())["features"]
             if f["properties"]["class"] == "building"]
    if not feats:
        return []
    geoms = np.array([shapely.geometry.shape(f["geometry"]) for f in feats], dtype=object)
    shown = shapely.union_all(to_mercator(shown_buildings(data_dir)))
    gm = to_mercator(geoms)
    share = shapely.area(shapely.intersection(gm, shown)) / np.maximum(shapely.area(gm), 1e-9)
    splits = tile_splits(data_dir)
    out = []
    for f, g, s in zip(feats, geoms, share, strict=True):
        c = shapely.centroid(g)
        t = mercantile.tile(c.x, c.y, zoom)
        out.append(f | {"split": splits.get((t.x, t.y), "none"), "reject": bool(s < covered)})
    return out


def write_round(base: Path, out: Path, epochs: int, covered: float, negatives: bool = True,
                weight: float | None = None) -> Path:
    """Write ``rejected.geojson`` and the feedback region's config (without ``[labels] negatives``
    when ``negatives`` is False: the control, the same fine-tune without feedback; with ``weight``,
    ``[train] negatives_weight``); returns the config's path."""
    cfg = load_config(base)
    cands = candidates(cfg.data_dir, cfg.zoom, covered)
    rejected = [{"type": "Feature", "properties": {"id": c["properties"]["id"], "verdict": "not a building"},
                 "geometry": c["geometry"]} for c in cands if c["reject"] and c["split"] in ("train", "val")]
    out.mkdir(parents=True, exist_ok=True)
    (out / "rejected.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": rejected}))
    shutil.copyfile(cfg.data_dir / "truth.geojson", out / "truth.geojson")
    table = toml.loads(base.read_text())
    table.pop("synthetic", None)
    name = out.name
    table["region"] |= {"name": name, "data_dir": str(out)}
    if negatives:
        table.setdefault("labels", {})["negatives"] = [str(out / "rejected.geojson")]
        if weight is not None:
            table["train"]["negatives_weight"] = weight
    table["train"] |= {"init": str(base), "epochs": epochs}
    table["train"].pop("lr", None)  # the fine-tuning default (pipeline.model.finetune)
    path = out / f"{name}.toml"
    path.write_text(f"# written by bench/feedback_round.py from {base}\n" + toml.dumps(table))
    return path


def tally(data_dir: Path, zoom: int, covered: float) -> dict[str, Any]:
    """Rejectable candidates left on reviewed (train/val) and unreviewed (test) tiles, and the
    truth scores of ``missing_in_osm`` buildings."""
    cands = candidates(data_dir, zoom, covered)
    out: dict[str, Any] = {"candidates": len(cands)}
    for name, splits in (("reviewed_tiles", ("train", "val")), ("test_tiles", ("test",))):
        mine = [c for c in cands if c["split"] in splits]
        out[name] = {"candidates": len(mine), "rejectable": sum(c["reject"] for c in mine)}
    out["missing_in_osm"] = truth_scores(data_dir)["missing_in_osm"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--base", type=Path, default=Path("configs/demo.toml"))
    ap.add_argument("--out", type=Path, default=Path("data/demo-feedback"))
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--covered", type=float, default=0.25)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--negatives-weight", type=float, default=None,
                    help="[train] negatives_weight of the run with negatives (default: the config default)")
    ap.add_argument("--control", action="store_true",
                    help="also run the same fine-tune without the negatives (in <out>-control)")
    args = ap.parse_args(argv)
    runs = {"after": write_round(args.base, args.out, args.epochs, args.covered, weight=args.negatives_weight)}
    if args.control:
        control = args.out.with_name(args.out.name + "-control")
        runs["control"] = write_round(args.base, control, args.epochs, args.covered, negatives=False)
    n = len(json.loads((args.out / "rejected.geojson").read_text())["features"])
    print(f"{n} candidates rejected on reviewed tiles -> {args.out / 'rejected.geojson'}")
    for path in runs.values():
        subprocess.run([sys.executable, "-m", "tasks", "RegionPipeline", "--config", str(path),
                        "--workers", str(args.workers)], check=True)
    base = load_config(args.base)
    result: dict[str, Any] = {"rejected": n, "before": tally(base.data_dir, base.zoom, args.covered)}
    result |= {k: tally(load_config(p).data_dir, base.zoom, args.covered) for k, p in runs.items()}
    (args.out / "feedback_round.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
