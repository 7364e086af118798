"""The comparison's report: a map picture of the change layers (PNG, matplotlib) and
``report.md`` with the region figures."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from pipeline.core.atomic import atomic_write_bytes
from pipeline.review.statuses import COLORS, LABELS, OSM, STATUS_STYLES
from pipeline.tiles.geo import to_mercator

if TYPE_CHECKING:
    import geopandas as gpd

# colours: pipeline.review.statuses
__all__ = ["COLORS", "LABELS", "map_png", "reliability_png", "report_md", "review_lines", "write_report"]


def map_png(layers: dict[str, gpd.GeoDataFrame], osm: gpd.GeoDataFrame | None = None, dpi: int = 110) -> bytes:
    """A map of the change layers in web-mercator metres (OSM outlines thin, in the OSM colour), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.patches import Polygon as MplPolygon

    fig, ax = plt.subplots(figsize=(8, 8), dpi=dpi)
    handles = []
    for status in reversed(STATUS_STYLES):  # the first status drawn last, on top
        gdf = layers.get(status)
        if gdf is None or len(gdf) == 0:
            continue
        parts = shapely.get_parts(to_mercator(gdf.geometry.to_numpy()))  # the outer rings as vertex arrays
        rings = shapely.get_exterior_ring(parts[shapely.get_type_id(parts) == 3])  # (no patch object each)
        pc = PolyCollection([shapely.get_coordinates(r) for r in rings], closed=True, facecolor=COLORS[status],
                            edgecolor="black", linewidth=0.3, alpha=0.85)
        ax.add_collection(pc)
        handles.append(MplPolygon(np.zeros((3, 2)), facecolor=COLORS[status], label=f"{LABELS[status]} ({len(gdf)})"))
    if osm is not None and len(osm):  # every outline in one collection (a plot call each: 15 s at 25 km²)
        parts = shapely.get_parts(to_mercator(osm.geometry.to_numpy()))
        rings = shapely.get_exterior_ring(parts[shapely.get_type_id(parts) == 3])
        ax.add_collection(LineCollection([shapely.get_coordinates(r) for r in rings], colors=OSM.color,
                                         linewidths=0.3))
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
    if summary.get("review"):
        lines += ["", "Review queue (scores calibrated by gap simulation, `calibration.json`, `reliability.png`):", ""]
        lines += [f"- {line}" for line in summary["review"]]
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


def review_lines(calibration: dict[str, Any]) -> list[str]:
    """One sentence per calibrated layer and class: "missing_in_osm building: score >= 0.35 keeps
    71 of 74; est. precision 0.86, est. recall 0.75 (on 20 held-out candidates)"."""
    out = []
    for key, e in calibration.items():
        status, name = key.split("/", 1)
        head = f"{status} {name}: score >= {e['min_score']:g} keeps {e['kept']} of {e['n']}"
        if e["calibrated"] and e["est_precision"] is not None:
            high = next((r for r in e["curve"] if r["min_score"] == 0.8 and r["est_precision"] is not None), None)
            at_high = (f"; at score >= 0.8: est. precision {high['est_precision']:.2f}, n = {high['n']}"
                       if high and e["min_score"] != 0.8 else "")
            out.append(f"{head}; est. precision {e['est_precision']:.2f}, est. recall {e['est_recall']:.2f} "
                       f"(on {e.get('held_out_kept', e['held_out'])} held-out candidates){at_high}"
                       + (f" ({e['note']})" if e["note"] else ""))
        else:
            out.append(f"{head}; {e['note'] or 'not calibrated'}")
    return out


def reliability_png(calibration: dict[str, Any], dpi: int = 90) -> bytes:
    """The reliability diagram of every calibrated layer (left: the fitted probability of a
    simulated change against the observed share, per bin, cross-validated) and its estimated
    precision and recall against ``min_score`` (right; the chosen threshold dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = {k: e for k, e in calibration.items() if e["calibrated"]}
    fig, axes = plt.subplots(max(1, len(done)), 2, figsize=(8, 3.2 * max(1, len(done))), dpi=dpi, squeeze=False)
    for (key, e), (left, right) in zip(done.items(), axes):
        rel = e["reliability"]
        left.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        left.scatter([r["predicted"] for r in rel], [r["observed"] for r in rel],
                     s=[10 + 2 * r["n"] for r in rel], color="#1f78b4")
        left.set(xlim=(0, 1), ylim=(0, 1), xlabel="fitted P(simulated change)", ylabel="observed share",
                 title=f"{key}: reliability")
        t = [r["min_score"] for r in e["curve"]]
        right.plot(t, [r["est_precision"] for r in e["curve"]], label="est. precision", color="#e31a1c")
        right.plot(t, [r["est_recall"] for r in e["curve"]], label="est. recall", color="#4daf4a")
        right.axvline(e["min_score"], color="black", linestyle="--", linewidth=0.8)
        right.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="min_score", title=f"{key}: estimated")
        right.legend(fontsize=7, loc="lower left")
    if not done:
        axes[0][0].text(0.5, 0.5, "nothing calibrated (see calibration.json)", ha="center")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
