"""The last stages of a region: ``RunManifest`` (``run.json``: code commit, versions (GDAL and
PROJ too), one config digest, input and output checksums, device, time and throughput per
stage) and ``RegionReport`` (``report.html``: a self-contained page with the slippy map, the
training curves and the figures)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import ManifestError
from pipeline.io import atomic_write_bytes, read_manifest, read_tile_index
from pipeline.report import MapLayer, Report, TileLayer, layers_bounds, render_report
from pipeline.runinfo import input_checksums, output_checksums, read_json, read_records, run_manifest
from pipeline.stages import STAGES, stage_digest, stage_inputs
from pipeline.statuses import OSM, PREDICTED, STATUS_STYLES
from tasks.base import RegionTask
from tasks.compare import CompareWithOSM

log = logging.getLogger("luigi-interface")

#: map layers of the report: (name, file under data/<region>, colour, shown at first); names and
#: colours from the one palette (pipeline.statuses) that the QGIS project uses too
LAYERS = ((PREDICTED.label, "predictions.geojson", PREDICTED.color, True),
          *((STATUS_STYLES[s].label, f"compare/{s}.geojson", STATUS_STYLES[s].color, True)
            for s in ("missing_in_osm", "not_seen", "unknown", "offset")))


def _model_tasks(task: RegionTask) -> list[Any]:
    """EvaluateModel when the region predicts with a model and has labels to evaluate it on (its
    figures go into the report)."""
    if task.cfg.section("vectorize").source != "predictions" or not task.cfg.labelled:
        return []
    from tasks.predict import EvaluateModel

    return [EvaluateModel(config=task.config)]


class RunManifest(RegionTask):
    """``data/<region>/run.json`` from the task records that the region's tasks left."""

    stage = "run"

    def requires(self) -> Any:
        return [CompareWithOSM(config=self.config), *_model_tasks(self)]

    def manifest_path(self) -> Path:
        return self.data_dir / "run.json"

    def run(self) -> None:
        cfg = self.cfg
        for tmp in (self.data_dir / "_runlog").glob(".*.tmp"):  # records whose writer was killed
            tmp.unlink(missing_ok=True)
        inputs = [p for s in ("synthetic", "extract", "imagery") for p in stage_inputs(cfg, s) if Path(p).is_file()]
        digests = {s: stage_digest(cfg, s) for s in STAGES if s not in ("run", "report")}
        body = run_manifest(cfg.name, str(cfg.path), self.digest(), read_records(self.data_dir / "_runlog"),
                            input_checksums(sorted(set(inputs))), _device(self.data_dir),
                            outputs=output_checksums(self.data_dir, cfg.name), stage_digests=digests,
                            model_init=_model_init(self.data_dir))
        self.output().write(body)


class RegionReport(RegionTask):
    """``data/<region>/report.html``: one page to look at what the region produced."""

    stage = "report"

    def owned_files(self) -> list[Path]:
        return [*super().owned_files(), self.data_dir / "report.html"]

    def requires(self) -> Any:
        return RunManifest(config=self.config)

    def manifest_path(self) -> Path:
        return self.data_dir / "_manifests" / "report.json"

    def run(self) -> None:
        d = self.data_dir
        page = render_report(region_report(d, self.cfg.name, self.cfg.zoom))
        atomic_write_bytes(d / "report.html", page.encode())
        self.output().write({"root": str(d), "files": {"report.html": {"size": (d / "report.html").stat().st_size}}})
        log.info("report: %s", (d / "report.html").resolve())


def _device(d: Path) -> str | None:
    try:
        return str(read_manifest(d / "_manifests" / "train.json").get("device"))
    except ManifestError:
        return None


def _model_init(d: Path) -> dict[str, Any] | None:
    """The lineage of a fine-tuned model (``[train] init``), as the train manifest records it."""
    try:
        init = read_manifest(d / "_manifests" / "train.json").get("init")
    except ManifestError:
        return None
    return dict(init) if isinstance(init, dict) else None


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def region_figures(d: Path) -> dict[str, list[tuple[str, str]]]:
    """The report's tables from the region's outputs (those that exist)."""
    figs: dict[str, list[tuple[str, str]]] = {}
    metrics = read_json(d / "model" / "metrics.json")
    if metrics and isinstance(metrics.get("iou"), dict):
        scope = metrics.get("scope", "test")
        figs[f"Model ({scope} tiles)"] = [
            (f"{name} {k}", _fmt(metrics.get(k, {}).get(name)))
            for name in metrics["iou"] for k in ("iou", "precision", "recall", "f1")]
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
    calibration = read_json(d / "compare" / "calibration.json")
    if calibration and calibration.get("layers"):
        from pipeline.compare_report import review_lines

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
    from pipeline.features import read_features

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
    for title, rel, color, visible in LAYERS:
        gj = read_json(d / rel)
        if gj and gj.get("features") is not None:
            layers.append(MapLayer(title, gj, color, visible=visible))
    tiles = None
    try:
        idx = read_tile_index(d / "images")
        written = idx[idx.status == "written"]
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
