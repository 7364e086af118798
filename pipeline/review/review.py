"""The review queue: every change candidate scored, thresholded and ranked.

For each compared class, :mod:`pipeline.review.gapsim` simulates changes in the held-out tiles,
:mod:`pipeline.review.calibration` fits a score on them, and every candidate of ``missing_in_osm``
and ``not_seen`` gets ``score``: the estimated probability that it is a real change. Without
held-out tiles, or with too few simulated changes, the score falls back to the raw evidence
(:mod:`pipeline.review.candidates`: one number in [0, 1] per candidate) and says so.
Candidates below ``min_score`` (``[compare] min_score``, or by default the threshold
:func:`pipeline.review.calibration.choose_min_score` takes from the estimated curve) are held
back, and every layer is sorted by score, highest first (then by ``id``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.config.region import ClassSpec
from pipeline.review.calibration import THRESHOLDS, Calibration, choose_min_score, curve, fit
from pipeline.review.candidates import MIN_MAPPED, Evidence, line_evidence, missing_evidence, unseen_evidence
from pipeline.review.compare import (
    CompareSpec,
    Comparison,
    class_rows,
    compare_classes,
    features_in_tiles,
    line_classes,
    with_pred_columns,
)
from pipeline.review.gapsim import Simulated, simulate_line_missing, simulate_missing, simulate_unseen

if TYPE_CHECKING:
    import geopandas as gpd

Features = Callable[[pd.DataFrame], np.ndarray]  # one evidence value per row


@dataclass
class Review:
    """Scored, thresholded, ranked ``layers`` and the ``calibration`` report (JSON-able, one
    entry per ``"<status>/<class>"``)."""

    layers: dict[str, gpd.GeoDataFrame]
    calibration: dict[str, Any]


def review(cmp: Comparison, pred: pd.DataFrame, osm: pd.DataFrame, classes: tuple[ClassSpec, ...],
           spec: CompareSpec, held_out: set[tuple[int, int]], zoom: int, evidence: Evidence | None) -> Review:
    """Score the comparison's candidates class by class (see the module doc); ``held_out``:
    the (x, y) tiles at ``zoom`` the model never trained on. The comparison's low-confidence
    predictions cover OSM features here too (placebos on them are seen); the largest OSM feature
    of each class the comparison reported bounds a missing candidate's plausible size."""
    sims = simulations(cmp, pred, osm, classes, spec, held_out, zoom, evidence)
    return scored(cmp.layers, sims, classes, spec, held_out, zoom, cmp.partials)


def _largest(partials: dict[str, dict[str, float]], name: str) -> float | None:
    """The size bound of class ``name`` (:func:`pipeline.review.candidates.missing_evidence`): the
    largest OSM feature of the class the comparison reported (``largest_m2``), where it reported
    at least :data:`~pipeline.review.candidates.MIN_MAPPED` of them."""
    f = partials.get(name, {})
    big = float(f.get("largest_m2", 0.0))
    return big if f.get("osm", 0) >= MIN_MAPPED and big > 0 else None


def simulations(cmp: Comparison, pred: pd.DataFrame, osm: pd.DataFrame, classes: tuple[ClassSpec, ...],
                spec: CompareSpec, held_out: set[tuple[int, int]], zoom: int,
                evidence: Evidence | None) -> dict[str, Simulated | None]:
    """The gap simulation's labelled pool of every scored layer (``"<status>/<class>"``; None: not
    simulated) on the ``held_out`` tiles (a block's share of them, :mod:`pipeline.review.blocks`)."""
    pred = with_pred_columns(pred)
    low = with_pred_columns(cmp.low) if cmp.low is not None and len(cmp.low) else None
    unseen = cmp.layers["not_seen"]
    out: dict[str, Simulated | None] = {}
    for c in compare_classes(classes, spec):
        p, o = class_rows(pred, c.name), class_rows(osm, c.name)
        out[f"missing_in_osm/{c.name}"] = simulate_missing(p, o, c.name, spec, held_out, zoom, evidence) \
            if held_out else None
        own = class_rows(unseen, c.name) if len(unseen) else pd.DataFrame({"geometry": []})
        covering = p if low is None else pd.concat([p, class_rows(low, c.name)], ignore_index=True)
        out[f"not_seen/{c.name}"] = simulate_unseen(covering, o, c.name, spec, held_out, zoom, evidence, own) \
            if held_out else None
    for c in line_classes(classes, spec):
        p, o = class_rows(pred, c.name), class_rows(osm, c.name)
        out[f"missing_in_osm/{c.name}"] = simulate_line_missing(p, o, c, spec, held_out, zoom) if held_out else None
        out[f"not_seen/{c.name}"] = None
    return out


