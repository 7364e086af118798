"""Compare predicted polygons with OSM features: statuses by coverage, one-to-one matching by
IoU for pairs and offsets, and region figures.

Per area class, candidate pairs come from an STRtree over the OSM polygons (EPSG:3857); pairs
with IoU >= ``match_iou`` are matched one-to-one greedily in decreasing IoU (ties by ids, so the
result is deterministic). Statuses (:mod:`pipeline.review.coverage` for the first three):

- ``missing_in_osm``: predicted area that no OSM feature explains, cut into parts of at least
  ``missing_min_m2`` (the imagery shows it, OSM lacks it) — never a block of mapped buildings;
- ``not_seen``: an OSM feature covered less than ``seen_cover`` by predicted polygons of its
  class (demolished, hidden, or a model miss), with its ``coverage`` and the model's
  probability inside it;
- ``unknown``: a feature that would be not seen, but the imagery under it is unusable (none,
  nodata, very dark or saturated) or it is smaller than the model resolves (``reason``);
- ``matched``: a one-to-one pair (``match = "one_to_one"``, the predicted polygon, its IoU and
  the distance between centroids in ground metres), or an OSM feature without a pair that
  predictions cover at least ``seen_cover`` (``match = "covered"``, the OSM outline: e.g. one of
  several touching buildings the model outlined as one block);
- ``offset``: a pair whose centroids are more than ``offset_m`` apart, where the OSM outline
  moved by that offset overlaps the predicted polygon at least ``offset_gain`` better (IoU,
  ``iou_shifted`` against ``iou``): a displaced outline, not a prediction of another shape (a
  block over several buildings, a partly seen roof), whose centroid lies elsewhere too.

A small building shifted by a metre or two can overlap its outline by less than ``match_iou``;
a second pass therefore pairs the leftovers whose centroids lie within ``max_offset_m`` ground
metres and whose areas differ by less than a factor of two (closest first, one-to-one).

Region figures per class: object precision / recall / F1 counting pairs with IoU >= 0.5
(``score_iou``), the mean IoU of the matched pairs, and the area IoU of all predicted against
all OSM polygons (pixel IoU at infinite resolution: overlapping areas summed over every
intersecting pair, so no region-wide union is built).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from pipeline.config.compare import CompareSpec, parse_compare  # noqa: F401 - re-exported
from pipeline.config.region import ClassSpec
from pipeline.review.candidates import Evidence, shape_columns, with_evidence
from pipeline.review.compare_lines import compare_lines
from pipeline.review.coverage import coverage, ground_scale, unexplained
from pipeline.review.figures import area_partials, finish_line_partials, finish_partials, line_partials
from pipeline.review.pairs import centroid_shifts, is_offset, match, paired, shifted_iou
from pipeline.review.statuses import status_names
from pipeline.tiles.geo import mercator_scale, to_mercator
from pipeline.tiles.tilemath import features_in_tiles, features_touching_tiles, points_in_tiles  # noqa: F401
from pipeline.vectors.finish import output_lonlat

if TYPE_CHECKING:
    import geopandas as gpd



@dataclass
class Comparison:
    """Per-status layers (EPSG:4326 GeoDataFrames) and the region figures."""

    layers: dict[str, gpd.GeoDataFrame]
    summary: dict[str, Any] = field(default_factory=dict)
    #: the low-confidence predictions the comparison counted towards coverage (None: none given)
    low: gpd.GeoDataFrame | None = None
    #: the figures' additive parts per class (areas: :func:`area_partials`; lines: :func:`line_partials`),
    #: so the figures of a region compared block by block are summed, then finished (:func:`summary_of`)
    partials: dict[str, dict[str, float]] = field(default_factory=dict)


#: which of these geometries (EPSG:4326) a block owns (:mod:`pipeline.review.blocks`)
Own = Callable[[np.ndarray], np.ndarray]


def compare_classes(classes: tuple[ClassSpec, ...], spec: CompareSpec) -> list[ClassSpec]:
    """The area classes to compare (``spec.classes`` or all of them)."""
    areas = [c for c in classes if c.kind == "area"]
    return [c for c in areas if c.name in spec.classes] if spec.classes else areas


def compare(pred: gpd.GeoDataFrame, osm: gpd.GeoDataFrame, classes: tuple[ClassSpec, ...],  # noqa: PLR0913
            spec: CompareSpec, evidence: Evidence | None = None, resolvable_m2: float = 0.0,
            low: gpd.GeoDataFrame | None = None, context: gpd.GeoDataFrame | None = None,
            own: Own | None = None) -> Comparison:
    """Compare predicted features (``finish`` output, EPSG:4326) with OSM features
    (``features.parquet`` rows, EPSG:4326) class by class. ``evidence`` (optional) reads the
    model's probability and the imagery's usability inside any polygon; a not-seen feature on
    unusable imagery, or smaller than ``resolvable_m2`` (ground m²), is ``unknown``, not gone.
    ``low``: the predicted polygons dropped for low confidence (:mod:`pipeline.vectors.confidence`):
    predicted pixels of their class, so they count towards an OSM feature's coverage (seen), but
    they are no candidates. ``context``: OSM features that reach into the compared tiles from
    outside them (their representative point elsewhere, :func:`features_touching_tiles`): they get
    no status, but the predicted area they explain is no candidate (a building on the imagery's
    edge is not missing from OSM). ``own`` (a block of :mod:`pipeline.review.blocks`): the rows
    and candidates this call reports, of the features given (the block's and those around it);
    None: all of them."""
    import geopandas as gpd

    pred = with_pred_columns(pred)
    statuses = status_names()  # every registered status gets a layer (empty when nothing fills it)
    parts: dict[str, list[pd.DataFrame]] = {s: [] for s in statuses}
    partials: dict[str, dict[str, float]] = {}
    for c in compare_classes(classes, spec):
        p, o = class_rows(pred, c.name), class_rows(osm, c.name)
        pm, om = to_mercator(p.geometry.to_numpy()), valid_mercator(o)
        mine_p, mine_o = _owned(own, p), _owned(own, o)
        i, j, v = paired(pm, om, spec)
        lm = low_rows(low, c.name)
        pairs, cover, shifts = _pairs(c.name, p, o, (pm, lm), om, (i, j, v), spec.explain_m)
        drawn_off = is_offset(pairs, spec)
        reported = mine_o[j]
        parts["matched"].append(pairs[~drawn_off & reported])
        parts["offset"].append(pairs[drawn_off & reported])
        unpaired = np.setdiff1d(np.arange(len(o)), j)
        # seen: covered, or the partner of a low-confidence polygon (it outlines the feature, if offset)
        low_partner = np.isin(np.arange(len(unpaired)), paired(lm, om[unpaired], spec)[1])
        shown = (cover[unpaired] >= spec.seen_cover) | low_partner
        seen, unseen = unpaired[shown & mine_o[unpaired]], unpaired[~shown & mine_o[unpaired]]
        parts["matched"].append(_osm_rows(c.name, o, om, seen, cover, "covered"))
        gone, unknown = split_unknown(with_evidence(_osm_rows(c.name, o, om, unseen, cover, None),
                                                    o.geometry.to_numpy()[unseen], c.name, evidence, outline=True),
                                      resolvable_m2)
        parts["not_seen"].append(gone)
        parts["unknown"].append(unknown)
        cm = valid_mercator(class_rows(context, c.name)) if context is not None else np.empty(0, dtype=object)
        miss, src = unexplained(pm, np.concatenate([om, cm]), (i, j), shifts, spec.explain_m, spec.open_m,
                                spec.min_area(c.name))
        if own is not None and len(miss):  # a candidate belongs to the block its own point lies in
            kept = np.asarray(own(output_lonlat(miss)), dtype=bool)
            miss, src = miss[kept], src[kept]
        parts["missing_in_osm"].append(missing_rows(c.name, p, pm, miss, src, evidence))
        partials[c.name] = area_partials(pm[mine_p], om[mine_o], pm, v[reported], drawn_off[reported],
                                     spec.score_iou) | {
            "covered": len(seen), "not_seen": len(gone), "unknown": len(unknown), "missing_in_osm": len(miss),
            "seen": int((cover[mine_o] >= spec.seen_cover).sum()), "largest_m2": _largest_m2(om[mine_o])}
    for c in line_classes(classes, spec):
        miss_l, gone_l = compare_lines(class_rows(pred, c.name), class_rows(osm, c.name), c, max(c.buffer_m, 1.0),
                                       spec.min_length_m, spec.seen_cover, context)
        parts["missing_in_osm"].append(miss_l[_owned(own, miss_l)])
        parts["not_seen"].append(gone_l[_owned(own, gone_l)])
        lp, lo = pred[pred["class"] == c.name], osm[osm["class"] == c.name]
        partials[c.name] = line_partials(lp.geometry.to_numpy(), lo.geometry.to_numpy(), c.buffer_m,
                                         _owned(own, lp), _owned(own, lo))
    layers = {s: _ranked(gpd.GeoDataFrame(pd.concat(parts[s], ignore_index=True) if parts[s] else
                                          pd.DataFrame({"geometry": []}), geometry="geometry", crs="EPSG:4326"))
              for s in statuses}
    return Comparison(layers=layers, summary=summary_of(partials, layers, classes, spec, resolvable_m2), low=low,
                      partials=partials)


def _owned(own: Own | None, rows: pd.DataFrame) -> np.ndarray:
    """Which of ``rows`` (EPSG:4326 geometries) ``own`` owns (all without ``own``)."""
    if own is None or not len(rows):
        return np.ones(len(rows), dtype=bool)
    return np.asarray(own(rows.geometry.to_numpy()), dtype=bool)


def summary_of(partials: dict[str, dict[str, float]], layers: dict[str, gpd.GeoDataFrame],
               classes: tuple[ClassSpec, ...], spec: CompareSpec, resolvable_m2: float) -> dict[str, Any]:
    """The region figures (``summary.json``'s comparison part) from the classes' additive parts."""
    areas = {c.name: finish_partials(partials[c.name], spec.score_iou) for c in compare_classes(classes, spec)}
    lines = {c.name: finish_line_partials(partials[c.name]) | _line_counts(layers, c.name)
             for c in line_classes(classes, spec)}
    return {"classes": areas, "lines": lines, "match_iou": spec.match_iou, "offset_m": spec.offset_m,
            "offset_gain": spec.offset_gain,
            "score_iou": spec.score_iou, "seen_cover": spec.seen_cover, "missing_min_m2": spec.missing_min_m2,
            "resolvable_m2": round(resolvable_m2, 2), "counts": {s: len(layers[s]) for s in layers}}


def in_and_touching(osm: gpd.GeoDataFrame, tiles: set[tuple[int, int]], z: int
                    ) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """The OSM features (EPSG:4326) compared on ``tiles`` ((x, y) at zoom ``z``: those whose
    representative point lies there) and the context: those that only reach into them."""
    g = osm.geometry.to_numpy()
    inside = np.asarray(features_in_tiles(g, tiles, z), dtype=bool)
    touching = ~inside
    touching[touching] = features_touching_tiles(g[touching], tiles, z)
    return osm[inside].reset_index(drop=True), osm[touching].reset_index(drop=True)


def line_classes(classes: tuple[ClassSpec, ...], spec: CompareSpec) -> list[ClassSpec]:
    """The line classes to compare (``spec.classes`` or all of them)."""
    return [c for c in classes if c.kind == "line" and (not spec.classes or c.name in spec.classes)]


def _line_counts(layers: dict[str, gpd.GeoDataFrame], name: str) -> dict[str, int]:
    return {s: int((layers[s]["class"] == name).sum()) if len(layers[s]) else 0 for s in ("missing_in_osm", "not_seen")}


def low_rows(low: pd.DataFrame | None, name: str) -> np.ndarray:
    """The low-confidence polygons of class ``name`` (EPSG:3857; none without ``low``)."""
    if low is None or len(low) == 0 or "class" not in low:
        return np.empty(0, dtype=object)
    return to_mercator(low.geometry.to_numpy()[low["class"].to_numpy() == name])


def with_pred_columns(pred: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """``pred``, or for an empty predictions.geojson (no columns) an empty frame with the columns read."""
    import geopandas as gpd

    if len(pred):
        return pred
    return gpd.GeoDataFrame({"class": pd.Series([], dtype=object), "prob_mean": pd.Series([], dtype=float),
                             "prob_max": pd.Series([], dtype=float)}, geometry=[], crs="EPSG:4326")


def class_rows(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """The rows of class ``name``, renumbered from 0."""
    return df[df["class"] == name].reset_index(drop=True)


def _largest_m2(om: np.ndarray) -> float:
    """The ground area (m²) of the largest of the OSM polygons ``om`` (EPSG:3857; 0 for none)."""
    if not len(om):
        return 0.0
    s = ground_scale(om)
    return float(shapely.area(om).max()) / (s * s)


def valid_mercator(o: pd.DataFrame) -> np.ndarray:
    """OSM geometries (EPSG:4326) in EPSG:3857, made valid."""
    om = to_mercator(o.geometry.to_numpy())
    return np.where(shapely.is_valid(om), om, shapely.make_valid(om))


def missing_parts(pm: np.ndarray, om: np.ndarray, spec: CompareSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``missing_in_osm`` parts (EPSG:3857) of predictions ``pm`` against OSM ``om`` and the
    index of the predicted polygon each comes from (what :func:`compare` finds, alone)."""
    i, j, _ = paired(pm, om, spec)
    return unexplained(pm, om, (i, j), centroid_shifts(pm, om, i, j), spec.explain_m, spec.open_m,
                       spec.min_area(name))


def missing_rows(name: str, p: pd.DataFrame, pm: np.ndarray, miss: np.ndarray, src: np.ndarray,
                 evidence: Evidence | None) -> pd.DataFrame:
    """Rows of ``missing_in_osm`` candidates: the source polygon's probabilities, ground area,
    shape columns and (with ``evidence``) the pixel evidence inside the part itself."""
    s = ground_scale(pm)
    geoms = output_lonlat(miss) if len(miss) else np.empty(0, dtype=object)
    rows = pd.DataFrame({"class": name, "prob_mean": p["prob_mean"].to_numpy()[src],
                         "prob_max": p["prob_max"].to_numpy()[src],
                         "source_area_m2": np.round(shapely.area(pm[src]) / (s * s), 2) if len(src) else np.empty(0),
                         **shape_columns(miss, pm[src], s)})
    rows = with_evidence(rows, geoms, name, evidence)
    rows["geometry"] = geoms
    return rows


def split_unknown(rows: pd.DataFrame, resolvable_m2: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Not-seen rows -> (not seen, unknown): unknown where the imagery under less than half of
    the feature is usable, or where the feature is smaller than the model resolves; the
    unknown rows say why in ``reason``."""
    usable = rows["usable_share"].to_numpy(dtype=float)
    dark = ~np.isnan(usable) & (usable < 0.5)  # no imagery, nodata, very dark or saturated under most of it
    small = rows["area_m2"].to_numpy(dtype=float) < resolvable_m2
    reason = np.where(dark, "no usable imagery", "smaller than the model resolves")
    unknown = rows[dark | small].copy()
    unknown.insert(1, "reason", reason[dark | small])
    return rows[~(dark | small)].copy(), unknown


def stable_ids(classes: np.ndarray, geoms_4326: np.ndarray) -> np.ndarray:
    """An id per feature from its class and position (a point on its surface, to 1e-6 degrees,
    about 0.1 m): the same candidate keeps its id across reruns, whatever its row."""
    import hashlib

    pts = shapely.point_on_surface(np.asarray(geoms_4326, dtype=object))
    keys = [f"{c}:{x:.6f},{y:.6f}" for c, x, y in zip(classes, shapely.get_x(pts), shapely.get_y(pts))]
    return np.array([f"{c}-{hashlib.sha1(k.encode()).hexdigest()[:10]}" for c, k in zip(classes, keys)], dtype=object)


def _ranked(layer: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A change layer with a stable ``id`` first, most probable first (then by id): row order
    no longer depends on the order features were traced in."""
    if len(layer) == 0:
        return layer
    layer.insert(0, "id", stable_ids(layer["class"].to_numpy(), layer.geometry.to_numpy()))
    return ranked_rows(layer)


def ranked_rows(layer: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Rows of a change layer (with ``id``) most probable first, then by id (:func:`_ranked`'s order)."""
    if len(layer) == 0:
        return layer
    prob = layer["prob_mean"].fillna(-1.0) if "prob_mean" in layer.columns else pd.Series(0.0, index=layer.index)
    order = np.lexsort((layer["id"].to_numpy().astype(str), -prob.to_numpy(dtype=float)))
    return layer.iloc[order].reset_index(drop=True)


def _pairs(name: str, p: pd.DataFrame, o: pd.DataFrame, pred: tuple[np.ndarray, np.ndarray], om: np.ndarray,
           matches: tuple[np.ndarray, np.ndarray, np.ndarray], tol_m: float = 0.0,
           ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows of the one-to-one pairs ``matches`` (pred index, OSM index, IoU) with the predicted
    geometry, the coverage of every OSM feature by the predictions and the low-confidence ones
    (``pred``: both EPSG:3857) together, grown by ``tol_m`` ground metres, and the pairs'
    centroid offsets (:func:`centroid_shifts`)."""
    (pm, low), (i, j, v) = pred, matches
    shifts = centroid_shifts(pm, om, i, j)
    scale = np.maximum(mercator_scale(shapely.get_y(shapely.centroid(pm[i]))), 1e-9) if len(i) else np.empty(0)
    de, dn = shifts[:, 0] / scale, shifts[:, 1] / scale
    cover = coverage(om, np.concatenate([pm, low]), tol_m)
    return pd.DataFrame({
        "class": name, "match": "one_to_one", "osm_type": o["osm_type"].to_numpy()[j],
        "osm_id": o["osm_id"].to_numpy()[j], "iou": np.round(v, 4),
        "iou_shifted": np.round(shifted_iou(pm[i], om[j], shifts), 4), "coverage": np.round(cover[j], 4),
        "offset_m": np.round(np.hypot(de, dn), 3), "offset_east_m": np.round(de, 3),
        "offset_north_m": np.round(dn, 3), "prob_mean": p["prob_mean"].to_numpy()[i],
        "geometry": p.geometry.to_numpy()[i]}), cover, shifts


def _osm_rows(name: str, o: pd.DataFrame, om: np.ndarray, idx: np.ndarray, cover: np.ndarray,
              match: str | None) -> pd.DataFrame:
    """Rows of OSM features ``idx`` (their own outlines) with their coverage and ground area."""
    s2 = ground_scale(om) ** 2
    cols: dict[str, Any] = {"class": name}
    if match is not None:
        cols["match"] = match
    return pd.DataFrame(cols | {
        "osm_type": o["osm_type"].to_numpy()[idx], "osm_id": o["osm_id"].to_numpy()[idx],
        "coverage": np.round(cover[idx], 4), "area_m2": np.round(shapely.area(om[idx]) / s2, 2),
        "geometry": o.geometry.to_numpy()[idx]})


def object_f1(pred: np.ndarray, truth: np.ndarray, min_iou: float = 0.5) -> tuple[int, float, float, float]:
    """(hits, precision, recall, F1) of polygons ``pred`` against ``truth`` (EPSG:3857), matched
    one-to-one at IoU >= ``min_iou``; 0.0 where a side is empty."""
    _, _, v = match(pred, truth, min_iou)
    p, r = (len(v) / len(pred) if len(pred) else 0.0), (len(v) / len(truth) if len(truth) else 0.0)
    return len(v), p, r, (2 * p * r / (p + r) if len(v) else 0.0)
