"""The one palette of the comparison's outputs: every place that draws a change layer, the
predictions or the OSM features (the QGIS project and its ``.qml`` styles, ``report.html``,
``compare/map.png``, ``report.md`` and the README's legend) reads its colour and label here.

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

    from pipeline.config import ClassSpec


@dataclass(frozen=True)
class Style:
    """How one kind of feature is drawn: ``color`` '#rrggbb', its ``color_name`` for text, and the
    ``label`` shown in layer lists and legends."""

    color: str
    color_name: str
    label: str


#: the change layers (``compare/<status>.geojson``), in the order layer lists show them
STATUS_STYLES: dict[str, Style] = {
    "missing_in_osm": Style("#e31a1c", "red", "missing in OSM"),
    "not_seen": Style("#ffd92f", "yellow", "in OSM, not seen"),
    "unknown": Style("#984ea3", "purple", "in OSM, not checkable"),
    "offset": Style("#ff7f00", "orange", "offset"),
    "matched": Style("#4daf4a", "green", "matched"),
}
#: the predicted features (``predictions.geojson`` / ``.gpkg``)
PREDICTED = Style("#1f78b4", "blue", "predicted")
#: the OSM (or vector label) features
OSM = Style("#737373", "grey", "OSM")

COLORS: dict[str, str] = {k: s.color for k, s in STATUS_STYLES.items()}
LABELS: dict[str, str] = {k: s.label for k, s in STATUS_STYLES.items()}


def legend_text() -> str:
    """The legend in words, "red = missing in OSM; ..." (the README's captions of the report and
    QGIS pictures use this exact text; matched, hidden at first, is left out)."""
    parts = [f"{s.color_name} = {s.label}" for k, s in STATUS_STYLES.items() if k != "matched"]
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
