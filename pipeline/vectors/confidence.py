"""Confidence of predicted polygons, learnt from the region's own OSM map.

A model trained on a small region outlines more than buildings: on nairobi's test tiles 72 of
102 predicted "buildings" matched none (cars in car parks, 2-20 m², the model's probability
just above the threshold), against 37 labelled buildings. Which predicted objects are what OSM
maps and which are not is visible in the region itself: on the tiles the model trained and
validated on, a predicted polygon that OSM features of its class cover (at least
:data:`MAPPED_COVER` of its area) is like a mapped feature; one they do not cover is a car, a
pavement, or a feature OSM lacks.

Per area class, a logistic regression (scikit-learn, in a standard-scaler pipeline) on the
polygon's evidence (:data:`FEATURES`: log ground area, mean and max probability, compactness,
rectangularity) separates the two, with *balanced* class weights: its probability is 0.5
where the evidence is equally likely among mapped and unmapped polygons (a likelihood ratio of
one), whatever share of the region OSM lacks. So a building OSM does not map, whose evidence
is that of the mapped ones, still scores high (the unmapped side is a mix of such buildings and
of the rest, so mapped-like evidence is always likelier on the mapped side) and is kept: the
filter removes only what looks unlike anything OSM maps in the region. The fit is used only when
it separates (cross-validated ROC AUC, the mean of :data:`REPEATS` fold assignments, at least
:data:`MIN_AUC`; at least :data:`MIN_SAMPLES` on each side); elsewhere (the sample town, whose
predictions are all building-like: AUC 0.60) every polygon is kept and its ``confidence`` is
NaN. Nor is it used where most of what it would drop on the fitting tiles is mapped
(:data:`MAX_MAPPED_DROPPED`): then it would remove the region's buildings, not its junk
(retrained sample-town models: 57-67 % of their drops mapped).

Geometries EPSG:3857, scaled to ground units with ``s`` (mercator metres per ground metre).
Pure functions; numpy, shapely and scikit-learn (imported where a fit is made).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from pipeline.vectors.table import Table

#: the evidence of a predicted polygon, in column order of :func:`instance_features`
FEATURES = ("log_area_m2", "prob_mean", "prob_max", "compactness", "rectangularity")
#: share of a predicted polygon's area that OSM features of its class cover for it to count as mapped
MAPPED_COVER = 0.5
#: fewer mapped (or unmapped) polygons than this on the fitting tiles: no fit
MIN_SAMPLES = 10
#: cross-validated ROC AUC below this: the evidence does not tell mapped from unmapped, no filter (0.7: the
#: usual floor of "acceptable discrimination", Hosmer & Lemeshow; measured: sample town 0.60-0.63, nepal 0.55,
#: nairobi 0.72-0.79 with two training seeds and the neck split on or off, kampala 0.80)
MIN_AUC = 0.7
#: share of mapped polygons among those the filter would drop on its fitting tiles at which it is refused
#: (measured: nairobi 0.25-0.28, kampala 0.17; the sample town 0.57-0.67, where it dropped real buildings)
MAX_MAPPED_DROPPED = 0.5
#: folds of the cross-validation that estimates the AUC
FOLDS = 5
#: repeats of that cross-validation, each with its own fold assignment; the AUC gate reads their mean AUC and
#: the drop gate their mean held-out confidence (one assignment's AUC is noisy: nairobi's 161 fitting polygons
#: gave 0.678-0.733 over 20 assignments, so whether the filter ran turned on the shuffle, not on the evidence)
REPEATS = 5


@dataclass(frozen=True)
class Filter:
    """A fitted (or refused: ``fitted`` False, ``note`` says why) confidence model of one class."""

    fitted: bool
    note: str
    mapped: int = 0
    unmapped: int = 0
    auc: float = float("nan")
    model: Any = None

    def confidence(self, x: np.ndarray) -> np.ndarray:
        """Balanced probability (0..1) that polygons with evidence ``x`` are like the mapped ones;
        NaN everywhere when not fitted."""
        if not self.fitted or len(x) == 0:
            return np.full(len(x), np.nan)
        return np.asarray(self.model.predict_proba(np.asarray(x, dtype=float))[:, 1], dtype=float)

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: fitted, mapped / unmapped counts, AUC, note."""
        return {"fitted": self.fitted, "mapped": self.mapped, "unmapped": self.unmapped,
                "auc": None if np.isnan(self.auc) else round(float(self.auc), 3), "note": self.note}


def instance_features(geoms: np.ndarray, prob_mean: np.ndarray, prob_max: np.ndarray, s: float) -> np.ndarray:
    """(n, len(FEATURES)) evidence of polygons ``geoms`` (EPSG:3857) with their probabilities."""
    geoms = np.asarray(geoms, dtype=object)
    if len(geoms) == 0:
        return np.empty((0, len(FEATURES)))
    area = shapely.area(geoms)
    perim = np.maximum(shapely.length(geoms), 1e-9)
    rect = np.maximum(shapely.area(shapely.oriented_envelope(geoms)), 1e-12)
    return np.column_stack([np.log(np.maximum(area / (s * s), 1e-3)), np.asarray(prob_mean, dtype=float),
                            np.asarray(prob_max, dtype=float), 4 * np.pi * area / perim ** 2, area / rect])


