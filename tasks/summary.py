"""``python -m tasks.summary --config configs/<region>.toml``: where a region's outputs are and
its headline figures (test IoU per class; for the sample region, precision and recall of the
missing-in-OSM candidates against its truth; time per stage). ``make demo`` ends with it."""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.config import load_config
from pipeline.errors import OsmsatError
from pipeline.runinfo import read_json

#: outputs worth opening, relative to the region's data folder
OUTPUTS = (("report.html", "the report page (open in a browser)"),
           ("{name}.qgs", "QGIS project: imagery, OSM, predictions, change layers"),
           ("compare/missing_in_osm.osm", "candidates for JOSM (never uploadable as is)"),
           ("compare/maproulette.geojsonl", "MapRoulette challenge tasks"),
           ("compare/summary.json", "comparison figures"),
           ("predictions.geojson", "predicted features (EPSG:4326)"),
           ("model/best.pt", "trained model (best validation IoU)"),
           ("model/metrics.json", "test-split metrics"),
           ("run.json", "run manifest: versions, digests, time per stage"))


def summary_lines(data_dir: Path, name: str) -> list[str]:
    """The lines to print for the region whose outputs are under ``data_dir``."""
    lines = [f"osmsat: {name} — outputs in {data_dir}/"]
    for rel, what in OUTPUTS:
        p = data_dir / rel.format(name=name)
        if p.exists():
            lines.append(f"  {p!s:<44} {what}")
    metrics = read_json(data_dir / "model" / "metrics.json")
    if metrics and isinstance(metrics.get("iou"), dict):
        ious = ", ".join(f"{k} {v:.3f}" for k, v in metrics["iou"].items())
        lines.append(f"model IoU on the {metrics.get('scope', 'test')} tiles: {ious}")
    elif metrics and metrics.get("note"):  # nothing to evaluate on (no test split)
        lines.append(f"model not evaluated: {metrics['note']}")
    if (data_dir / "truth.geojson").is_file() and (data_dir / "compare" / "missing_in_osm.geojson").is_file():
        from pipeline.synthetic.score import truth_scores

        s = truth_scores(data_dir)
        for key in ("missing_in_osm", "not_seen"):
            v = s[key]
            lines.append(f"{key.replace('_', ' ')} vs the truth: precision {v['precision']}, recall {v['recall']} "
                         f"({v['hits']} of {v['found']} found, {v['truth']} in the truth)")
    run = read_json(data_dir / "run.json")
    if run and run.get("stages"):
        times = ", ".join(f"{k} {v['seconds']:.0f}s" for k, v in run["stages"].items() if v["seconds"] >= 0.5)
        lines.append(f"time per stage (summed over shards): {times}")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: python -m tasks.summary --config configs/<region>.toml", file=sys.stderr)
        return 2
    try:
        cfg = load_config(argv[1])
    except OsmsatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(cfg.data_dir, cfg.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
