"""Command line: ``python -m tasks <Task> --config configs/<region>.toml [--debug] [luigi options]``.

Validates the region config before Luigi starts (a typo exits 2 with the file and key named),
uses ``configs/luigi.toml`` and the local scheduler unless told otherwise, and exits with
Luigi's ``[retcode]`` codes so that a failed run exits non-zero.

Luigi's log (progress, tracebacks, the execution summary) goes to
``<data_dir>/logs/<Task>-<UTC time>-<pid>.log``; the terminal shows warnings and, when the run
fails, ends with ONE line ``error: <file/key/tile>: <what> — <how to fix>``. ``--debug`` keeps
Luigi's own logging on the terminal instead (tracebacks included). An unknown task or a missing
``--config`` is one line too, before anything is created; Ctrl-C (or SIGTERM) ends the run with
``interrupted; rerun to resume`` (worker processes end quietly).

It imports the module of the named task only (``TASK_MODULES``; upstream modules come through
``requires()``), so a run with nothing to do costs little more than importing Luigi.

While it runs, the command holds a shared lock on ``<data_dir>/_manifests/runs.flock`` (``make
clean-tmp`` refuses while it is held) and an exclusive one on its errors file in the system temp
folder, which it deletes when it ends (``make clean-tmp`` deletes those of killed runs).
What a run holds and reports (its files, failures, terminal log, signals) is in :mod:`tasks.cli_run`.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tasks.cli_run import (
    DATA_DIR_ENV,
    ERRORS_ENV,
    LOG_ENV,
    Held,
    Signals,
    end_interrupted,
    on_signal,
    prepare_run,
    record_failure,
    report,
    setup_logging,
    worker_interrupted,
)

#: the command's tasks, in the order of its usage text, with their line there; the stage table
#: (:mod:`pipeline.core.stages`) names the module of each stage task, tests/test_cli.py checks every
#: stage task is here
TASK_HELP: dict[str, str] = {
    "MakeSampleRegion": "generate the synthetic sample region (demo.osm.pbf, orthophoto.tif, truth.geojson)",
    "FetchOSM": "download the region's .osm.pbf from [osm] url when [osm] path is missing",
    "ExtractFeatures": ".osm.pbf (or [labels] vector files) -> features.parquet (EPSG:4326, ids, class, tags)",
    "CoverTiles": "features -> tiles.csv (z,x,y,shard)",
    "RasterizeMasks": "one shard (--shard QUADKEY) -> masks/z/x/y.png + masks/_shards/QUADKEY.json",
    "MasksAll": "every shard's masks",
    "FetchImagery": "one shard (--shard QUADKEY) -> images/z/x/y.<ext> + images/_shards/QUADKEY.json",
    "ImageryAll": "every shard's imagery + coverage summary",
    "SplitDataset": "image/mask pairs -> split.csv (train/val/test by block) + split_stats.json",
    "TrainModel": "split -> model/best.pt, last.pt, metrics.csv, training.png (resumes last.pt)",
    "Predict": "one shard (--shard QUADKEY) -> predictions/z/x/y.png + predictions/_shards/QUADKEY.json",
    "PredictAll": "every shard with imagery ([predict] model, default model/best.pt)",
    "EvaluateModel": "predictions vs masks on the test split -> model/metrics.json",
    "ExportModel": "model/export/model.onnx (checked with onnxruntime) + model.stac.json (STAC mlm card)",
    "Vectorize": "one shard (--shard QUADKEY) of predictions/masks -> vectors/QUADKEY.parquet",
    "MergeFeatures": "every shard vectorised and merged -> predictions.geojson + predictions.gpkg",
    "CompareWithOSM": "predictions vs OSM -> compare/ (change layers, .osm, MapRoulette tasks, report) + QGIS project",
    "RunManifest": "run.json: versions, config digest, input checksums, device, time per stage",
    "RegionReport": "report.html: slippy map of imagery, OSM, predictions and change layers; curves; figures",
    "RegionPipeline": "everything above that the config asks for",
    "Verify": "check every tile's sha256 against the manifests; redo damaged shards",
    "Prune": "delete tiles that today's index does not list (left by an earlier config)",
}

USAGE = ("usage: python -m tasks TASK --config configs/<region>.toml [--workers N] [--debug] [luigi options]\n\n"
         "Tasks (each stage's output lands under data/<region>/):\n"
         + "".join(f"  {name:<17} {line}\n" for name, line in TASK_HELP.items()) + """
