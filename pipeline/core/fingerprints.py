"""Fingerprints of a stage's input files that follow their content, not their timestamps.

A stage's digest (:mod:`pipeline.core.stages`) covers the files it reads from outside the project (an
OSM extract, label files, an orthophoto, a checkpoint). Their identity is ``"<size>:<mtime_ns>"``,
cheap to take, but a copy, a ``git checkout`` or a ``touch`` changes the time and not the bytes. So
each region keeps, in ``<data_dir>/_cache/fingerprints.json``, per input path: the size, the
time, the sha256 of the bytes (of the sorted entry names for a folder) and the fingerprint the
digests used. When size and time match, the recorded fingerprint is used as is (one ``stat``);
when only the time moved and the bytes hash the same, the recorded fingerprint is kept (and the new
time recorded); otherwise the file changed and its fingerprint becomes its new size and time.

The first fingerprint of a file is its size and time, as before this cache existed, so digests of
finished regions stay the same; the one cost is one sha256 of each input per region, once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: the cache file, relative to a region's ``data_dir``
CACHE_NAME = "_cache/fingerprints.json"

#: in-process memo: (cache file, input path, size, mtime_ns) -> fingerprint
_MEMO: dict[tuple[str, str, int, int], str] = {}


def content_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of a folder's sorted entry names (a file added or removed at
    its top changes it, as its mtime did)."""
    h = hashlib.sha256()
    if path.is_dir():
        for name in sorted(os.listdir(path)):
            h.update(name.encode("utf-8", "surrogateescape") + b"\0")
        return "dir:" + h.hexdigest()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load(cache: Path) -> dict[str, Any]:
    try:
        data = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: rebuilt from the files (digests of unchanged inputs stay)
    return data if isinstance(data, dict) else {}


def _save(cache: Path, updates: dict[str, dict[str, Any]]) -> None:
    """Merge ``updates`` into the cache file (re-read first: another worker may have added its
    own inputs) and replace it atomically; a read-only region keeps working without it."""
    from pipeline.core.atomic import atomic_path

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = {**_load(cache), **updates}
        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    except OSError:
        pass


def _record(path: Path, st: os.stat_result, old: dict[str, Any] | None) -> dict[str, Any]:
    """The cache entry for ``path`` as it is now, given its entry ``old`` (or None)."""
    sha = content_sha256(path)
    if old is not None and old.get("size") == st.st_size and old.get("sha256") == sha and "fp" in old:
        fp = str(old["fp"])  # same bytes, new time: the digests stay
    else:
        fp = f"{st.st_size}:{st.st_mtime_ns}"
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha, "fp": fp}


def input_fingerprints(paths: Iterable[str | Path], data_dir: str | Path) -> dict[str, str]:
    """``{path: fingerprint}`` for a stage's input files ('missing' for an absent one), using
    and updating the cache of region ``data_dir`` (see the module docstring)."""
    cache = Path(data_dir) / CACHE_NAME
    out: dict[str, str] = {}
    entries: dict[str, Any] | None = None
    updates: dict[str, dict[str, Any]] = {}
    for p in paths:
        key = str(p)
        try:
            st = Path(p).stat()
        except OSError:
            out[key] = "missing"
            continue
        memo = (str(cache), key, st.st_size, st.st_mtime_ns)
        if memo in _MEMO:
            out[key] = _MEMO[memo]
            continue
        if entries is None:
            entries = _load(cache)
        old = entries.get(key)
        if isinstance(old, dict) and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns \
                and "fp" in old:
            fp = str(old["fp"])
        else:
            try:
                rec = _record(Path(p), st, old if isinstance(old, dict) else None)
            except OSError:
                out[key] = f"{st.st_size}:{st.st_mtime_ns}"  # unreadable now: the time-based identity
                continue
            updates[key] = rec
            fp = rec["fp"]
        _MEMO[memo] = out[key] = fp
    if updates:
        _save(cache, updates)
    return out
