"""Atomic file writes, standard library only (so that model code can use them on a GPU host
without the geospatial stack): a temporary file in the same folder (or a given scratch folder on
the same filesystem), renamed into place with ``os.replace``, so a killed run never leaves a
partial file under a final name; and the clean-up of the temporary files that killed writes left."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path, scratch: str | Path | None = None) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to ``path``, on error delete it.

    The temporary name never ends with the final suffix, so globbing ``*.png`` never sees it.
    """
    path = Path(path)
    folder = Path(scratch) if scratch is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = create_temp(folder, f".{path.name}.", ".tmp")
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_temp(folder: Path, prefix: str, suffix: str) -> str:
    """Create an empty file ``folder/<prefix><random><suffix>`` with mode 0666 less the umask
    (the kernel applies the umask; ``mkstemp`` would make it 0600) and return its path."""
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{folder}: cannot create a temporary file {prefix}*{suffix}")


def atomic_write_bytes(path: str | Path, data: bytes, scratch: str | Path | None = None) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename)."""
    with atomic_path(path, scratch) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as pretty, key-sorted JSON atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n").encode())


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary files that ``atomic_path(path)`` calls killed mid-write left beside ``path``
    (``.<name>.<random>.tmp``, and what writers made from them, e.g. ``.tmp.aux.xml``)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*") if p.is_file())


def clean_stale_temps(*paths: str | Path) -> list[Path]:
    """Delete the temporary files that killed ``atomic_path`` writes of ``paths`` left beside
    them (the caller owns these outputs, e.g. holds their lock); returns what went."""
    gone: list[Path] = []
    for p in paths:
        for tmp in stale_temps(p):
            tmp.unlink(missing_ok=True)
            gone.append(tmp)
    return gone