The local scheduler is used unless --scheduler-host or --scheduler-url is given.
The log is written to <data_dir>/logs/; --debug shows Luigi's log (with tracebacks) on the terminal.
Luigi settings: configs/luigi.toml (override with LUIGI_CONFIG_PATH). Luigi's own options:
python -m tasks TASK --help-all
""")

def imagery_help() -> str:
    """The ``[imagery] source`` values (the registry, :mod:`pipeline.imagery.sources`), for ``--help``."""
    from pipeline.imagery.registry import SOURCES
    from pipeline.imagery.sources import RASTER  # noqa: F401  (registers the built-in sources)

    return "\nImagery sources ([imagery] source = ...):\n" + "".join(
        f"  {name:<17} {src.description}\n" for name, src in SOURCES.items())


#: what Luigi registers from ``tasks/`` besides the stage tasks (other tasks, base classes and
#: ``luigi.Config`` sections) -> the module that defines it
OTHER_MODULES: dict[str, str] = {
    "RegionTask": "base", "ShardTask": "base", "AllShardsTask": "base",
    "osmsat": "settings", "download": "settings",
    "FetchOSM": "extract", "ImageryPlan": "imagery", "train_run": "train",
    "RegionPipeline": "pipeline",
    "Verify": "upkeep", "Prune": "upkeep", "_Always": "upkeep",
}


def _stage_task_modules() -> dict[str, str]:
    """Every stage task and shard task of the stage table -> its module under ``tasks/``."""
    from pipeline.core.stages import STAGES

    return {cls: module for stage in STAGES.values() for name in (stage.task, stage.shard_task) if name
            for module, cls in [name.rsplit(".", 1)]}


#: every name Luigi registers from ``tasks/`` (tasks, base classes and ``luigi.Config`` sections) ->
#: the module that defines it: the command imports only the module of the task it runs (and,
#: through ``requires()``, those upstream), so a no-op run does not pay for every stage's imports.
#: tests/test_startup.py checks this table against Luigi's register after ``register_tasks()``.
TASK_MODULES: dict[str, str] = {**_stage_task_modules(), **OTHER_MODULES}

#: imported for every run: the operational settings (``--download-*``, ``--osmsat-*`` on any
#: command line) and the task records that ``run.json`` is made from (Luigi event handlers)
ALWAYS_MODULES = ("settings", "runlog")

#: every module of ``tasks/`` that registers something with Luigi (``register_tasks``)
STAGE_MODULES = tuple(dict.fromkeys(m for m in (*TASK_MODULES.values(), *ALWAYS_MODULES) if m != "base"))


def register_tasks() -> None:
    """Import every stage module so that Luigi knows all its tasks (``--help-all``, ``Verify``)."""
    import importlib

    for name in STAGE_MODULES:
        importlib.import_module(f"tasks.{name}")


def import_for(argv: list[str]) -> None:
    """Import what a command line needs: the module of its task (``argv[0]``, when this project
    defines it), :data:`ALWAYS_MODULES`, and the module of each task or ``luigi.Config`` section
    whose parameter an option sets globally (``--train-run-gpus 2``, ``--Predict-device cpu``);
    every stage module for ``--help-all`` or no task. Upstream modules come when ``requires()`` runs."""
    import importlib

    if not argv or argv[0].startswith("-") or any(a.startswith("--help-all") for a in argv):
        register_tasks()
        return
    names = [TASK_MODULES[argv[0]]] if argv[0] in TASK_MODULES else []
    names += [module for name, module in TASK_MODULES.items()
              if any(a.startswith(f"--{name.replace('_', '-')}-") for a in argv[1:])]
    for name in dict.fromkeys((*ALWAYS_MODULES, *names)):
        importlib.import_module(f"tasks.{name}")



def _check_task(argv: list[str]) -> str | None:
    """One line for an unknown task (with "did you mean") or a missing ``--config``, else None."""
    from luigi.task_register import Register

    name = argv[0]
    if name not in TASK_MODULES and name not in Register.task_names():
        close = difflib.get_close_matches(name, list(TASK_MODULES), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown task {name!r} — {hint}python -m tasks --help lists the tasks"
    from tasks.base import RegionTask

    asks_help = any(a.startswith("--help") for a in argv)
    if issubclass(Register.get_task_cls(name), RegionTask) and _config_arg(argv) is None and not asks_help:
        return (f"{name}: --config is missing — name the region config: "
                f"python -m tasks {name} --config configs/<region>.toml")
    return None


def _check_labels(name: str, cfg: Any) -> None:
    """ConfigError when task ``name`` needs labels and region ``cfg`` has none (before Luigi starts)."""
    from luigi.task_register import Register, TaskClassNotFoundException

    from tasks.base import labels_needed

    try:
        cls = Register.get_task_cls(name)
    except TaskClassNotFoundException:
        return
    if getattr(cls, "needs_labels", False) and not cfg.labelled:
        from pipeline.core.errors import ConfigError

        raise ConfigError(labels_needed(name, cfg.path))


def _config_arg(argv: list[str]) -> str | None:
    """The value of ``--config PATH`` or ``--config=PATH``."""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    return None


def main(argv: list[str]) -> int:
    """The command: one line for every way it fails, Ctrl-C included (see the module docstring)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + imagery_help())
        return 0
    Signals.pid = os.getpid()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    held = Held()
    try:
        code = _main(argv, held)
        if Signals.received:  # an interrupt swallowed below is still one
            end_interrupted(held)
        return code
    except KeyboardInterrupt:
        end_interrupted(held)
    except RuntimeError as exc:
        if worker_interrupted(exc):
            end_interrupted(held)
        raise
    finally:
        held.release()