def pooled(blocks: list[dict[str, Simulated | None]]) -> dict[str, Simulated | None]:
    """The pools of several blocks' :func:`simulations` as one per layer (the simulated changes
    numbered apart, so each keeps its own number)."""
    out: dict[str, Simulated | None] = {}
    for key in dict.fromkeys(k for b in blocks for k in b):
        sims = [b[key] for b in blocks if b.get(key) is not None]
        if not sims:
            out[key] = None
            continue
        rows, covers, lengths, start, at = [], [], [], 0, 0
        for sim in sims:
            assert sim is not None
            r = sim.rows.copy()
            if len(r):
                change = r["change"].to_numpy(dtype=np.int64)
                r["change"] = np.where(change >= 0, change + start, -1)
            if sim.cover is not None:
                covers.append(sim.cover.assign(row=sim.cover["row"] + at, change=sim.cover["change"] + start))
            if sim.lengths is not None:
                lengths.append(sim.lengths)
            rows.append(r)
            start += sim.simulated
            at += len(r)
        cover = pd.concat(covers, ignore_index=True) if len(covers) == len(sims) else None
        length = np.concatenate(lengths) if len(lengths) == len(sims) else None
        out[key] = Simulated(pd.concat(rows, ignore_index=True), start, cover, length)
    return out


def scored(layers: dict[str, gpd.GeoDataFrame], sims: dict[str, Simulated | None], classes: tuple[ClassSpec, ...],
           spec: CompareSpec, held_out: set[tuple[int, int]], zoom: int,
           partials: dict[str, dict[str, float]] | None = None) -> Review:
    """The change ``layers`` scored on the labelled pools ``sims`` (:func:`simulations`), held back
    below ``min_score`` and sorted (see the module doc); ``partials``: the region's comparison
    figures (:attr:`~pipeline.review.compare.Comparison.partials`), whose ``largest_m2`` bounds a
    missing candidate's plausible size."""
    layers = dict(layers)
    report: dict[str, Any] = {}
    for status in ("missing_in_osm", "not_seen"):
        layers[status] = _mark_held_out(layers[status], held_out, zoom)
    for c in compare_classes(classes, spec):
        largest = _largest(partials or {}, c.name)
        layers["missing_in_osm"], report[f"missing_in_osm/{c.name}"] = score_layer(
            layers["missing_in_osm"], c.name, sims.get(f"missing_in_osm/{c.name}"),
            partial(missing_evidence, largest_m2=largest), spec)
        report[f"missing_in_osm/{c.name}"]["largest_mapped_m2"] = None if largest is None else round(largest, 1)
        layers["not_seen"], report[f"not_seen/{c.name}"] = score_layer(
            layers["not_seen"], c.name, sims.get(f"not_seen/{c.name}"), unseen_evidence, spec)
    for c in line_classes(classes, spec):
        layers["missing_in_osm"], report[f"missing_in_osm/{c.name}"] = score_layer(
            layers["missing_in_osm"], c.name, sims.get(f"missing_in_osm/{c.name}"), line_evidence, spec)
        layers["not_seen"], report[f"not_seen/{c.name}"] = score_layer(
            layers["not_seen"], c.name, None, _line_absent, spec)
    for status in ("missing_in_osm", "not_seen"):
        layers[status] = by_score(layers[status])
    return Review(layers, report)


