"""What one run of the command (``python -m tasks``) holds and reports, beside Luigi.

* its files: the log under ``<data_dir>/logs/``, a shared lock on ``<data_dir>/_manifests/runs.flock``
  and an exclusive one on its errors file in the system temp folder (:func:`prepare_run`; :class:`Held`
  releases them, the errors file deleted, however the run ends);
* its failures: Luigi FAILURE / BROKEN_TASK handlers in every process append the clear message to
  the errors file (:func:`record_failure`), printed when the run ends (:func:`report`);
* its terminal: warnings without tracebacks and notices (:func:`setup_logging`);
* its signals: Ctrl-C / SIGTERM end the command with one line (:func:`on_signal`,
  :func:`end_interrupted`) and forked workers without a traceback.

Imports nothing heavy at module level: the command imports it before it knows its task.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, ClassVar, NoReturn

#: environment variables through which task processes (forked by Luigi workers) report failures
ERRORS_ENV, DATA_DIR_ENV, LOG_ENV = "OSMSAT_ERRORS_FILE", "OSMSAT_DATA_DIR", "OSMSAT_LOG_FILE"


def record_failure(task: Any, exc: BaseException) -> None:
    """Luigi FAILURE / BROKEN_TASK handler: append the clear message to the run's errors file."""
    from pipeline.core.user_errors import clear_message

    path = os.environ.get(ERRORS_ENV)
    if not path:
        return
    msg = clear_message(exc, os.environ.get(DATA_DIR_ENV), os.environ.get(LOG_ENV))
    line = json.dumps({"task": task.task_id if hasattr(task, "task_id") else str(task), "message": msg})
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
    except OSError:
        print(f"error: {msg}", file=sys.stderr)  # the disk is full: say it now


INTERRUPTED = "interrupted; rerun to resume"


class Signals:
    """The command's process id (forked worker processes have others) and the signals it got."""

    pid = os.getpid()
    received: ClassVar[list[int]] = []


def on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGINT/SIGTERM: the command's process raises KeyboardInterrupt (reported in one line);
    a forked worker process (Luigi's, a DataLoader's) ends by the signal as if it had no
    handler, without a traceback: the command reports and a rerun resumes."""
    if os.getpid() != Signals.pid:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    Signals.received.append(signum)
    raise KeyboardInterrupt


def end_interrupted(held: Held) -> NoReturn:
    """End an interrupted run: release what it holds, print its one line and exit with the
    signal's code at once — the interpreter's shutdown would run the ``__del__`` of half-used
    objects (a DataLoader whose workers the signal ended prints a traceback from there)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the line is the last word, even if Ctrl-C is pressed again
    held.release()
    with contextlib.suppress(Exception):
        logging.shutdown()  # the log file gets what was logged
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(128 + (Signals.received[0] if Signals.received else signal.SIGINT))


class _Console(logging.Filter):
    """Warnings without tracebacks (those are in the log file), and notices."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "osmsat.notice":
            return record.levelno >= logging.INFO
        return record.levelno == logging.WARNING and record.exc_info is None


class _ConsoleFormat(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{'note' if record.name == 'osmsat.notice' else 'warning'}: {record.getMessage()}"


def setup_logging(log_path: Path) -> None:
    import luigi.configuration

    luigi.configuration.get_config().set("core", "no_configure_logging", True)
    logging.raiseExceptions = False  # a full disk must not print logging's own tracebacks
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    fh = logging.FileHandler(log_path, encoding="utf-8", delay=True)
    fh.setFormatter(logging.Formatter("%(asctime)s %(name)s[%(process)d] %(levelname)s: %(message)s"))
    console = logging.StreamHandler(sys.stderr)
    console.addFilter(_Console())
    console.setFormatter(_ConsoleFormat())
    root.addHandler(fh)
    root.addHandler(console)


class Held:
    """What the command deletes and closes when it ends, however it ends."""

    def __init__(self) -> None:
        self.fds: list[int] = []
        self.files: list[Path] = []

    def release(self) -> None:
        for path in self.files:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def prepare_run(task: str, data_dir: Path, held: Held) -> tuple[Path, Path]:
    """The run's log file under ``data_dir/logs`` and a temporary errors file (raises OSError
    with the path). Takes the run's locks; ``held`` gets their descriptors and the errors file."""
    from pipeline.core.upkeep import ERRORS_PREFIX, ERRORS_SUFFIX, RUN_LOCK

    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(data_dir))
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (data_dir / RUN_LOCK).parent.mkdir(parents=True, exist_ok=True)
    held.fds.append(fd := os.open(data_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o666))
    fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while `make clean-tmp` cleans (it holds it exclusively)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    log_path = logs / f"{task}-{stamp}-{os.getpid()}.log"
    # failures are collected outside data_dir: they must reach us when that disk is full
    fd, name = tempfile.mkstemp(prefix=f"{ERRORS_PREFIX}{task}-", suffix=ERRORS_SUFFIX)
    held.fds.append(fd)
    held.files.append(Path(name))
    fcntl.flock(fd, fcntl.LOCK_EX)  # ours: `make clean-tmp` deletes only errors files no run holds
    return log_path, Path(name)


def report(code: int, errors: Path, log_path: Path, task: str) -> None:
    """Print the failures (the first one last) or a one-line success."""
    found: list[str] = []
    if errors.is_file():
        for line in errors.read_text(encoding="utf-8").splitlines():
            msg = json.loads(line)["message"]
            if msg not in found:
                found.append(msg)
    errors.unlink(missing_ok=True)
    if code == 0:
        print(f"done: {task} (log: {log_path})", file=sys.stderr)
        return
    if not found:
        found = [f"{task}: did not complete (exit code {code}: a dependency is missing or was not run) — "
                 f"see {log_path}"]
    for msg in found[1:]:
        print(f"error (also): {msg}", file=sys.stderr)
    print(f"error: {found[0]}", file=sys.stderr)


def worker_interrupted(exc: RuntimeError) -> bool:
    """Whether torch's SIGCHLD handler raised ``exc`` because a DataLoader worker died of
    the same Ctrl-C (or SIGTERM) sent to the whole process group: the worker's signal can
    be handled before the command's own, so the interrupt shows first as this error."""
    text = str(exc)
    return "DataLoader worker" in text and ("Interrupt" in text or "Terminated" in text)