def mapped(pred: np.ndarray, osm: np.ndarray, min_cover: float = MAPPED_COVER) -> np.ndarray:
    """True where OSM polygons ``osm`` cover at least ``min_cover`` of a predicted polygon's area
    (both EPSG:3857; overlapping OSM polygons are unioned first, so no area counts twice)."""
    pred = np.asarray(pred, dtype=object)
    out = np.zeros(len(pred), dtype=bool)
    if len(pred) == 0 or len(osm) == 0:
        return out
    tree = shapely.STRtree(osm)
    i, j = tree.query(pred, predicate="intersects")
    for a in np.unique(i):
        cover = shapely.union_all(shapely.make_valid(osm[j[i == a]]))
        out[a] = shapely.area(shapely.intersection(pred[a], cover)) >= min_cover * shapely.area(pred[a])
    return out


def fit_filter(x: np.ndarray, y: np.ndarray, seed: int = 0, min_confidence: float = 0.5) -> Filter:
    """A balanced logistic regression of ``y`` (mapped) on evidence ``x``, with its cross-validated
    ROC AUC (the mean over :data:`REPEATS` fold assignments); refused (``fitted`` False) with too
    few samples, an AUC below :data:`MIN_AUC`, or when at least :data:`MAX_MAPPED_DROPPED` of the
    fitting polygons it would drop (cross-validated confidence, averaged over the repeats, below
    ``min_confidence``) are mapped: a filter that drops more of what the map confirms than of what
    it lacks removes buildings, not junk."""
    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if min(n1, n0) < MIN_SAMPLES:
        return Filter(False, f"{n1} mapped and {n0} unmapped predictions on the fitting tiles "
                             f"(fewer than {MIN_SAMPLES} on a side): no filter", n1, n0)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000))

    helds = [cross_val_predict(model(), x, y, method="predict_proba",
                               cv=StratifiedKFold(min(FOLDS, n1, n0), shuffle=True, random_state=seed + r))[:, 1]
             for r in range(REPEATS)]
    auc = float(np.mean([roc_auc_score(y, h) for h in helds]))
    held = np.mean(helds, axis=0)
    if auc < MIN_AUC:
        return Filter(False, f"the evidence does not tell mapped from unmapped predictions apart "
                             f"(cross-validated AUC {auc:.3f} < {MIN_AUC}): no filter", n1, n0, auc)
    drop = held < min_confidence
    if drop.any() and y[drop].mean() >= MAX_MAPPED_DROPPED:
        return Filter(False, f"on the fitting tiles {int(y[drop].sum())} of the {int(drop.sum())} predictions it "
                             f"would drop are mapped (at least {MAX_MAPPED_DROPPED:.0%}): no filter", n1, n0, auc)
    return Filter(True, "", n1, n0, auc, model().fit(x, y))


def rate_features(feats: Table, osm: Mapping[str, np.ndarray], fit_tiles: set[tuple[int, int]] | None, z: int,
                  min_confidence: float) -> tuple[Table, Table, dict[str, dict[str, Any]]]:
    """The region's features (EPSG:4326) with a ``confidence`` column: those kept, those of a
    fitted class below ``min_confidence`` (dropped), and per rated class the fit's figures
    (:meth:`Filter.summary` and ``dropped``). ``osm``: the OSM polygons (EPSG:4326) of each area
    class to rate; ``fit_tiles``: the (x, y) tiles of zoom ``z`` to fit on (None: every tile)."""
    from pipeline.tiles.geo import mercator_scale, to_mercator
    from pipeline.tiles.tilemath import features_in_tiles

    conf = np.full(len(feats), np.nan)
    figures: dict[str, dict[str, Any]] = {}
    for name, osm_geoms in osm.items():
        rows = np.flatnonzero((feats["class"] == name) & (feats["kind"] == "area"))
        if len(rows) == 0:
            continue
        geoms = feats["geometry"][rows]
        pm = to_mercator(geoms)
        s = float(mercator_scale(float(np.median(shapely.get_y(shapely.centroid(pm))))))
        x = instance_features(pm, feats["prob_mean"][rows], feats["prob_max"][rows], s)
        on_fit = features_in_tiles(geoms, fit_tiles, z) if fit_tiles is not None else np.ones(len(rows), bool)
        y = mapped(pm[on_fit], to_mercator(np.asarray(osm_geoms, dtype=object)))
        f = fit_filter(x[on_fit], y, min_confidence=min_confidence)
        conf[rows] = f.confidence(x)
        figures[name] = {**f.summary(), "dropped": int((conf[rows] < min_confidence).sum())}
    out = Table(dict(feats.cols))
    out["confidence"] = np.round(conf, 4)
    low = conf < min_confidence
    return out[~low], out[low], figures


def confidence_line(name: str, figures: Mapping[str, Any], min_confidence: float) -> str:
    """One line for the user: what the confidence fit of class ``name`` did."""
    if not figures.get("fitted"):
        return f"{name}: predictions not rated: {figures.get('note', '')}"
    return (f"{name}: {figures['dropped']} predicted polygons unlike the region's mapped ones dropped "
            f"(confidence < {min_confidence}; fitted on {figures['mapped']} mapped and {figures['unmapped']} "
            f"unmapped predictions, cross-validated AUC {figures['auc']}); [vectorize] min_confidence = 0 keeps them")
