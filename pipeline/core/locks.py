"""File locks between runs, through :mod:`filelock` (``flock`` on POSIX: the kernel releases a
lock when its process dies, so a killed run never leaves one held).

:func:`file_lock` is the blocking lock of a task (``_manifests/<Task>.lock``) or a shard
(``<product>/_tmp/<shard>.lock``); :func:`try_lock` takes one only if no one holds it (the
clean-ups). Lock files are deleted while held, on release: a waiter that then gets the lock on
the deleted file tries again (:mod:`filelock` checks that the file it locked still has a name),
so two runs never both hold one. ``filelock`` itself is imported on first use, not at start-up.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from filelock import BaseFileLock


def _new_lock(path: Path) -> BaseFileLock:
    from filelock import FileLock

    # flock only: a soft lock (a marker file, filelock's fallback where flock is missing) would
    # outlive a killed process; there flock's error is raised instead, as before filelock
    return FileLock(path, fallback_to_soft=False)


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the ``with`` block; wait
    for another holder (``on_wait`` is called once first). The file is deleted on release, and a
    waiter that got the lock on a deleted file tries again, so two runs never both hold it."""
    from filelock import Timeout

    path = Path(path)
    waited = False
    while True:
        lock = _new_lock(path)
        try:
            lock.acquire(blocking=waited)
        except Timeout:  # another run holds it: say so once, then wait
            if on_wait is not None:
                on_wait()
            waited = True
        except FileNotFoundError:  # the folder is new, or another run just removed it empty
            path.parent.mkdir(parents=True, exist_ok=True)
        else:
            break
    try:
        yield
    finally:
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            lock.release()


def try_lock(path: str | Path) -> BaseFileLock | None:
    """An exclusive lock on ``path`` (created if needed) if no one holds one, else None;
    ``release()`` it when done (the file stays)."""
    from filelock import Timeout

    lock = _new_lock(Path(path))
    try:
        lock.acquire(blocking=False)
    except Timeout:
        return None
    return lock
