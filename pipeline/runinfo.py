"""The run manifest of a region (``data/<region>/run.json``): what ran, with what, how fast.

Each finished task leaves one small record (``data/<region>/_runlog/<task id>.json``: task,
shard, worker host and pid, start and end times in UTC ISO 8601, seconds, tiles made); this
module folds them into one manifest with the versions of the project and its main dependencies,
the config digest, input checksums and the device used, so results can be reproduced and
compared. Records are per task files, not one shared file, so workers on several machines never
write the same file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in ``chunk``-byte blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def input_checksums(paths: Iterable[str | Path]) -> dict[str, str]:
    """``{path: sha256}`` of the region's input files (``"missing"`` for an absent one)."""
    out = {}
    for p in paths:
        out[str(p)] = sha256_file(p) if Path(p).is_file() else "missing"
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
    (summed tile counts over summed task seconds), and the workers that ran it."""
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
            "workers": sorted({str(r.get("worker", "?")) for r in rs}),
        }
    return out


def run_manifest(name: str, config_path: str, config_digest: str, records: list[dict[str, Any]],
                 inputs: dict[str, str], device: str | None) -> dict[str, Any]:
    """The body of ``run.json``."""
    stages = stage_summary(records)
    return {
        "region": name, "config": config_path, "config_digest": config_digest,
        "versions": versions(), "platform": platform.platform(), "device": device,
        "inputs": inputs, "started": min((s["started"] for s in stages.values()), default=None),
        "ended": max((s["ended"] for s in stages.values()), default=None), "stages": stages,
    }
