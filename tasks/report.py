"""The last stages of a region: ``RunManifest`` (``run.json``: code commit, versions (GDAL and
PROJ too), one config digest, input and output checksums, device, time and throughput per
stage) and ``RegionReport`` (``report.html``: a self-contained page with the slippy map, the
training curves and the figures)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_write_bytes
from pipeline.core.errors import ManifestError
from pipeline.core.manifests import read_manifest
from pipeline.core.runinfo import input_checksums, output_checksums, read_records, run_manifest
from pipeline.core.stages import STAGES, stage_digest, stage_inputs
from pipeline.review.region_report import region_report
from pipeline.review.report import render_report
from tasks.base import RegionTask, locked

log = logging.getLogger("luigi-interface")


class RunManifest(RegionTask):
    """``data/<region>/run.json`` from the task records that the region's tasks left."""

    stage = "run"

    def manifest_path(self) -> Path:
        return self.data_dir / "run.json"

    @locked
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

    def manifest_path(self) -> Path:
        return self.data_dir / "_manifests" / "report.json"

    @locked
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
