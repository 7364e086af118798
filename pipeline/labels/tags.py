"""Stage ``extract``'s tag matching: which label class an OSM object's tags select, and the
half-width of a line feature. (Reading the PBF is :mod:`pipeline.labels.osm`.)

Importable without pyosmium: the config schema (:mod:`pipeline.config.region`) parses tag filters
with :class:`TagFilter`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.core.errors import ConfigError

if TYPE_CHECKING:
    from pipeline.config.region import ClassSpec

_TAG_RE = re.compile(r"^([^=|*\s]+)(?:=(\*|[^=|]+(?:\|[^=|]+)*))?$")


@dataclass(frozen=True)
class TagFilter:
    """One OSM tag condition: ``key`` alone or ``key=*`` (any value), or ``key=v1|v2``."""

    key: str
    values: tuple[str, ...] | None  # None: any value

    @classmethod
    def parse(cls, text: str, where: str) -> TagFilter:
        m = _TAG_RE.match(text.strip())
        if not m:
            raise ConfigError(f"{where}: bad tag filter {text!r}; write 'key', 'key=*' or 'key=v1|v2'")
        key, vals = m.group(1), m.group(2)
        if vals is None or vals == "*":
            return cls(key, None)
        return cls(key, tuple(v.strip() for v in vals.split("|")))

    def matches(self, tags: Mapping[str, str]) -> bool:
        """True when ``tags`` has this key (with one of the values, if any are given)."""
        value = tags.get(self.key)
        if value is None:
            return False
        return self.values is None or value in self.values

    def __str__(self) -> str:
        return self.key + ("=*" if self.values is None else "=" + "|".join(self.values))


def match_class(spec: ClassSpec, tags: Mapping[str, str]) -> TagFilter | None:
    """The first include filter of ``spec`` that ``tags`` match, unless an exclude filter matches."""
    if any(f.matches(tags) for f in spec.exclude):
        return None
    for f in spec.tags:
        if f.matches(tags):
            return f
    return None


def buffer_for(spec: ClassSpec, tags: Mapping[str, str]) -> float:
    """Half-width in ground metres for a feature of class ``spec`` with ``tags`` (0 for areas):
    ``buffer_m_by_value`` for the value of the first matching include tag, else ``buffer_m``."""
    if spec.kind != "line":
        return 0.0
    first = match_class(spec, tags)
    if first is not None:
        value = tags.get(first.key)
        for v, b in spec.buffer_m_by_value:
            if v == value:
                return b
    return spec.buffer_m


def tag_keys(spec: ClassSpec) -> tuple[str, ...]:
    """Keys whose values are kept in the extracted features (include and exclude keys, in order)."""
    keys: list[str] = []
    for f in spec.tags + spec.exclude:
        if f.key not in keys:
            keys.append(f.key)
    return tuple(keys)
