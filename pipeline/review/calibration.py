"""Scores for change candidates, calibrated on the region itself (positive-unlabelled learning).

A gap simulation (:mod:`pipeline.review.gapsim`) gives, per change layer and class, a pool of
simulated candidates: the *labelled* ones (``s = 1``) are known to be real, because they hit an
OSM feature hidden on purpose (``missing_in_osm``) or an OSM outline moved onto empty ground
(``not_seen``); the others (``s = 0``) are the region's own candidates, a mix of real changes
the simulation cannot label and model errors. Scikit-learn's isotonic regression on the
candidates' evidence (one number per candidate, see :mod:`pipeline.review.candidates`) fits
``g(x) = P(s = 1 | x)`` (monotone: more evidence never scores lower); under the usual
assumption that the hidden features are a random sample of the real changes (Elkan & Noto 2008), with ``c = P(s = 1 |
real) = n_labelled / (n_labelled + alpha n_own)`` and ``alpha`` the share of real changes among
the region's own candidates (:func:`real_share`), the probability that one of them is real is::

    score(x) = g(x) (1 - c) / (c (1 - g(x)))        (clipped to [0, 1])

(the pool without the simulated changes). The same fit gives the region's estimated precision
(mean score of its candidates at or above a threshold) and recall (share of the simulated
changes found at or above it), and ``min_score``: the lowest threshold whose estimated
precision reaches the target, moved up while that gains estimated precision and loses no
estimated recall (:func:`choose_min_score`). Pure functions; numpy and scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: thresholds of the estimated precision / recall curve
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(20))
#: the confidence and slack of the bounds of :func:`real_share` (Garg et al.'s delta and gamma)
DELTA = 0.1
GAMMA = 0.01
#: fewer labelled (or unlabelled) simulated candidates than this: no fit, scores stay uncalibrated
MIN_SAMPLES = 4


#: the note of a layer whose estimated share of real candidates is 0 (:func:`real_share`): every
#: score would be 0, whether the region has no real changes or its real changes look unlike the
#: simulated ones (measured: the demo's not-seen buildings and, before a line's evidence
#: saturated at a sure centreline, its missing roads, 21 % and 78 % of their candidates real
#: against the truth; nairobi's missing buildings, whose own candidates, median 27 m², are far
#: smaller than its hidden mapped buildings, median 298 m²), and the simulation cannot tell which
NO_SHARE = ("not calibrated: no candidate of the region has evidence like the best-scored simulated changes "
            "(estimated share of real ones 0: real changes here may look unlike the simulated ones); scores are "
            "the raw evidence")


@dataclass
class Calibration:
    """A fitted calibration of one change layer and class (``fitted`` False: too few samples,
    ``note`` says why; scores then fall back to the raw evidence)."""

    fitted: bool
    note: str = ""
    c: float = math.nan
    model: Any = None
    labelled: int = 0
    unlabelled: int = 0
    reliability: list[dict[str, float]] = field(default_factory=list)
    sim_scores: np.ndarray = field(default_factory=lambda: np.empty(0))

    def score(self, x: np.ndarray) -> np.ndarray:
        """Calibrated scores of evidence ``x`` (the evidence itself, clipped to [0, 1], where not fitted)."""
        if not self.fitted or len(x) == 0:
            return np.clip(np.nan_to_num(np.asarray(x, dtype=float)), 0.0, 1.0)
        return pu_score(self.model.predict(np.asarray(x, dtype=float).ravel()), self.c)


def pu_score(g: np.ndarray, c: float) -> np.ndarray:
    """P(real | x) among the region's own candidates from ``g = P(labelled | x)`` and ``c``."""
    g = np.clip(np.asarray(g, dtype=float), 1e-6, 1 - 1e-6)
    return np.clip(g * (1.0 - c) / (c * (1.0 - g)), 0.0, 1.0)


