"""The comparison's report: a map picture of the change layers (PNG, matplotlib) and
``report.md`` with the region figures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.geo import to_mercator
from pipeline.io import atomic_write_bytes
from pipeline.statuses import COLORS, LABELS, OSM, STATUS_STYLES

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["COLORS", "LABELS", "map_png", "report_md", "write_report"]  # colours: pipeline.statuses


def map_png(layers: dict[str, gpd.GeoDataFrame], osm: gpd.GeoDataFrame | None = None, dpi: int = 110) -> bytes:
    """A map of the change layers in web-mercator metres (OSM outlines thin, in the OSM colour), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Polygon as MplPolygon

    fig, ax = plt.subplots(figsize=(8, 8), dpi=dpi)
    handles = []
    for status in ("matched", "offset", "not_seen", "missing_in_osm"):
        gdf = layers.get(status)
        if gdf is None or len(gdf) == 0:
            continue
        patches = [MplPolygon(shapely.get_coordinates(p.exterior), closed=True)
                   for g in to_mercator(gdf.geometry.to_numpy()) for p in shapely.get_parts(g)
                   if p.geom_type == "Polygon"]
        pc = PatchCollection(patches, facecolor=COLORS[status], edgecolor="black", linewidth=0.3, alpha=0.85)
        ax.add_collection(pc)
        handles.append(MplPolygon(np.zeros((3, 2)), facecolor=COLORS[status], label=f"{LABELS[status]} ({len(gdf)})"))
    if osm is not None and len(osm):
        for g in to_mercator(osm.geometry.to_numpy()):
            for p in shapely.get_parts(g):
                if p.geom_type == "Polygon":
                    xy = shapely.get_coordinates(p.exterior)
                    ax.plot(xy[:, 0], xy[:, 1], color=OSM.color, linewidth=0.3)
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("osmsat: predictions compared with OSM")
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def report_md(region: str, summary: dict[str, Any], picture: str) -> str:
    """``report.md``: the counts and figures per class and the map picture."""
    lines = [f"# osmsat comparison: {region}", "",
             f"Statuses by coverage: an OSM feature is seen when predictions cover at least "
             f"{summary.get('seen_cover', '–')} of it (covered: seen, but inside a predicted block rather than "
             f"its own polygon); missing in OSM = predicted area no OSM feature explains, in parts of at least "
             f"{summary.get('missing_min_m2', '–')} m². Pairs: one-to-one by IoU >= {summary['match_iou']}; "
             f"offset when centroids are more than {summary['offset_m']} m apart; precision/recall/F1 count "
             f"one-to-one matches with IoU >= {summary['score_iou']}.", "",
             "| class | predicted | OSM | matched | covered | offset | missing in OSM | not seen | precision | recall "
             "| F1 | mean IoU | area IoU |", "|---|" + "---:|" * 12]
    for name, f in summary["classes"].items():
        vals = [f.get(k) for k in ("predicted", "osm", "matched", "covered", "offset", "missing_in_osm", "not_seen",
                                   "precision", "recall", "f1", "mean_iou", "area_iou")]
        lines.append(f"| {name} | " + " | ".join("–" if v is None else str(v) for v in vals) + " |")
    if summary.get("lines"):
        lines += ["", "| line class | predicted km | OSM km | correctness | completeness | tolerance m |",
                  "|---|---:|---:|---:|---:|---:|"]
        for name, f in summary["lines"].items():
            vals = [f.get(k) for k in ("predicted_km", "osm_km", "correctness", "completeness", "tolerance_m")]
            lines.append(f"| {name} | " + " | ".join("–" if v is None else str(v) for v in vals) + " |")
    named = ", ".join(f"`{k}.geojson` ({s.color_name})" for k, s in STATUS_STYLES.items())
    lines += ["", f"Layers: {named}; for JOSM `missing_in_osm.osm` (never uploadable as is); for MapRoulette "
              "`maproulette.geojsonl`.", "", f"![map of the change layers]({picture})", ""]
    return "\n".join(lines)


def write_report(folder: Path, region: str, summary: dict[str, Any], layers: dict[str, gpd.GeoDataFrame],
                 osm: gpd.GeoDataFrame | None) -> list[Path]:
    """Write ``map.png`` and ``report.md`` into ``folder``; returns their paths."""
    png, md = folder / "map.png", folder / "report.md"
    atomic_write_bytes(png, map_png(layers, osm))
    atomic_write_bytes(md, report_md(region, summary, png.name).encode())
    return [png, md]
