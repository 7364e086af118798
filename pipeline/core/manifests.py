"""Manifests: the JSON file a task (or a shard) writes last, atomically, to say its work is done
(``{"version", "config_digest", ...}``); the work is current when its manifest records today's
config digest and the files it lists still have their sizes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.core.atomic import atomic_write_json
from pipeline.core.errors import ManifestError

MANIFEST_VERSION = 1


def write_manifest(path: str | Path, digest: str, body: dict[str, Any]) -> None:
    """Write a manifest: ``{"version", "config_digest", ...body}``, atomically."""
    atomic_write_json(path, {"version": MANIFEST_VERSION, "config_digest": digest, **body})


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read a manifest; raises ManifestError naming the file when it is not valid JSON."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: unreadable manifest ({exc}); delete it to redo that work") from exc
    if not isinstance(data, dict) or "config_digest" not in data:
        raise ManifestError(f"{path}: not an osmsat manifest; delete it to redo that work")
    return data


def manifest_is_current(path: str | Path, digest: str, check_files: bool = True) -> bool:
    """True when the manifest exists, records ``digest``, and every file it lists
    (``files: {relative path: {"size": n, ...}}``, relative to the manifest's ``root``) still
    exists with the recorded size."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        m = read_manifest(path)
    except ManifestError:
        return False
    if m.get("config_digest") != digest:
        return False
    if check_files:
        root = Path(m.get("root", path.parent))
        for rel, info in m.get("files", {}).items():
            p = root / rel
            try:
                if p.stat().st_size != info["size"]:
                    return False
            except OSError:
                return False
    return True
