"""Reading one TOML table of a config with errors that name the file and the dotted key.

:class:`Section` is what every config parser uses (the region loader in :mod:`pipeline.config.region`
and the parsers of the stage sections, ``config.SECTIONS``): each key is
taken once with its type, default and range; leftover keys are reported as unknown, with a
"did you mean" hint.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError


class Section:
    """A TOML table being read: every key must be taken, leftovers are reported as unknown."""

    def __init__(self, path: Path, where: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        self.path, self.where, self.table = path, where, dict(table)
        self.seen: list[str] = []

    def key(self, k: str) -> str:
        return f"{self.path}: {self.where}.{k}" if self.where else f"{self.path}: {k}"

    def take(self, k: str, typ: type | tuple[type, ...], default: Any = ..., ) -> Any:
        self.seen.append(k)
        if k not in self.table:
            if default is ...:
                near = difflib.get_close_matches(k, list(self.table), n=1)
                hint = f" (found unknown key {near[0]!r}: a typo?)" if near else ""
                raise ConfigError(f"{self.key(k)} is required{hint}")
            return default
        v = self.table.pop(k)
        ok = isinstance(v, typ) and not (isinstance(v, bool) and typ in (int, float, (int, float)))
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(t.__name__ for t in typ)
            raise ConfigError(f"{self.key(k)} must be {names}, got {v!r}")
        return v

    def number(self, k: str, default: Any = ..., lo: float | None = None, hi: float | None = None) -> float:
        v = self.take(k, (int, float), default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{self.key(k)} = {v} is out of range [{lo}, {hi}]")
        return float(v) if v is not None else v  # type: ignore[return-value]

    def integer(self, k: str, default: Any = ..., lo: int | None = None, hi: int | None = None) -> int:
        v = self.take(k, int, default)
        if v is not None and ((lo is not None and v < lo) or (hi is not None and v > hi)):
            raise ConfigError(f"{self.key(k)} = {v} is out of range [{lo}, {hi}]")
        return v

    def choice(self, k: str, options: tuple[str, ...], default: Any = ...) -> str:
        v = self.take(k, str, default)
        if v not in options:
            raise ConfigError(f"{self.key(k)} = {v!r}; choose one of {', '.join(options)}")
        return v

    def strings(self, k: str, default: Any = ...) -> list[str]:
        """A list of strings (one string is a list of one)."""
        v = self.take(k, (list, str), default)
        v = [v] if isinstance(v, str) else v
        if not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{self.key(k)} must be a list of strings")
        return list(v)

    def done(self) -> None:
        if self.table:
            hints = []
            for k in sorted(self.table):
                near = difflib.get_close_matches(k, self.seen, n=1)
                hints.append(f"{k} (did you mean {near[0]!r}?)" if near else k)
            raise ConfigError(f"{self.path}: unknown key(s) in [{self.where or 'top level'}]: {', '.join(hints)}")
