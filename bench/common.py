"""Benchmark helpers: run a phase in a fresh process and report wall time and peak memory.

Benchmarks are scripts (``make bench``), never tests. Each phase runs in a forked child so
that its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import resource
import time
from collections.abc import Callable
from typing import Any

# one core, as the targets in the issues are stated per core
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GDAL_NUM_THREADS", "1")


def _child(fn: Callable[..., Any], args: tuple[Any, ...], q: mp.Queue[Any]) -> None:
    try:
        t0 = time.perf_counter()
        result = fn(*args)
        dt = time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - reported by the parent, which would otherwise wait forever
        q.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    q.put(("ok", (result, dt, peak_mb)))


def run_phase(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """Run ``fn(*args)`` in a forked process; return (result, seconds, peak RSS in MB)."""
    ctx = mp.get_context("fork")
    q: mp.Queue[Any] = ctx.Queue()
    p = ctx.Process(target=_child, args=(fn, args, q))
    p.start()
    while True:
        try:
            status, out = q.get(timeout=1.0)
            break
        except queue.Empty:
            if not p.is_alive():
                raise RuntimeError(f"benchmark phase {fn.__name__} died (exit code {p.exitcode})") from None
    p.join()
    if status != "ok":
        raise RuntimeError(f"benchmark phase {fn.__name__} failed: {out}")
    return out  # type: ignore[no-any-return]


def report(name: str, value: float, unit: str, **extra: Any) -> None:
    """Print one result line: ``name: value unit (k=v, ...)``."""
    tail = ", ".join(f"{k}={v}" for k, v in extra.items())
    print(f"{name}: {value:,.1f} {unit}" + (f" ({tail})" if tail else ""), flush=True)
