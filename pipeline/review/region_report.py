"""The region report's content, read from a region's outputs: the map layers, the figure tables
and footnotes of ``report.html`` (rendered by :mod:`pipeline.review.report`) and the lines
``python -m tasks.summary`` prints. Every function reads files under a region's data folder and
tolerates absent ones (a stage not run, a region without labels or without a test split)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.errors import ManifestError
from pipeline.core.runinfo import read_json
from pipeline.review.report import MapLayer, Report, TileLayer, layers_bounds
from pipeline.review.statuses import OSM, PREDICTED, STATUS_STYLES, shown_statuses
from pipeline.tiles.index import WRITTEN, read_tile_index


def map_layers() -> list[tuple[str, str, str, bool]]:
    """The map layers of the report: (name, file under data/<region>, colour, shown at first): the
    predictions and the statuses shown at first, names and colours from the one palette
    (:mod:`pipeline.review.statuses`) that the QGIS project uses too."""
    return [(PREDICTED.label, "predictions.geojson", PREDICTED.color, True),
            *((STATUS_STYLES[s].label, f"compare/{s}.geojson", STATUS_STYLES[s].color, True)
              for s in shown_statuses())]


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _split_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """IoU of the training and validation tiles (measured like the test figure) and the epoch
    ``best.pt`` was chosen on, for the report's model table (none for a model trained elsewhere)."""
    rows = [(f"{name} IoU, {split} tiles ({v.get('tiles')})", _fmt(v["iou"].get(name)))
            for split, v in (metrics.get("splits") or {}).items() for name in metrics["iou"] if name != "background"]
    chosen = metrics.get("selected_on") or {}
    if chosen.get("epoch") is not None:
        rows.append(("best.pt chosen at epoch", str(chosen["epoch"])))
    return rows


def region_figures(d: Path) -> dict[str, list[tuple[str, str]]]:
    """The report's tables from the region's outputs (those that exist)."""
    figs: dict[str, list[tuple[str, str]]] = {}
    metrics = read_json(d / "model" / "metrics.json")
    if metrics and isinstance(metrics.get("iou"), dict):
        scope = metrics.get("scope", "test")
        figs[f"Model ({scope} tiles)"] = [
            (f"{name} {k}", _fmt(metrics.get(k, {}).get(name)))
            for name in metrics["iou"] for k in ("iou", "precision", "recall", "f1")]
        figs[f"Model ({scope} tiles)"] += _split_rows(metrics)
    elif metrics and metrics.get("note"):  # not evaluated (no test split): region_notes says why
        figs[f"Model ({metrics.get('scope', 'test')} tiles)"] = [("tiles", "none: not evaluated")]
    summary = read_json(d / "compare" / "summary.json")
    if summary and summary.get("compared", True):
        rows = []
        for name, f in summary.get("classes", {}).items():
            rows += [(f"{name}: {k.replace('_', ' ')}", _fmt(f.get(k))) for k in
                     ("predicted", "osm", "matched", "covered", "offset", "missing_in_osm", "not_seen", "seen_share",
                      "precision", "recall", "f1", "mean_iou")]
        for name, f in summary.get("lines", {}).items():
            rows += [(f"{name}: {k.replace('_', ' ')}", _fmt(f.get(k))) for k in
                     ("predicted_km", "osm_km", "correctness", "completeness")]
        figs["Comparison with OSM"] = rows
    rated = (read_json(d / "_manifests" / "vectorize.json") or {}).get("confidence") or {}
    if rated:
        figs["Predictions rated by the region's map"] = [
            (name, f"{f['dropped']} dropped (confidence < min_confidence); AUC {f['auc']}, fitted on {f['mapped']} "
                   f"mapped and {f['unmapped']} unmapped" if f.get("fitted") else f"not rated: {f.get('note', '')}")
            for name, f in rated.items()]
    calibration = read_json(d / "compare" / "calibration.json")
    if calibration and calibration.get("layers"):
        from pipeline.review.compare_report import review_lines

        figs["Review queue (estimated on held-out tiles)"] = [
            (line.split(":", 1)[0], line.split(":", 1)[1].strip()) for line in review_lines(calibration["layers"])]
    if (d / "truth.geojson").is_file() and (d / "compare" / "missing_in_osm.geojson").is_file():
        from pipeline.synthetic.score import flat_scores, truth_scores

        scores = flat_scores(truth_scores(d))
        figs["Against the sample region's truth"] = [
            (f"{k.replace('_', ' ')} {m}", _fmt(v[m])) for k, v in scores.items() for m in ("precision", "recall")]
    run = read_json(d / "run.json")
    if run and run.get("stages"):
        figs["Run (seconds per stage)"] = [(k, f"{v['seconds']:.1f}" + (f" ({v['tiles_per_s']} tiles/s)"
                                                                       if v.get("tiles_per_s") else ""))
                                          for k, v in run["stages"].items()]
    return figs


