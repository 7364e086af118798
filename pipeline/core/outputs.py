"""Whole-region output files (model, vectors, comparison, report, run manifest) checked like tiles.

A region task's manifest lists its output files as ``files: {relative path: {"size", "sha256",
"mtime_ns"}}`` under ``root`` (:func:`file_entries`). A plain rerun checks sizes (one ``stat`` per
file, :func:`pipeline.core.manifests.manifest_is_current`); ``Verify`` checks sha256 (:func:`damaged_files`) and
deletes what is damaged, so the task that owns it is redone. A manifest that is itself the output
(``run.json``) carries ``self_sha256``, the digest of its own body (:func:`seal`, :func:`seal_intact`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the manifest key that holds the sha256 of the manifest's own body (written by :func:`seal`)
SEAL_KEY = "self_sha256"


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The sha256 of a file, read in chunks (raises OSError when it cannot be read)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_identity(path: str | Path) -> tuple[str, int, int]:
    """(resolved path, size, mtime_ns) of a file: the key under which a process remembers what it
    read or computed from the file (raises OSError when it is missing)."""
    p = Path(path)
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def file_entry(path: str | Path) -> dict[str, Any]:
    """``{"size", "sha256", "mtime_ns"}`` of a file as it is now."""
    st = Path(path).stat()
    return {"size": st.st_size, "sha256": file_sha256(path), "mtime_ns": st.st_mtime_ns}


def file_entries(root: str | Path, files: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` with size, sha256 and mtime of each file under ``root`` filled in
    (a file a task lists is read once, when its manifest is written)."""
    return {rel: {**dict(info), **file_entry(Path(root) / rel)} for rel, info in files.items()}


def entry_matches(path: str | Path, entry: Mapping[str, Any] | None, check_sha: bool = True) -> bool:
    """True when ``path`` exists with the recorded size (and, with ``check_sha`` and a recorded
    sha256, the recorded sha256); False without a record."""
    if not entry:
        return False
    try:
        if Path(path).stat().st_size != entry.get("size"):
            return False
        return not (check_sha and entry.get("sha256")) or file_sha256(path) == entry["sha256"]
    except OSError:
        return False


def damaged_files(manifest: Mapping[str, Any], default_root: str | Path) -> list[str]:
    """The files a manifest lists that are missing or differ from their record (size or sha256)."""
    root = Path(manifest.get("root", default_root))
    return [rel for rel, info in manifest.get("files", {}).items() if not entry_matches(root / rel, info)]


def restore_mtime(path: str | Path, entry: Mapping[str, Any] | None) -> bool:
    """Give a rebuilt file its recorded modification time when its bytes equal the record (same
    bytes, same identity: what read its fingerprint need not be redone). True when it did."""
    if not entry or "mtime_ns" not in entry or not entry_matches(path, entry):
        return False
    ns = int(entry["mtime_ns"])
    os.utime(path, ns=(ns, ns))
    return True


def _body_sha256(body: Mapping[str, Any]) -> str:
    text = json.dumps({k: v for k, v in body.items() if k != SEAL_KEY}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def seal(body: Mapping[str, Any]) -> dict[str, Any]:
    """``body`` with :data:`SEAL_KEY`: the sha256 of its canonical JSON (for a manifest that is
    itself an output, like ``run.json``)."""
    return {**body, SEAL_KEY: _body_sha256(body)}


def seal_intact(path: str | Path) -> bool:
    """True when the manifest at ``path`` is readable JSON and, if sealed, its body still has
    the sealed digest (a manifest without a seal counts as intact when it parses)."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(body, dict):
        return False
    return SEAL_KEY not in body or body[SEAL_KEY] == _body_sha256(body)
