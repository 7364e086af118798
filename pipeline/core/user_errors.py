"""One clear line for an error a user can fix: ``<file/key/tile>: <what> — <how to fix>``.

The project's own errors (:class:`pipeline.core.errors.OsmsatError`) already read that way. Raw
``OSError``s (disk full, read-only, a directory where a file goes, a file where a folder goes,
permissions) are worded here with the path at fault: the error's own file name, else
``fallback_path`` (e.g. the region's data folder, for a write that failed without one).
"""

from __future__ import annotations

import errno
from pathlib import Path

from pipeline.core.errors import OsmsatError

_OS_HINTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the disk", "free space there, or set region.data_dir to a folder on another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space there, or set region.data_dir to a folder on another disk"),
    errno.EROFS: ("the file system is read-only", "set region.data_dir to a writable folder"),
    errno.EACCES: ("permission denied", "make it writable for this user, or set region.data_dir elsewhere"),
    errno.EPERM: ("operation not permitted", "make it writable for this user, or set region.data_dir elsewhere"),
    errno.EISDIR: ("a folder stands where a file must go", "remove or rename that folder and rerun"),
    errno.ENOTDIR: ("a file stands where a folder must go", "remove or rename that file (or change "
                                                            "region.data_dir) and rerun"),
    errno.EEXIST: ("a file stands where a folder must go", "remove or rename that file (or change "
                                                           "region.data_dir) and rerun"),
    errno.ENOENT: ("no such file or folder", "check the path in the region config"),
}


def os_error_message(exc: OSError, fallback_path: str | Path | None = None) -> str:
    """``<path>: <what> — <how to fix>`` for a raw OSError."""
    path = exc.filename if exc.filename is not None else fallback_path
    what, fix = _OS_HINTS.get(exc.errno or -1, (exc.strerror or str(exc), "check the path and rerun"))
    return f"{path if path is not None else 'a file'}: {what} ({exc.strerror or exc}) — {fix}"


def clear_message(exc: BaseException, fallback_path: str | Path | None = None, log_path: str | Path | None = None
                  ) -> str:
    """The one line the command line ends with for ``exc`` (without the ``error: `` prefix)."""
    if isinstance(exc, OsmsatError):
        return str(exc)
    if isinstance(exc, OSError):
        return os_error_message(exc, fallback_path)
    where = f"the traceback is in {log_path}" if log_path else "rerun with --debug for the traceback"
    return f"{type(exc).__name__}: {exc} — an unexpected error (a bug, or an input we do not check yet); {where}"