def region_notes(d: Path) -> tuple[str, ...]:
    """Sentences for the page's footer: why a figure is absent (a model not evaluated, a region
    without labels)."""
    notes: list[str] = []
    metrics = read_json(d / "model" / "metrics.json")
    if metrics and not isinstance(metrics.get("iou"), dict) and metrics.get("note"):
        notes.append(f"Model not evaluated: {metrics['note']}.")
    summary = read_json(d / "compare" / "summary.json")
    if summary and summary.get("compared") is False and summary.get("note"):
        notes.append(f"Not compared with OSM: {summary['note']}.")
    return tuple(notes)


def osm_layer(path: Path, limit: int = 50_000) -> MapLayer | None:
    """The region's OSM (or vector label) features as a map layer (the first ``limit``)."""
    if not path.is_file():
        return None
    from pipeline.labels.features import read_features

    feats = read_features(path)
    if not len(feats):  # a region without labels
        return None
    cols = [c for c in ("class", "osm_type", "osm_id") if c in feats.columns]
    gj = json.loads(feats[[*cols, "geometry"]].iloc[:limit].to_json(drop_id=True))
    return MapLayer(f"{OSM.label} features", gj, OSM.color, visible=False, fill_opacity=0.1, weight=1.0)


def region_report(d: Path, name: str, zoom: int) -> Report:
    """The report of the region whose outputs are under ``d``."""
    layers = []
    osm = osm_layer(d / "features.parquet")
    if osm is not None:
        layers.append(osm)
    for title, rel, color, visible in map_layers():
        gj = read_json(d / rel)
        if gj and gj.get("features") is not None:
            layers.append(MapLayer(title, gj, color, visible=visible))
    tiles = None
    try:
        idx = read_tile_index(d / "images")
        written = idx[idx.status == WRITTEN]
        if len(written):
            exts = written.path.astype(str).str.rsplit(".", n=1).str[-1]
            tiles = TileLayer("images/{z}/{x}/{y}.{ext}", zoom,
                              available=tuple((int(x), int(y), str(e)) for x, y, e in zip(written.x, written.y, exts)))
    except ManifestError:
        tiles = None
    bounds = layers_bounds(layers) or (-180.0, -85.0, 180.0, 85.0)
    curves, reliability = d / "model" / "training.png", d / "compare" / "reliability.png"
    return Report(title=f"osmsat: {name}", bounds=bounds, tiles=tiles, layers=tuple(layers),
                  figures=region_figures(d), curves_png=curves.read_bytes() if curves.is_file() else None,
                  notes=region_notes(d),
                  pictures=(("Review queue: calibration (gap simulation)", reliability.read_bytes()),)
                  if reliability.is_file() else ())


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


def _split_lines(metrics: dict[str, Any]) -> list[str]:
    """One line per foreground class comparing the splits (EvaluateModel's ``splits``): how far
    training fits, and whether the validation that chose ``best.pt`` agrees with the test tiles."""
    splits, chosen = metrics.get("splits") or {}, metrics.get("selected_on") or {}
    out = []
    for name, test in metrics["iou"].items():
        if name == "background" or not splits:
            continue
        parts = [f"{s} {v['iou'][name]:.3f}" for s, v in splits.items() if name in v.get("iou", {})]
        picked = chosen.get("iou", {}).get(name)
        tail = (f"; best.pt: epoch {chosen.get('epoch')}, validated {picked:.3f} at the model's scale"
                if isinstance(picked, (int, float)) else "")
        out.append(f"{name} IoU by split: {', '.join(parts)}, test {test:.3f}{tail}")
    return out


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
        lines.extend(_split_lines(metrics))
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
