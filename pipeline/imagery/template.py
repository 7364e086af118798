"""Checks of tile-server URL templates (``[imagery] url``) and tile folder templates (``path``), run
when a config is loaded.

An ``xyz`` template addresses a tile with ``{z} {x} {y}`` (or ``{-y}``, TMS rows) or
``{quadkey}``, and may hold ``{r}`` (``@2x`` for retina); a ``wms`` GetMap template holds
``{bbox}`` (minx,miny,maxx,maxy in EPSG:3857) and ``{width} {height}``. ``${NAME}`` (an
environment variable) is not a field. Imports nothing heavy: the config loader calls it.
"""

from __future__ import annotations

import re

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError

_URL_FIELDS = {"xyz": ("z", "x", "y", "-y", "quadkey", "r"), "wms": ("bbox", "width", "height")}


def check_url_template(sec: Section, url: str, source: str) -> None:
    """A tile URL template: known ``{fields}`` only, enough of them to address a tile."""
    if not re.match(r"^https?://", url):
        raise ConfigError(f"{sec.key('url')} must start with http:// or https://")
    fields = set(re.findall(r"(?<!\$)\{([^{}]*)\}", url))
    allowed = _URL_FIELDS.get(source, ())
    unknown = sorted(fields - set(allowed))
    if unknown:
        raise ConfigError(f"{sec.key('url')} has unknown field(s) {unknown}; a {source} URL takes "
                          + " ".join("{" + f + "}" for f in allowed))
    if source == "xyz" and not ({"z", "x"} <= fields and fields & {"y", "-y"}) and "quadkey" not in fields:
        raise ConfigError(f"{sec.key('url')} must contain {{z}}, {{x}} and {{y}} (or {{-y}}), or {{quadkey}}")
    if source == "wms" and "bbox" not in fields:
        raise ConfigError(f"{sec.key('url')} must contain {{bbox}} (minx,miny,maxx,maxy in EPSG:3857)")


def check_folder_template(sec: Section, folder: str) -> None:
    """A tile folder (``[imagery] path``), or a path template with {z}, {x} and {y} (or {-y}) and
    no other fields."""
    fields = set(re.findall(r"\{([^{}]*)\}", folder))
    if not fields:
        return
    unknown = sorted(fields - {"z", "x", "y", "-y"})
    if unknown or not ({"z", "x"} <= fields and fields & {"y", "-y"}):
        raise ConfigError(f"{sec.key('path')} = {folder!r}: a tile path template takes {{z}}, {{x}} and {{y}} "
                          "(or {-y} for TMS rows) and nothing else, e.g. 'tiles/{z}/{x}/{y}.png'")
