"""Make a region's model folder whole before training resumes (``TrainModel``).

``last.pt`` holds the full training state: weights of the last epoch (and their moving
average), the history and the best epoch. When ``best.pt`` or ``metrics.csv`` is missing or
damaged they are rebuilt from it (``best.pt`` only when the best epoch is the last one: its
weights are those of ``last.pt``); when that cannot be done, or ``last.pt`` itself is damaged, the
folder's checkpoints are deleted and the model is trained afresh, so it is never left half.

A *finished* run of another config (the region's train manifest records another digest and the
``last.pt`` it recorded, unchanged) is not a run to resume: :func:`retire_finished_run` moves its
model (``best.pt``, ``metrics.csv``, ``training.png``) to ``previous/`` so that today's config
trains afresh. An unfinished run of another config is left for training to refuse, so an edited
config never silently throws away hours of an interrupted run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ModelError
from pipeline.core.outputs import entry_matches, restore_mtime

#: the files of the model folder a region's train manifest records
MODEL_FILES = ("best.pt", "last.pt", "metrics.csv")


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_model_dir` did: ``action`` is ``"none"``, ``"rebuilt"`` (files named in
    ``files`` rebuilt from last.pt) or ``"retrain"`` (checkpoints deleted; ``why`` says why)."""

    action: str
    files: tuple[str, ...] = ()
    why: str = ""


def _whole(path: Path, entry: Mapping[str, Any] | None) -> bool:
    """A model file is whole when it matches its record, or (no record) when it exists."""
    return entry_matches(path, entry) if entry else path.is_file()


def _training_state(last: Path, digest: str) -> dict[str, Any] | None:
    """last.pt's checkpoint when it is readable and of today's digest, else None."""
    from pipeline.model.network import read_checkpoint

    try:
        blob = read_checkpoint(last)
    except ModelError:
        return None
    if blob.get("meta", {}).get("config_digest") != digest or "train_state" not in blob:
        return None
    return blob


def _rebuild_best(out: Path, blob: Mapping[str, Any]) -> None:
    """best.pt from last.pt's meta and weights (the best epoch is the last one): the weights'
    moving average when the run kept one (:mod:`pipeline.model.ema`), else the raw weights."""
    from pipeline.model.ema import averaged_weights
    from pipeline.model.network import write_checkpoint

    best = {k: blob[k] for k in ("format", "version", "model", "meta")}
    best["model"] = averaged_weights(blob["train_state"]) or best["model"]
    write_checkpoint(out / "best.pt", best)


def _start_afresh(out: Path, why: str) -> Repair:
    for name in MODEL_FILES:
        (out / name).unlink(missing_ok=True)
    return Repair("retrain", (), why)


def repair_model_dir(out_dir: str | Path, digest: str, recorded: Mapping[str, Mapping[str, Any]]) -> Repair:
    """Check ``best.pt``, ``last.pt`` and ``metrics.csv`` of ``out_dir`` against ``recorded`` (the
    ``files`` of today's train manifest, empty when there is none) and mend what is missing or
    damaged: see the module text. A ``last.pt`` of another config digest is left for training to
    refuse (its own error says what to do)."""
    from pipeline.model.trainlog import write_csv

    out = Path(out_dir)
    last = out / "last.pt"
    if not last.is_file():
        return Repair("none") if not (out / "best.pt").is_file() else _start_afresh(out, "last.pt is missing")
    whole = {n: _whole(out / n, recorded.get(n)) for n in MODEL_FILES}
    if all(whole.values()):
        return Repair("none")
    blob = _training_state(last, digest) if whole["last.pt"] else None
    if blob is None:
        if whole["last.pt"] and not recorded:
            return Repair("none")  # another config's checkpoint: training says so
        return _start_afresh(out, "last.pt is damaged")
    ts = blob["train_state"]
    rebuilt: list[str] = []
    if not whole["best.pt"]:
        if int(ts["best_epoch"]) != int(ts["epoch"]) + 1:
            return _start_afresh(out, f"best.pt is damaged and its epoch ({ts['best_epoch']}) is not the last")
        _rebuild_best(out, blob)
        restore_mtime(out / "best.pt", recorded.get("best.pt"))
        rebuilt.append("best.pt")
    if not whole["metrics.csv"]:
        write_csv(out / "metrics.csv", [dict(r) for r in ts["history"]])
        restore_mtime(out / "metrics.csv", recorded.get("metrics.csv"))
        rebuilt.append("metrics.csv")
    return Repair("rebuilt", tuple(rebuilt))


#: what a retired run keeps (its ``last.pt`` and TensorBoard events go: the run was finished)
RETIRED_FILES = ("best.pt", "metrics.csv", "training.png")


def retire_finished_run(out_dir: str | Path, digest: str, manifest: Mapping[str, Any] | None,
                        prefix: str = "") -> str | None:
    """Move the finished run of another config out of ``out_dir``'s way; the digest it had, or None.

    ``manifest`` is the region's train manifest (None when there is none), ``prefix`` its file keys'
    prefix for this model folder (``"cross/"``). The run is finished and of another config when
    the manifest records a digest other than ``digest`` and ``last.pt`` matches its record (size
    and sha256). Its :data:`RETIRED_FILES` go to ``out_dir/previous/`` (replacing an earlier
    retired run: one is kept), ``last.pt`` and ``tb/`` are deleted."""
    import shutil

    out = Path(out_dir)
    if not manifest or manifest.get("config_digest") in (None, digest):
        return None
    files = manifest.get("files", {})
    if not isinstance(files, Mapping) or not entry_matches(out / "last.pt", files.get(f"{prefix}last.pt")):
        return None
    previous = out / "previous"
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir(parents=True)
    for name in RETIRED_FILES:
        if (out / name).is_file():
            (out / name).replace(previous / name)
    (out / "last.pt").unlink()
    shutil.rmtree(out / "tb", ignore_errors=True)
    return str(manifest["config_digest"])
