"""Luigi task ``TrainModel``: split tiles -> ``data/<region>/model/{best,last}.pt`` + logs.

With ``[train_run] processes = N`` > 1 (luigi.toml) it starts ``torchrun --nproc-per-node N``
(one process per GPU); otherwise it trains in this process, on the GPU when there is one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import luigi

from pipeline.core.errors import ManifestError
from pipeline.core.manifests import read_manifest
from pipeline.model.repair import MODEL_FILES
from tasks.base import RegionTask, locked

log = logging.getLogger("luigi-interface")


class train_run(luigi.Config):  # noqa: N801 - the section name in luigi.toml
    """``[train_run]`` in luigi.toml: operational training settings."""

    device = luigi.Parameter(default="auto", description="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    workers = luigi.IntParameter(default=-1, description="DataLoader workers per process; -1: auto")
    processes = luigi.IntParameter(default=1, description="processes (GPUs) on this node; > 1 uses torchrun")


class TrainModel(RegionTask):
    """Train (or resume) the region's segmentation model; ``resources = {"gpu": 1}``."""

    needs_labels = True

    stage = "train"

    def owned_files(self) -> list[Path]:
        """The model folder's outputs (a rerun deletes what killed writes of them left)."""
        names = ("last.pt", "best.pt", "metrics.csv", "training.png")
        return [*super().owned_files(), *(self._dir(part) / n for part in self._parts() for n in names)]
    resources = {"gpu": 1}  # noqa: RUF012 - Luigi's class attribute
    progress_unit = "epoch"
    #: the note that validation takes long was given (once a run)
    _val_hint_given = False

    def output_whole(self) -> bool:
        """Done, and with ``[train] cross_fit`` the cross-fit model is there too (``cross_fit`` is no
        part of the main model's digest: turning it on trains only the second model)."""
        if not super().output_whole():
            return False
        if not self.cfg.train.cross_fit:
            return True
        with contextlib.suppress(ManifestError):
            return "cross/best.pt" in read_manifest(self.manifest_path()).get("files", {})
        return False

    def _parts(self) -> tuple[str, ...]:
        """``main``, and ``cross`` with ``[train] cross_fit`` (pipeline.model.train_run.PARTS)."""
        return ("main", "cross") if self.cfg.train.cross_fit else ("main",)

    def _dir(self, part: str) -> Path:
        from pipeline.model.train_run import part_dir

        return part_dir(self.data_dir, part)

    @locked
    def run(self) -> None:
        settings = train_run()
        self.progress(0, 1, "training")
        from pipeline.core.stages import stage_digest
        from pipeline.model.device import pick_device
        from pipeline.model.negatives import negatives_note
        from pipeline.model.train_run import default_workers, train_region

        note = negatives_note(self.cfg.labels, self.cfg.train.losses)
        if note:
            self.notice(note)
        device = pick_device(str(settings.device))  # CUDA is touched only here, inside run()
        workers = settings.workers if settings.workers >= 0 else default_workers(device)
        epochs = self.cfg.train.epochs
        files: dict[str, dict[str, Any]] = {}
        body: dict[str, Any] = {}
        for part in self._parts():
            if settings.processes > 1:
                self._torchrun(settings, part)
            self._repair(part)
            hist = train_region(self.cfg, stage_digest(self.cfg, "train"), device=device, workers=workers,
                                on_epoch=lambda row, p=part: self._epoch_done(row, epochs, p), part=part)
            prefix = "" if part == "main" else f"{self._dir(part).name}/"
            files |= {prefix + n: {} for n in MODEL_FILES}
            summary = {"best_epoch": hist.best_epoch, "best_miou": hist.best_miou, "epochs": len(hist.rows),
                       "last": {k: v for k, v in (hist.rows[-1] if hist.rows else {}).items()},
                       **({"init": hist.init} if hist.init else {})}
            body |= summary if part == "main" else {part: summary}
        self.output().write({"root": str(self.data_dir / "model"), "files": files, "device": str(device),
                             "processes": settings.processes, **body})

    def _repair(self, part: str = "main") -> None:
        """Mend a model folder from last.pt (or delete it to retrain) before training resumes; a
        finished run of another config moves to ``previous/`` first."""
        from pipeline.model.repair import repair_model_dir, retire_finished_run

        manifest: dict[str, Any] | None = None
        with contextlib.suppress(ManifestError):
            manifest = read_manifest(self.manifest_path()) if self.manifest_path().is_file() else None
        prefix = "" if part == "main" else f"{self._dir(part).name}/"
        old = retire_finished_run(self._dir(part), self.digest(), manifest, prefix)
        if old is not None:
            self.notice(f"{self._dir(part)}: the finished model of another config (digest {old}) moved to "
                        f"{self._dir(part) / 'previous'}/; training afresh with today's config")
        files = manifest.get("files", {}) if manifest and manifest.get("config_digest") == self.digest() else {}
        recorded = {k[len(prefix):]: v for k, v in files.items() if k.startswith(prefix)}
        done = repair_model_dir(self._dir(part), self.digest(), recorded)
        if done.action == "rebuilt":
            self.notice(f"{self._dir(part)}: rebuilt {', '.join(done.files)} from last.pt")
        elif done.action == "retrain":
            self.notice(f"{self._dir(part)}: {done.why}; training again from the start")

    #: seconds between two looks at ``metrics.csv`` while torchrun trains
    poll_s: ClassVar[float] = 5.0

    def _torchrun(self, settings: train_run, part: str = "main") -> None:
        """Train model ``part`` in ``settings.processes`` processes on this node (torchrun,
        standalone); the epochs finished so far (rows of its ``metrics.csv``) go to the scheduler."""
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={settings.processes}", "-m", "pipeline.model.train_run", "--config", str(self.config),
               "--workers", str(settings.workers), "--device", str(settings.device), "--part", part]
        epochs = self.cfg.train.epochs
        metrics = self._dir(part) / "metrics.csv"
        proc = subprocess.Popen(cmd)
        try:
            while proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.poll_s)
                self.progress(_rows(metrics), epochs, f"training ({settings.processes} processes), epoch")
        finally:
            if proc.poll() is None:  # this task was stopped: so are its trainers
                proc.kill()
                proc.wait()
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, cmd)

    def _epoch_done(self, row: Any, epochs: int, part: str = "main") -> None:
        """After each epoch: a log line (readable without a terminal) and the scheduler's progress."""
        note = _epoch_note(row) if part == "main" else f"cross-fit model: {_epoch_note(row)}"
        log.info("%s %d/%d (%.1f s, %.1f images/s)", note, row["epoch"], epochs, row["seconds"], row["images_per_s"])
        hint = _validation_hint(row, self.cfg.train.val_every)
        if hint and not self._val_hint_given:
            self._val_hint_given = True
            self.notice(hint)
        if int(row["epoch"]) == 1 and part == "main" and self.cfg.train.max_minutes <= 0:  # (a budget decides)
            few = _steps_hint(row, self.cfg.train.batch_size, epochs)
            if few:
                self.notice(few)
        self.progress(int(row["epoch"]), epochs, note)


