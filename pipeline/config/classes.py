"""The ``[[classes]]`` of a region config: :class:`ClassSpec` and its parsing and checks.

Part of :func:`pipeline.config.region.load_config` (which re-exports :class:`ClassSpec`); like it,
importable without torch or a geometry library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError
from pipeline.labels.tags import TagFilter, buffer_for, match_class, tag_keys

#: class names end up in GeoPackage layer and QGIS data-source names, file names of the report's
#: layers, MapRoulette task ids and HTML pages: letters, digits, '-' and '_' only
_CLASS_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ClassSpec:
    """A label class: burnt with value ``id`` into masks; higher ``priority`` wins overlaps.

    ``buffer_m`` (ground metres, half-width) applies to line classes; ``buffer_m_by_value``
    overrides it by the value of the first matching include tag (e.g. wider motorways).
    """

    name: str
    id: int
    kind: str  # "area" | "line"
    priority: int
    tags: tuple[TagFilter, ...]
    exclude: tuple[TagFilter, ...] = ()
    buffer_m: float = 0.0
    buffer_m_by_value: tuple[tuple[str, float], ...] = ()
    color: str = "#ffffff"

    def matches(self, tags: Mapping[str, str]) -> TagFilter | None:
        """The first include filter that ``tags`` match, unless an exclude filter matches
        (:func:`pipeline.labels.tags.match_class`)."""
        return match_class(self, tags)

    def buffer_for(self, tags: Mapping[str, str]) -> float:
        """Half-width in ground metres for a feature with ``tags`` (:func:`pipeline.labels.tags.buffer_for`)."""
        return buffer_for(self, tags)

    @property
    def tag_keys(self) -> tuple[str, ...]:
        """Keys whose values are kept in the extracted features (:func:`pipeline.labels.tags.tag_keys`)."""
        return tag_keys(self)


def parse_classes(path: Path, items: list[Any]) -> tuple[ClassSpec, ...]:
    """The ``[[classes]]`` of the config at ``path``; raises ConfigError naming the class and key."""
    if not items:
        raise ConfigError(f"{path}: [[classes]] needs at least one class")
    out: list[ClassSpec] = []
    for i, item in enumerate(items):
        sec = Section(path, f"classes[{i}]", item)
        name = sec.take("name", str)
        if not _CLASS_NAME_RE.match(name):
            raise ConfigError(f"{sec.key('name')} = {name!r}: use letters, digits, '-' or '_' "
                              "(at most 64, starting with a letter or digit)")
        sec.where = f"classes[{i}] ({name})"
        cid = sec.integer("id", lo=1, hi=254)
        kind = sec.choice("kind", ("area", "line"))
        # no tags: the class takes every feature (vector labels only; see pipeline.config.region._check_label_source)
        tags = tuple(TagFilter.parse(t, sec.key("tags")) for t in sec.strings("tags", []))
        exclude = tuple(TagFilter.parse(t, sec.key("exclude")) for t in sec.strings("exclude", []))
        buffer_m = sec.number("buffer_m", 0.0, lo=0, hi=1000)
        by_value = sec.take("buffer_m_by_value", dict, {})
        for v, b in by_value.items():
            if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 <= b <= 1000:
                raise ConfigError(f"{sec.key('buffer_m_by_value')}.{v} must be a number of metres in [0, 1000]")
        if kind == "line" and buffer_m <= 0 and not by_value:
            raise ConfigError(f"{sec.key('buffer_m')} must be > 0 for a line class (half-width in metres)")
        if kind == "area" and (buffer_m or by_value):
            key = "buffer_m" if buffer_m else "buffer_m_by_value"
            raise ConfigError(f"{sec.key(key)} is only for line classes (areas are burnt as drawn); "
                              "remove it or set kind = 'line'")
        color = sec.take("color", str, _default_color(cid))
        if not _COLOR_RE.match(color):
            raise ConfigError(f"{sec.key('color')} = {color!r}; write '#rrggbb'")
        spec = ClassSpec(
            name=name, id=cid, kind=kind, priority=sec.integer("priority", cid),
            tags=tags, exclude=exclude, buffer_m=buffer_m,
            buffer_m_by_value=tuple((str(k), float(b)) for k, b in sorted(by_value.items())), color=color,
        )
        sec.done()
        for prev in out:
            if prev.name.lower() == spec.name.lower() or prev.id == spec.id:  # GeoPackage layer names ignore case
                raise ConfigError(f"{path}: classes[{i}] repeats the name (in any case) or id of class {prev.name!r}")
        out.append(spec)
    return tuple(out)


def check_edge_values(path: Path, classes: tuple[ClassSpec, ...], instances: bool) -> None:
    """With instances (``[masks] instances``), an area class's edge value (255 - id) must not be
    another class's id."""
    if not instances:
        return
    from pipeline.vectors.instances import edge_value

    ids = {c.id: c.name for c in classes}
    for c in classes:
        edge = edge_value(c.id)
        if c.kind == "area" and edge in ids:
            raise ConfigError(f"{path}: class {ids[edge]!r} has id {edge}, the mask value of the edge "
                              f"band of class {c.name!r} (255 - {c.id}); use class ids below 128 or set "
                              "[masks] instances = false")


def _default_color(cid: int) -> str:
    tab = ["#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf"]
    return tab[(cid - 1) % len(tab)]