def _main(argv: list[str], held: Held) -> int:
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    root = Path(__file__).resolve().parents[1]
    os.environ.setdefault("LUIGI_CONFIG_PARSER", "toml")
    os.environ.setdefault("LUIGI_CONFIG_PATH", str(root / "configs" / "luigi.toml"))
    import luigi
    import luigi.retcodes

    from pipeline.config.region import load_config
    from pipeline.core.errors import OsmsatError
    from pipeline.core.stages import task_stages
    from pipeline.core.user_errors import os_error_message
    from pipeline.model.regions import check_environment, check_model_files

    import_for(argv)
    if not argv[0].startswith("-") and (wrong := _check_task(argv)) is not None:
        print(f"error: {wrong}", file=sys.stderr)
        return 2
    cfg = None
    if (config := _config_arg(argv)) is not None:
        try:
            cfg = load_config(config)
            check_environment(cfg)
            if not argv[0].startswith("-"):
                check_model_files(cfg, task_stages(argv[0], cfg))
            _check_labels(argv[0], cfg)
        except OsmsatError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    if not any(a.startswith(("--scheduler-host", "--scheduler-url", "--local-scheduler")) for a in argv):
        argv = [*argv, "--local-scheduler"]
    run = None
    if cfg is not None and not argv[0].startswith("-"):
        try:
            run = prepare_run(argv[0], cfg.data_dir, held)
        except OSError as exc:
            print(f"error: {os_error_message(exc, cfg.data_dir)}", file=sys.stderr)
            return 1
        log_path, errors = run
        os.environ.update({ERRORS_ENV: str(errors), DATA_DIR_ENV: str(cfg.data_dir), LOG_ENV: str(log_path)})
        luigi.Task.event_handler(luigi.Event.FAILURE)(record_failure)
        luigi.Task.event_handler(luigi.Event.BROKEN_TASK)(record_failure)
        if not debug:
            setup_logging(log_path)
    code = 0
    try:
        luigi.retcodes.run_with_retcodes(argv)
    except SystemExit as exc:
        code = int(exc.code or 0) if not isinstance(exc.code, str) else 1
    if run is not None and not Signals.received:
        report(code, run[1], run[0], argv[0])
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
