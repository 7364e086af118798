"""The run manifest of a region (``data/<region>/run.json``): what ran, with what, how fast.

Each finished task leaves one small record (``data/<region>/_runlog/<task id>.json``: task,
shard, worker host and pid, start and end times in UTC ISO 8601, seconds, tiles made); this
module folds them into one manifest with the versions of the project and its main dependencies
(and of the GDAL, PROJ and GEOS libraries they link), the git commit of the code, one config
digest, the sha256 of the inputs and of the region's outputs and the device used, so results can
be reproduced and compared. Records are per task files, not one shared file, so workers on
several machines never write the same file.

The config digest of ``run.json`` is the ``run`` stage's chained digest: it covers the typed
config of every stage the run depends on and its input files, so two runs with the same value
made the same outputs from the same config. The other files' ``config_digest`` are their own
stage's (``best.pt``: train, ``metrics.json``: evaluate, the export manifest: export, ...):
``stage_digests`` lists each stage's, so any of them can be looked up here.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import platform
import subprocess
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict, Unpack

from pipeline.core.outputs import file_sha256

#: distributions whose versions go into the run manifest
DISTRIBUTIONS = ("osmsat", "numpy", "shapely", "rasterio", "pyproj", "geopandas", "pyogrio", "osmium",
                 "mercantile", "luigi", "torch", "segmentation-models-pytorch", "albumentations", "onnxruntime")


def versions(names: Iterable[str] = DISTRIBUTIONS) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed), and Python's."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


#: outputs of a region whose sha256 ``run.json`` records (relative to ``data/<region>``; globs allowed;
#: ``{region}`` is the region's name). Tiles are checksummed in their shard manifests and indexes.
OUTPUTS = ("features.parquet", "tiles.csv", "split.csv", "split_stats.json", "images/index.parquet",
           "masks/index.parquet", "predictions/index.parquet", "model/best.pt", "model/metrics.json",
           "model/metrics.csv", "model/training.png", "model/export/model.onnx", "model/export/model.stac.json",
           "predictions.geojson", "predictions.gpkg", "compare/*.geojson", "compare/*.qml", "compare/summary.json",
           "compare/report.md", "compare/map.png", "compare/missing_in_osm.osm", "compare/maproulette.geojsonl",
           "{region}.qgs", "osm_features.gpkg")
NOT_A_CHECKOUT = "not a git checkout"


def code_commit(root: str | Path | None = None) -> dict[str, Any]:
    """The git commit of the code under ``root`` (default: this project's folder) and whether
    tracked files differ from it (``dirty``); ``{"commit": "not a git checkout"}`` when it is
    none (an installed package, an unpacked archive) or git is absent."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30,
                                 check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {"commit": NOT_A_CHECKOUT}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def library_versions() -> dict[str, str | None]:
    """Versions of the native libraries the geodata stack links: GDAL (rasterio's and pyogrio's
    own copies), PROJ (pyproj's) and GEOS (shapely's); None for one that cannot be loaded."""
    out: dict[str, str | None] = {}
    probes = {"gdal": ("rasterio", "__gdal_version__"), "gdal_pyogrio": ("pyogrio", "__gdal_version_string__"),
              "proj": ("pyproj", "proj_version_str"), "geos": ("shapely", "geos_version_string")}
    for name, (module, attr) in probes.items():
        try:
            out[name] = str(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError):
            out[name] = None
    return out


def output_checksums(data_dir: str | Path, region: str, patterns: Iterable[str] = OUTPUTS) -> dict[str, str]:
    """``{path relative to data_dir: sha256}`` of the region's outputs that exist (see ``OUTPUTS``)."""
    d = Path(data_dir)
    found: set[Path] = set()
    for pat in patterns:
        found.update(p for p in d.glob(pat.format(region=region)) if p.is_file())
    return {p.relative_to(d).as_posix(): file_sha256(p) for p in sorted(found)}




def input_checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path: sha256}`` of the region's input files (``"missing"`` for an absent one)."""
    out = {}
    for p in paths:
        out[str(p)] = file_sha256(p) if Path(p).is_file() else "missing"
    return out


def read_json(path: str | Path) -> Any:
    """The JSON value in ``path``, or None when the file is absent or unreadable (an output a
    region has not made, or one a rerun rewrites)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every task record under ``folder`` (unreadable ones are skipped: they are rewritten by a
    rerun of their task), sorted by start time."""
    recs = []
    for p in sorted(Path(folder).glob("*.json")):
        try:
            recs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    return sorted(recs, key=lambda r: (str(r.get("started", "")), str(r.get("task", ""))))


def stage_summary(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task family: runs, summed seconds, first start, last end, tiles and tiles per second
    (summed tile counts over summed task seconds), the largest peak resident memory of a process
    that ran one (MiB; None for records without it), and the workers that ran it."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[str(r["task"])].append(r)
    out = {}
    for task, rs in by.items():
        secs = sum(float(r.get("seconds", 0.0)) for r in rs)
        tiles = sum(int(r.get("tiles") or 0) for r in rs)
        out[task] = {
            "runs": len(rs), "seconds": round(secs, 3),
            "started": min(str(r.get("started", "")) for r in rs),
            "ended": max(str(r.get("ended", "")) for r in rs),
            "tiles": tiles, "tiles_per_s": round(tiles / secs, 1) if tiles and secs > 0 else None,
            "peak_mib": max((float(r["peak_mib"]) for r in rs if r.get("peak_mib")), default=None),
            "workers": sorted({str(r.get("worker", "?")) for r in rs}),
        }
    return out


class RunProvenance(TypedDict, total=False):
    """The keyword arguments of :func:`run_manifest` beside the run itself (each optional):
    ``outputs`` the sha256 of the region's outputs (:func:`output_checksums`), ``stage_digests``
    each stage's config digest, ``code`` the code's commit (:func:`code_commit` when None or
    absent), ``model_init`` the lineage of a fine-tuned model (``[train] init``: the model it
    started from, its path and sha256)."""

    outputs: dict[str, str] | None
    stage_digests: dict[str, str] | None
    code: dict[str, Any] | None
    model_init: dict[str, Any] | None


def run_manifest(name: str, config_path: str, config_digest: str, records: list[dict[str, Any]],
                 inputs: dict[str, str], device: str | None, **provenance: Unpack[RunProvenance]) -> dict[str, Any]:
    """The body of ``run.json``: ``config_digest`` is the one digest of the run (the ``run``
    stage's, see the module doc); ``provenance`` (:class:`RunProvenance`, as keywords): the
    outputs' sha256, the stages' digests, the code's commit (:func:`code_commit` when not
    given) and the lineage of a fine-tuned model, written as ``model_init`` when there is one."""
    outputs, stage_digests = provenance.get("outputs"), provenance.get("stage_digests")
    code, model_init = provenance.get("code"), provenance.get("model_init")
    stages = stage_summary(records)
    return {
        "region": name, "config": config_path, "config_digest": config_digest,
        "config_digest_is": "the run stage's chained digest: the typed config of every stage the run depends on "
                            "and their input files; other files carry their own stage's digest (stage_digests)",
        "code": code if code is not None else code_commit(),
        "versions": versions(), "libraries": library_versions(), "platform": platform.platform(), "device": device,
        "inputs": inputs, "outputs": outputs or {}, "stage_digests": stage_digests or {},
        "started": min((s["started"] for s in stages.values()), default=None),
        "ended": max((s["ended"] for s in stages.values()), default=None), "stages": stages,
        **({"model_init": model_init} if model_init else {}),
    }