def held_out_tiles(cfg: Any, tiles: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The tiles (x, y) of ``tiles`` the model that predicted them never trained on: the
    validation and test split (``split.csv``); all of them for a model trained elsewhere, or with
    ``[train] cross_fit`` (the training tiles are predicted by the model trained on the others)."""
    from pipeline.model.regions import is_own_model
    from pipeline.model.split import read_split_csv

    split = Path(cfg.data_dir) / "split.csv"
    if not is_own_model(cfg) or cfg.train.cross_fit:  # cross_fit: the train tiles too
        return set(tiles)
    if not split.is_file():
        return set()
    return {(r.x, r.y) for r in read_split_csv(split) if r.split in ("val", "test")} & tiles


@dataclass(frozen=True)
class RegionEvidence:
    """The evidence hook of a region (:data:`pipeline.review.candidates.Evidence`): its prediction
    tiles (and imagery tiles, when it has imagery) read by
    :func:`pipeline.review.evidence.inside_evidence`, each geometry's share on OSM water
    (``context_share``, :mod:`pipeline.review.context`), and :meth:`outline` for OSM outlines."""

    data_dir: Path
    zoom: int
    band: dict[str, int]
    files: tuple[Any, Any]  # (prediction, image) tile lookups, read once (pipeline.review.evidence.tile_files)
    images: Path | None
    context: Any  # pipeline.review.context.ContextAreas: read and indexed once, asked on every call

    def __call__(self, geoms: np.ndarray, name: str) -> pd.DataFrame:
        from pipeline.review.evidence import inside_evidence

        ev = inside_evidence(geoms, self.band[name], len(self.band), self.zoom, self.data_dir / "predictions",
                             self.images, self.files)
        return ev.assign(context_share=self.context.share(geoms))

    def outline(self, geoms: np.ndarray) -> np.ndarray:
        """How strongly the imagery still shows each outline (:func:`pipeline.review.evidence.outline_edges`;
        NaN without imagery)."""
        from pipeline.review.evidence import outline_edges

        if self.files[1] is None:
            return np.full(len(geoms), np.nan)
        return outline_edges(geoms, self.zoom, self.files[1])


def region_evidence(cfg: Any) -> Evidence | None:
    """The region's :class:`RegionEvidence`; None without prediction tiles."""
    from pipeline.review.context import ContextAreas
    from pipeline.review.evidence import tile_files

    d = Path(cfg.data_dir)
    if not (d / "predictions").is_dir():
        return None
    ordered = sorted((c for c in cfg.classes), key=lambda c: c.id)
    images = d / "images" if cfg.imagery is not None and (d / "images").is_dir() else None
    # the tile indexes are read once here, not on every one of the comparison's and simulation's calls
    files = (tile_files(d / "predictions", cfg.zoom), tile_files(images, cfg.zoom) if images is not None else None)
    return RegionEvidence(d, cfg.zoom, {c.name: k for k, c in enumerate(ordered)}, files, images,
                          ContextAreas(_context(cfg)))


def _context(cfg: Any) -> np.ndarray:
    """The region's context areas (OSM water, ``[compare] context_tags``) from its OSM extract;
    none for labels from vector files or without the extract."""
    from pipeline.review.context import context_areas

    osm = getattr(cfg, "osm", None)
    if osm is None or not cfg.compare.context_tags or not Path(osm.path).is_file():
        return np.empty(0, dtype=object)
    return context_areas(Path(osm.path), cfg.compare.context_tags)


def _mark_held_out(layer: gpd.GeoDataFrame, held_out: set[tuple[int, int]], zoom: int) -> gpd.GeoDataFrame:
    """``layer`` with ``held_out``: True where the feature lies on a tile the model never trained on."""
    if not len(layer):
        return layer
    return layer.assign(held_out=features_in_tiles(layer.geometry.to_numpy(), held_out, zoom))


def _line_absent(rows: pd.DataFrame) -> np.ndarray:
    """Evidence that an OSM line is gone: the share of it no predicted line runs along."""
    return 1.0 - rows["coverage"].to_numpy(dtype=float)


def score_layer(layer: gpd.GeoDataFrame, name: str, sim: Simulated | None, evidence: Features,
                spec: CompareSpec) -> tuple[gpd.GeoDataFrame, dict[str, Any]]:
    """``layer`` with the ``score`` of its class-``name`` rows, those below the threshold held
    back, and the calibration report of that class. Estimated precision is measured on the
    held-out candidates, the population the simulation stands for."""
    sel = (layer["class"] == name).to_numpy() if len(layer) else np.zeros(0, dtype=bool)
    rows = layer[sel]
    if sim is None:
        cal = Calibration(False, "not calibrated (no held-out tiles, or no simulation for this layer): "
                                 "scores are the raw evidence")
    else:
        cal = fit(evidence(sim.rows), sim.rows["s"].to_numpy(), spec.gap_seed, _n_own(sim.rows)) if len(sim.rows) \
            else Calibration(False, "the simulation produced no candidates")
    ev = evidence(rows) if len(rows) else np.empty(0)
    scores = np.round(cal.score(ev), 4)
    layer = layer.assign(score=layer["score"] if "score" in layer.columns else np.nan,
                         _rank=layer["_rank"] if "_rank" in layer.columns else np.nan)
    layer.loc[sel, "score"] = scores
    layer.loc[sel, "_rank"] = ev
    held = rows["held_out"].to_numpy(dtype=bool) if "held_out" in rows.columns else np.ones(len(rows), dtype=bool)
    by_length = _length_recall(sim, cal)  # lines; areas count the changes found
    rows_curve = curve(scores[held], _found(sim, cal) if by_length is None else np.empty(0),
                       sim.simulated if sim is not None and cal.fitted else 0, by_length)
    auto, why = choose_min_score(rows_curve, spec.target_precision) if cal.fitted else (0.0, "")
    t = spec.min_score if spec.min_score is not None else auto
    keep = ~sel | (layer["score"].to_numpy(dtype=float) >= t)
    at = next((r for r in rows_curve if r["min_score"] >= t - 1e-9), None)
    note = "; ".join(x for x in (cal.note, why if spec.min_score is None else "") if x)
    entry = {"calibrated": cal.fitted, "note": note, "min_score": t, "min_score_auto": spec.min_score is None,
             "target_precision": spec.target_precision, "n": int(sel.sum()), "kept": int((sel & keep).sum()),
             "held_out": int(held.sum()), "held_out_kept": at["n"] if at else int(held.sum()),
             "est_precision": at["est_precision"] if at and cal.fitted else None,
             "est_recall": at["est_recall"] if at and cal.fitted else None,
             "simulated": sim.simulated if sim is not None else 0, "labelled": cal.labelled,
             "unlabelled": cal.unlabelled, "c": None if np.isnan(cal.c) else round(cal.c, 4),
             "reliability": cal.reliability, "curve": rows_curve if cal.fitted else []}
    return layer[keep].reset_index(drop=True), entry


def _n_own(rows: pd.DataFrame) -> float:
    """How many distinct candidates the pool's unlabelled rows stand for (each own candidate is
    in every round of a missing-in-OSM simulation: ``round_weight`` counts it once)."""
    own = rows["s"].to_numpy() == 0
    w = rows["round_weight"].to_numpy(dtype=float)[own] if "round_weight" in rows.columns else np.ones(int(own.sum()))
    return float(np.nan_to_num(w, nan=1.0).sum())


def _found(sim: Simulated | None, cal: Calibration) -> np.ndarray:
    """Per simulated change found, the highest threshold at which it still is (cross-validated
    scores): where the pool records what each candidate covers (:attr:`Simulated.cover`),
    :func:`found_scores`; otherwise the best score of a labelled candidate that hit it."""
    if sim is None or not cal.fitted:
        return np.empty(0)
    if sim.cover is not None:
        return found_scores(sim.cover, cal.sim_scores)
    rows = pd.DataFrame({"change": sim.rows["change"].to_numpy(), "s": sim.rows["s"].to_numpy(),
                         "score": cal.sim_scores})
    return rows[rows["s"] == 1].groupby("change")["score"].max().to_numpy()


def _length_recall(sim: Simulated | None, cal: Calibration) -> np.ndarray | None:
    """Lines: per threshold of :data:`~pipeline.review.calibration.THRESHOLDS`, the share of the
    hidden ways' length that candidates scoring at least that run along (each way's covered share
    capped at 1), as road recall is measured against a truth; None for other layers."""
    if sim is None or not cal.fitted or sim.cover is None or sim.lengths is None or not sim.lengths.sum():
        return None
    c = sim.cover
    score = np.asarray(cal.sim_scores, dtype=float)[c["row"].to_numpy()]
    change, share = c["change"].to_numpy(dtype=np.int64), c["share"].to_numpy(dtype=float)
    out = []
    for t in THRESHOLDS:
        sel = score >= t
        covered = np.minimum(np.bincount(change[sel], weights=share[sel], minlength=len(sim.lengths)), 1.0)
        out.append(float((covered * sim.lengths).sum() / sim.lengths.sum()))
    return np.array(out)


def found_scores(cover: pd.DataFrame, scores: np.ndarray, min_cover: float = 0.5) -> np.ndarray:
    """Per change (``cover``: ``row``, ``change``, ``share``), the highest score ``t`` at which the
    candidates scoring ``t`` or more cover at least ``min_cover`` of it (the candidates of one
    round are disjoint, so their shares add up); changes they never cover that far are absent.
    A blob that covers a hidden building counts it found, as measured against a truth; a sliver
    inside a large one does not."""
    if not len(cover):
        return np.empty(0)
    c = cover.assign(score=np.asarray(scores, dtype=float)[cover["row"].to_numpy()])
    c = c.sort_values(["change", "score"], ascending=[True, False], kind="stable")
    c["cum"] = c.groupby("change")["share"].cumsum()
    hit = c[c["cum"] >= min_cover - 1e-9]
    return hit.groupby("change")["score"].first().to_numpy()


def by_score(layer: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Highest score first (ties by the evidence, then by ``id``); ``score`` right after ``id``/``status``."""
    if not len(layer) or "score" not in layer.columns:
        return layer
    rank = layer["_rank"] if "_rank" in layer.columns else layer["score"]
    order = np.lexsort((layer["id"].to_numpy().astype(str), -rank.fillna(-1.0).to_numpy(dtype=float),
                        -layer["score"].fillna(-1.0).to_numpy(dtype=float)))
    out = layer.iloc[order].reset_index(drop=True).drop(columns=["_rank"], errors="ignore")
    score = out.pop("score")
    out.insert(1, "score", score)
    return out
