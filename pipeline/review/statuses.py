"""The comparison statuses and the one palette of the comparison's outputs: every place that
lists or draws a change layer, the predictions or the OSM features (the QGIS project and its
``.qml`` styles, ``report.html``, ``compare/map.png``, ``report.md``, ``summary.json``, the compare
task's outputs and the README's legend) reads its name, order, colour and label here.

Adding a status is one :class:`Status` entry (below, or :func:`register_status` from a module);
the comparison then has to fill its layer (:func:`pipeline.review.compare.compare`), and the README's
legend says it (``tests/test_user_outputs.py`` checks the README against :func:`legend_text`).

Red is kept for what OSM lacks (``missing_in_osm``); OSM features are drawn in a neutral grey of
their own (never a class's palette colour, which may be red too); blue is the predictions
everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import geopandas as gpd

    from pipeline.config.region import ClassSpec


@dataclass(frozen=True)
class Style:
    """How one kind of feature is drawn: ``color`` '#rrggbb', its ``color_name`` for text, and the
    ``label`` shown in layer lists and legends."""

    color: str
    color_name: str
    label: str


@dataclass(frozen=True)
class Status(Style):
    """A comparison status: the change layer ``compare/<name>.geojson`` and everything that lists
    it. ``order``: its place in layer lists, legends, ``summary.json`` counts and the compare
    outputs (smallest first, on top); ``shown``: visible when the QGIS project opens, on the report
    page and in the legend in words (matched, the bulk, is not)."""

    name: str = ""
    order: int = 0
    shown: bool = True


#: the comparison statuses by name, in ``order`` (the registry: :func:`register_status` adds one;
#: the QGIS project, the report page, ``map.png``, ``report.md``, ``summary.json``, the compare task's
#: outputs and the README's legend all read it)
STATUS_STYLES: dict[str, Status] = {}
#: ``{status: colour}`` and ``{status: label}`` views of the registry (kept in step by register_status)
COLORS: dict[str, str] = {}
LABELS: dict[str, str] = {}


def register_status(status: Status) -> Status:
    """Add (or replace) a status in the registry, in its ``order``; returns it."""
    entries = {**STATUS_STYLES, status.name: status}
    STATUS_STYLES.clear()
    STATUS_STYLES.update(sorted(entries.items(), key=lambda kv: (kv[1].order, kv[0])))
    _refresh()
    return status


def unregister_status(name: str) -> None:
    """Remove status ``name`` (tests that register their own clean up with this)."""
    STATUS_STYLES.pop(name, None)
    _refresh()


def _refresh() -> None:
    COLORS.clear()
    COLORS.update((k, s.color) for k, s in STATUS_STYLES.items())
    LABELS.clear()
    LABELS.update((k, s.label) for k, s in STATUS_STYLES.items())


def status_names() -> tuple[str, ...]:
    """Every status, in order (the change layers the comparison writes)."""
    return tuple(STATUS_STYLES)


def shown_statuses() -> tuple[str, ...]:
    """The statuses shown at first (report page, legend in words), in order."""
    return tuple(k for k, s in STATUS_STYLES.items() if s.shown)


for _status in (Status("#e31a1c", "red", "missing in OSM", "missing_in_osm", 10),
                Status("#ffd92f", "yellow", "in OSM, not seen", "not_seen", 20),
                Status("#984ea3", "purple", "in OSM, not checkable", "unknown", 30),
                Status("#ff7f00", "orange", "offset", "offset", 40),
                Status("#4daf4a", "green", "matched", "matched", 50, shown=False)):
    register_status(_status)

#: the predicted features (``predictions.geojson`` / ``.gpkg``)
PREDICTED = Style("#1f78b4", "blue", "predicted")
#: the OSM (or vector label) features
OSM = Style("#737373", "grey", "OSM")


def legend_text() -> str:
    """The legend in words, "red = missing in OSM; ..." (the README's captions of the report and
    QGIS pictures use this exact text, a test checks; statuses hidden at first are left out)."""
    parts = [f"{STATUS_STYLES[k].color_name} = {STATUS_STYLES[k].label}" for k in shown_statuses()]
    return "; ".join([*parts, f"{PREDICTED.color_name} = {PREDICTED.label}", f"{OSM.color_name} = {OSM.label}"])


def with_status(layer: gpd.GeoDataFrame, status: str) -> gpd.GeoDataFrame:
    """A copy of a change layer with its ``status`` as a property of every feature (after ``id``)."""
    out = layer.drop(columns=["status"], errors="ignore").copy()
    out.insert(1 if "id" in out.columns else 0, "status", status)
    return out


def layer_files(status: str, layer: gpd.GeoDataFrame, classes: Sequence[ClassSpec]) -> dict[str, gpd.GeoDataFrame]:
    """The files of a change layer: ``<status>.geojson`` with the area classes' features (always
    written) and ``<status>_lines.geojson`` with the line classes' (when it has any): QGIS shows
    one geometry type per layer."""
    import numpy as np

    line_names = {c.name for c in classes if c.kind == "line"}
    is_line = layer["class"].isin(line_names).to_numpy() if len(layer) else np.zeros(0, dtype=bool)
    out = {f"{status}.geojson": layer[~is_line].reset_index(drop=True)}
    if is_line.any():
        out[f"{status}_lines.geojson"] = layer[is_line].reset_index(drop=True)
    return out