def fit(x: np.ndarray, s: np.ndarray, seed: int = 0, n_own: float | None = None) -> Calibration:
    """Fit ``g`` on the simulated pool (evidence ``x``, one value per candidate; labels ``s``),
    and ``c`` from the share of real candidates among the unlabelled (:func:`real_share`;
    ``n_own``: how many distinct candidates the unlabelled stand for, default all of them); the
    cross-validated ``g`` gives the reliability bins and the simulated candidates' scores. A
    share of 0 leaves the layer uncalibrated (:data:`NO_SHARE`) rather than scoring all 0."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, s = np.asarray(x, dtype=float).ravel(), np.asarray(s, dtype=int)
    n1, n0 = int(s.sum()), int((s == 0).sum())
    if n1 < MIN_SAMPLES or n0 < MIN_SAMPLES:
        return Calibration(False, f"too few simulated candidates to calibrate ({n1} labelled, {n0} other; "
                                  f"need {MIN_SAMPLES} of each)", labelled=n1, unlabelled=n0)
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
    folds = StratifiedKFold(min(5, n1, n0), shuffle=True, random_state=seed)
    g_cv = np.clip(cross_val_predict(model, x, s, cv=folds.split(x, s)), 0.0, 1.0)
    model.fit(x, s)
    alpha = real_share(x[s == 1], x[s == 0], n_own)
    if alpha == 0.0:
        return Calibration(False, NO_SHARE, labelled=n1, unlabelled=n0)
    c = float(np.clip(n1 / (n1 + alpha * n0), 0.02, 1.0))
    return Calibration(True, c=c, model=model, labelled=n1, unlabelled=n0,
                       reliability=reliability(g_cv, s), sim_scores=pu_score(g_cv, c))


def real_share(labelled: np.ndarray, own: np.ndarray, n_own: float | None = None, delta: float = DELTA,
               gamma: float = GAMMA) -> float:
    """The share of the region's own candidates that are real (the mixture proportion), from
    their evidence against the labelled candidates' by best bin estimation (BBE, Garg et al.
    2021): the ratio of the share of own candidates above a threshold to the share of labelled
    ones above it (real candidates are at least that rare among the own ones), at the threshold
    whose upper bound, the ratio plus ``(1 + gamma) (eps_own + eps_labelled) / share labelled``
    with ``eps = sqrt(log(1 / delta) / 2n)`` (their DKW bound), is lowest: a threshold above a
    handful of candidates no longer decides by its noise. ``n_own`` is how many distinct
    candidates ``own`` stands for: the missing-in-OSM pools hold each own candidate once per
    simulation round, so its noise is that of the region's candidates, not of their copies.
    Measured against the real share of the held-out candidates (docs/notes/i16-review.md): demo
    0.77 (0.83 real), a second demo model 0.89 (0.95), kampala 0.26 (at least 0.23), nairobi
    0.11 (0.09), nepal 0.22 (0.05); the minimum of the plain ratio over the thresholds with a
    fifth of the labelled above them, before, gave 0.64, 0.82, 0.10, 0.03 and 0."""
    if len(own) == 0 or len(labelled) == 0:
        return 0.0
    n_o = max(1.0, float(n_own) if n_own else float(len(own)))
    eps = (1.0 + gamma) * (math.sqrt(math.log(1.0 / delta) / (2.0 * n_o))
                           + math.sqrt(math.log(1.0 / delta) / (2.0 * len(labelled))))
    best, ratio = math.inf, 1.0
    for t in np.unique(labelled):
        above = int((labelled >= t).sum())
        if above < MIN_SAMPLES:
            continue
        share = above / len(labelled)
        r = float((own >= t).mean()) / share
        if r + eps / share < best:
            best, ratio = r + eps / share, r
    return float(min(1.0, ratio))


def reliability(p: np.ndarray, s: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Cross-validated ``g`` against the observed share of labelled candidates, per bin of ``g``
    (what the simulation can check without any truth)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    k = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        sel = k == b
        if sel.any():
            out.append({"lo": round(float(edges[b]), 2), "hi": round(float(edges[b + 1]), 2),
                        "predicted": round(float(p[sel].mean()), 4), "observed": round(float(s[sel].mean()), 4),
                        "n": int(sel.sum())})
    return out


def curve(scores: np.ndarray, found_scores: np.ndarray, simulated: int,
          recall: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Estimated precision and recall per threshold: ``scores`` of the region's candidates,
    ``found_scores`` the best score of each simulated change found (one per change; missed
    changes are simply absent), ``simulated`` how many changes were simulated; ``recall``, one
    value per :data:`THRESHOLDS`, replaces the count of changes found (lines: by length)."""
    out = []
    for k, t in enumerate(THRESHOLDS):
        sel = scores >= t
        r = (float(recall[k]) if recall is not None else int((found_scores >= t).sum()) / simulated) \
            if simulated else None
        out.append({"min_score": t, "n": int(sel.sum()),
                    "est_precision": round(float(scores[sel].mean()), 4) if sel.any() else None,
                    "est_recall": round(r, 4) if r is not None else None})
    return out


def choose_min_score(rows: list[dict[str, Any]], target: float, min_n: int = MIN_SAMPLES) -> tuple[float, str]:
    """The threshold to keep candidates from, and a note. Among the thresholds whose estimated
    precision reaches ``target`` on at least ``min_n`` held-out candidates, those with the
    highest estimated recall (the lowest threshold's), and among them the lowest one with the
    highest estimated precision: a threshold that loses no estimated recall but gains precision
    is taken, one that trades recall for precision is not. 0.0 (keep everything) when none
    reaches the target: an estimate on a handful of candidates is no reason to hold the rest back."""
    ok = [r for r in rows if r["est_precision"] is not None and r["est_precision"] >= target and r["n"] >= min_n]
    if ok:
        best_recall = max(float(r["est_recall"] or 0.0) for r in ok)
        same = [r for r in ok if float(r["est_recall"] or 0.0) >= best_recall - 1e-9]
        best_precision = max(float(r["est_precision"]) for r in same)
        return float(min(r["min_score"] for r in same if float(r["est_precision"]) >= best_precision - 1e-9)), ""
    return 0.0, (f"no threshold reaches est. precision {target:g} on at least {min_n} held-out candidates: "
                 "all candidates kept")
