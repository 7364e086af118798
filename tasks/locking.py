"""How a task's ``run`` is wrapped: under the task's lock (:func:`locked`), or, for a ``run`` that
yields dynamic dependencies, without one (:func:`dynamic`)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from pipeline.core.atomic import clean_stale_temps
from pipeline.core.locks import file_lock

if TYPE_CHECKING:
    from tasks.base import RegionTask

log = logging.getLogger("luigi-interface")

_Task = TypeVar("_Task", bound="RegionTask")


def locked(run: Callable[[_Task], None]) -> Callable[[_Task], None]:
    """Decorate a task's ``run``: it runs under the task's lock (:meth:`RegionTask.lock_path`:
    ``_manifests/<Task>.lock``; a shard's ``<product>/_tmp/<shard>.lock``, so shards of one product
    run side by side, one shard never twice at once). A second run waits, then finds the output
    whole and does nothing (``skipped``); else the temporary files killed runs left beside the
    task's outputs go first, a task that needs labels is refused on a region without them, and
    the scheduler hears 100 % when ``run`` returns."""

    @functools.wraps(run)
    def locked_run(self: _Task) -> None:
        try:
            with file_lock(self.lock_path(), on_wait=lambda: log.info("%s: waiting for another run", self)):
                self.skipped = self.output_whole()
                if self.skipped:
                    return
                clean_stale_temps(*self.owned_files())
                self.check_labels()
                run(self)
                self.progress_done()
        finally:
            if self.lock_path().parent.name == "_tmp":  # a shard's lock folder goes when empty
                with contextlib.suppress(OSError):
                    self.lock_path().parent.rmdir()

    locked_run.locking = "locked"  # type: ignore[attr-defined]
    return locked_run


def dynamic(run: Callable[[_Task], Iterator[Any]]) -> Callable[[_Task], Iterator[Any]]:
    """Decorate a ``run`` that yields dynamic dependencies (shard tasks, known once ``tiles.csv``
    is): no lock, as Luigi may stop it at a ``yield`` and start it again; the tasks it yields are
    locked, and what it writes after them is written atomically. With its own output whole (run
    only for an upstream repair) it does nothing (``skipped``); the scheduler hears 100 % at its end."""

    @functools.wraps(run)
    def dynamic_run(self: _Task) -> Iterator[Any]:
        self.check_labels()
        self.skipped = self.output_whole()
        if not self.skipped:
            yield from run(self)
        self.progress_done()

    dynamic_run.locking = "dynamic"  # type: ignore[attr-defined]
    return dynamic_run