def _epoch_note(row: Any) -> str:
    """The status message after an epoch: its training loss and, when there is a val split, mIoU."""
    miou = row.get("miou")
    val = f", val mIoU {miou:.3f}" if isinstance(miou, float) and math.isfinite(miou) else ""
    return f"training (loss {row['train_loss']:.4f}{val}), epoch"


#: validation's share of an epoch above which TrainModel suggests a larger ``[train] val_every``
VAL_SHARE = 0.25


def _validation_hint(row: Any, val_every: int) -> str | None:
    """A note when validating takes more than VAL_SHARE of the time (one validation per
    ``val_every`` epochs of training, as measured on this epoch)."""
    val, train = row.get("val_seconds"), row.get("seconds")
    if not isinstance(val, float) or not isinstance(train, float) or train <= 0:
        return None
    share = val / (val + val_every * train)
    if share <= VAL_SHARE:
        return None
    every = max(val_every + 1, math.ceil(val / train * (1 - VAL_SHARE) / VAL_SHARE))
    return (f"validation takes {share:.0%} of the training time ({val:.1f} s against {train:.1f} s an epoch); "
            f"[train] val_every = {every} would bound it to about {VAL_SHARE:.0%}")


#: fewer optimiser steps in a whole run than this earn a note: fine-tuning on 4 philippines tiles,
#: 30 steps left the model near where it started (test building IoU 0.51), 150 reached 0.70
#: (docs/notes/i19-travel.md)
MIN_STEPS = 100


def _steps_hint(row: Any, batch_size: int, epochs: int) -> str | None:
    """A note when ``epochs`` epochs of the first epoch's size make fewer than MIN_STEPS optimiser
    steps (the training images of an epoch: ``images_per_s`` x ``seconds`` of the row)."""
    rate, secs = row.get("images_per_s"), row.get("seconds")
    if not isinstance(rate, float) or not isinstance(secs, float) or not math.isfinite(rate * secs):
        return None
    images = max(1, round(rate * secs))
    per_epoch = math.ceil(images / max(1, batch_size))
    if per_epoch * epochs >= MIN_STEPS:
        return None
    need = math.ceil(1.5 * MIN_STEPS / per_epoch)
    return (f"only {per_epoch * epochs} optimiser steps in all ({images} training tiles at batch_size = "
            f"{batch_size}, {epochs} epochs): too few to move a model far; [train] epochs = {need} gives "
            f"{need * per_epoch} (measured: docs/notes/i19-travel.md)")


def _rows(csv_path: Path) -> int:
    """Data rows of a CSV file with a header (0 when it does not exist yet)."""
    try:
        with open(csv_path, "rb") as fh:
            return max(0, sum(1 for _ in fh) - 1)
    except OSError:
        return 0
