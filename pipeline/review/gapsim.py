"""Gap simulation: changes made on purpose in the held-out tiles, so the comparison's candidates
there can be labelled (the pool :mod:`pipeline.review.calibration` fits on).

Held-out tiles are tiles the model never trained on (the validation and test split, or every
tile for a model trained elsewhere). Features count as inside them by their representative
point (EPSG:4326 in, EPSG:3857 metres scaled to the ground inside).

- :func:`simulate_missing`: the held-out OSM features of a class are shuffled (seeded) and cut
  into ``1 / share`` groups; each round hides one group and reruns the ``missing_in_osm``
  search. A candidate at least half inside a hidden feature is labelled (``s = 1``); every
  other candidate is the region's own (``s = 0``). Each feature is hidden exactly once.
- :func:`simulate_unseen`: a share of the held-out OSM outlines is moved 15-60 m (seeded) onto
  ground where no OSM feature lies (a "demolished" building: OSM has it, the image shows no
  building there); those that come out not seen are labelled, beside the region's own
  not-seen features in the held-out tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
import shapely.affinity

from pipeline.config.region import ClassSpec
from pipeline.review.candidates import Evidence, with_evidence
from pipeline.review.compare import (
    CompareSpec,
    _osm_rows,
    features_in_tiles,
    in_and_touching,
    missing_parts,
    missing_rows,
    points_in_tiles,
    valid_mercator,
)
from pipeline.review.compare_lines import compare_lines
from pipeline.review.coverage import coverage, ground_scale
from pipeline.vectors.finish import output_lonlat


@dataclass
class Simulated:
    """A labelled pool: candidate ``rows`` (with ``s``: 1 = a simulated change, ``change``: its
    index, -1 for the region's own, and ``round_weight``: one over the rounds a row's round had, so an
    own candidate seen in every round counts once, absent = 1) and how many changes were ``simulated``.
    ``cover`` (missing in OSM): per (``row``, ``change``) pair the ``share`` of the hidden feature
    that candidate covers (of a way: of its length, within the class tolerance), for the recall: a
    change is found where candidates cover at least half of it
    (:func:`pipeline.review.review.found_scores`; ways by length, ``lengths``), as recall is
    measured against a truth."""

    rows: pd.DataFrame
    simulated: int
    cover: pd.DataFrame | None = None
    #: lines: the ground length (m) of each hidden way, by its ``change`` number (recall by length)
    lengths: np.ndarray | None = None


def groups(n: int, share: float, seed: int) -> list[np.ndarray]:
    """``0..n-1`` shuffled (seeded) and cut into ``round(1 / share)`` groups (none when n = 0)."""
    if n == 0:
        return []
    perm = np.random.default_rng(seed).permutation(n)
    return [g for g in np.array_split(perm, max(1, min(n, round(1 / share)))) if len(g)]


def simulate_missing(p: pd.DataFrame, o: pd.DataFrame, name: str, spec: CompareSpec, held_out: set[tuple[int, int]],
                     zoom: int, evidence: Evidence | None) -> Simulated:
    """The ``missing_in_osm`` pool of class ``name``: predictions ``p`` and OSM features ``o``
    (EPSG:4326, that class only) restricted to the held-out tiles, one round per hidden group.
    OSM features that reach into the held-out tiles from elsewhere are never hidden but explain
    the predicted area they cover, as in the comparison itself."""
    ph = _in_tiles(p, held_out, zoom)
    oh, reaching = in_and_touching(o, held_out, zoom)
    pm, om, rest = _mercator(ph), _mercator(oh), _mercator(reaching)
    pools, covers, start = [], [], 0
    rounds = groups(len(oh), spec.gap_share, spec.gap_seed)
    for g in rounds:
        keep = np.setdiff1d(np.arange(len(oh)), g)
        miss, src = missing_parts(pm, np.concatenate([om[keep], rest]), spec, name)
        rows = missing_rows(name, ph, pm, miss, src, evidence)
        rows["s"], rows["change"] = _hits(miss, om[g], g)
        rows["round_weight"] = 1.0 / len(rounds)
        pools.append(rows)
        covers.append(_covers(miss, om[g], g, start))
        start += len(rows)
    rows = pd.concat(pools, ignore_index=True) if pools else pd.DataFrame({"s": [], "change": []})
    return Simulated(rows, len(oh), _cover_table(covers))


def _covers(cands: np.ndarray, hidden: np.ndarray, ids: np.ndarray,
            start: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(``row``: ``start`` + candidate index, ``change``: hidden id, ``share``: the part of the
    hidden feature that candidate covers) for every candidate that meets a hidden feature."""
    if len(cands) == 0 or len(hidden) == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    a, b = shapely.STRtree(hidden).query(cands, predicate="intersects")
    share = shapely.area(shapely.intersection(cands[a], hidden[b])) / np.maximum(shapely.area(hidden[b]), 1e-12)
    return a + start, np.asarray(ids, dtype=np.int64)[b], share


def _cover_table(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """One :attr:`Simulated.cover` table from its ``(row, change, share)`` parts."""
    cols = [np.concatenate([p[k] for p in parts]) if parts else np.empty(0, np.float64 if k == 2 else np.int64)
            for k in range(3)]
    return pd.DataFrame({"row": cols[0], "change": cols[1], "share": cols[2]})


def _hits(cands: np.ndarray, hidden: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, hidden id or -1) per candidate: labelled when at least half of it lies in one hidden feature."""
    s, change = np.zeros(len(cands), dtype=int), np.full(len(cands), -1, dtype=np.int64)
    if len(cands) == 0 or len(hidden) == 0:
        return s, change
    a, b = shapely.STRtree(hidden).query(cands, predicate="intersects")
    share = shapely.area(shapely.intersection(cands[a], hidden[b])) / np.maximum(shapely.area(cands[a]), 1e-12)
    return _best_hits(len(cands), a, b, share, ids)


def _best_hits(n: int, a: np.ndarray, b: np.ndarray, share: np.ndarray,
               ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label, hidden id or -1) for ``n`` candidates from (candidate ``a``, hidden ``b``) pairs:
    labelled when ``share`` of the candidate reaches 0.5, the largest share winning."""
    s, change = np.zeros(n, dtype=int), np.full(n, -1, dtype=np.int64)
    ok = np.flatnonzero(share >= 0.5)
    order = ok[np.lexsort((share[ok], a[ok]))]  # by candidate, its largest share last
    best = order[np.r_[a[order][1:] != a[order][:-1], True]] if len(order) else order
    s[a[best]], change[a[best]] = 1, ids[b[best]]
    return s, change


def simulate_unseen(p: pd.DataFrame, o: pd.DataFrame, name: str, spec: CompareSpec, held_out: set[tuple[int, int]],
                    zoom: int, evidence: Evidence | None, own: pd.DataFrame) -> Simulated:
    """The ``not_seen`` pool of class ``name``: OSM outlines moved onto empty ground in the
    held-out tiles (labelled when predictions cover less than ``seen_cover`` of them) and
    ``own``, the region's not-seen rows, kept where they lie in the held-out tiles."""
    oh = _in_tiles(o, held_out, zoom)
    om, pm = _mercator(oh), _mercator(p)
    moved = placebos(om, spec.gap_share * 2.5, spec.gap_seed, held_out, zoom)
    cover = coverage(moved, pm, spec.explain_m)
    kept = np.flatnonzero(cover < spec.seen_cover)
    fake = pd.DataFrame({"osm_type": "simulated", "osm_id": np.arange(len(moved)), "geometry": output_lonlat(moved)})
    rows = _osm_rows(name, fake, moved, kept, cover, None)
    rows = with_evidence(rows, rows.geometry.to_numpy(), name, evidence, outline=True)
    rows["s"], rows["change"] = 1, kept
    mine = _in_tiles(own, held_out, zoom) if len(own) else own.copy()
    mine["s"], mine["change"] = 0, -1
    return Simulated(pd.concat([rows, mine], ignore_index=True), len(moved))


def placebos(om: np.ndarray, share: float, seed: int, held_out: set[tuple[int, int]], zoom: int,
             tries: int = 12) -> np.ndarray:
    """A seeded ``share`` of the outlines ``om`` (EPSG:3857) moved 15-60 ground metres, each onto
    ground in the held-out tiles that no OSM outline (grown by 2 m) nor earlier placebo touches."""
    if len(om) == 0:
        return np.empty(0, dtype=object)
    rng = np.random.default_rng([seed, 1])
    s = ground_scale(om)
    taken = list(shapely.buffer(om, 2.0 * s))
    tree = shapely.STRtree(np.asarray(taken, dtype=object))
    out: list[shapely.Geometry] = []
    boxes: list[np.ndarray] = []  # the placebos' bounds: only those whose boxes meet are tested exactly
    for k in rng.permutation(len(om))[: max(1, round(share * len(om)))]:
        for _ in range(tries):
            d, a = rng.uniform(15.0, 60.0) * s, rng.uniform(0, 2 * np.pi)
            g = shapely.affinity.translate(om[k], d * np.cos(a), d * np.sin(a))
            inside = points_in_tiles(shapely.point_on_surface(np.array([g], dtype=object)), held_out, zoom)[0]
            if inside and not len(tree.query(g, predicate="intersects")) and not _meets_any(g, out, boxes):
                out.append(g)
                boxes.append(shapely.bounds(g))
                break
    return np.asarray(out, dtype=object)


def _meets_any(g: shapely.Geometry, placed: list[shapely.Geometry], boxes: list[np.ndarray]) -> bool:
    """Whether ``g`` intersects any of ``placed`` (their bounds ``boxes``)."""
    if not placed:
        return False
    b, bb = shapely.bounds(g), np.asarray(boxes)
    near = np.flatnonzero((bb[:, 0] <= b[2]) & (bb[:, 2] >= b[0]) & (bb[:, 1] <= b[3]) & (bb[:, 3] >= b[1]))
    return bool(len(near)) and bool(shapely.intersects(g, np.asarray(placed, dtype=object)[near]).any())


def _in_tiles(df: pd.DataFrame, tiles: set[tuple[int, int]], zoom: int) -> pd.DataFrame:
    """The rows of ``df`` (EPSG:4326) whose representative point lies in ``tiles``, renumbered."""
    return df[features_in_tiles(df.geometry.to_numpy(), tiles, zoom)].reset_index(drop=True)


def _clipped(df: pd.DataFrame, tiles: set[tuple[int, int]], zoom: int) -> pd.DataFrame:
    """The rows of ``df`` (EPSG:4326 lines) that meet ``tiles``, each clipped to them, renumbered.
    A road network's predicted centreline is one line across many tiles: where its
    representative point lies says nothing about where its parts lie (taken by that point, the
    25 km² town's pool lost the centrelines of 128 of its 427 hidden ways)."""
    from pipeline.tiles.geo import to_lonlat, to_mercator

    if not len(df) or not tiles:
        return df.iloc[:0].reset_index(drop=True)
    area = _tiles_area(tiles, zoom)
    lines = to_mercator(df.geometry.to_numpy())
    meet = np.flatnonzero(shapely.intersects(lines, area))
    inside = shapely.intersection(lines[meet], area)
    mixed = shapely.get_type_id(inside) == 7  # a line along a tile's edge: its lines and a touching point
    inside[mixed] = shapely.line_merge(inside[mixed])
    keep = ~shapely.is_empty(inside) & (shapely.length(inside) > 0)
    out = df.iloc[meet[keep]].reset_index(drop=True)
    out["geometry"] = to_lonlat(inside[keep])
    return out


def _tiles_area(tiles: set[tuple[int, int]], zoom: int) -> shapely.Geometry:
    """The union of ``tiles`` (zoom ``zoom``) as one prepared EPSG:3857 polygon."""
    from pipeline.tiles.tilemath import Tile, tile_bounds

    area = shapely.union_all(shapely.box(*np.array([tile_bounds(Tile(zoom, x, y)) for x, y in tiles]).T))
    shapely.prepare(area)
    return area


def _mercator(df: pd.DataFrame) -> np.ndarray:
    return valid_mercator(df) if len(df) else np.empty(0, dtype=object)


def simulate_line_missing(p: pd.DataFrame, o: pd.DataFrame, c: ClassSpec, spec: CompareSpec,
                          held_out: set[tuple[int, int]], zoom: int) -> Simulated:
    """The ``missing_in_osm`` pool of line class ``c``: held-out OSM ways hidden group by group
    (as :func:`simulate_missing`); a piece is labelled when at least half of its length lies
    within the class tolerance of a hidden way; ``cover`` and ``lengths`` give the recall by
    length. Ways that run into the held-out tiles from elsewhere are never hidden but explain the
    predicted lines along them."""
    ph = _clipped(p, held_out, zoom)
    oh, rest = in_and_touching(o, held_out, zoom)
    tol = max(c.buffer_m, 1.0)
    pools, covers, start = [], [], 0
    lengths, area = np.zeros(len(oh)), _tiles_area(held_out, zoom) if held_out else shapely.Polygon()
    rounds = groups(len(oh), spec.gap_share, spec.gap_seed)
    for g in rounds:
        keep = np.setdiff1d(np.arange(len(oh)), g)
        rows, _ = compare_lines(ph, oh.iloc[keep], c, tol, spec.min_length_m, spec.seen_cover, rest)
        pieces, hidden = _mercator(rows), _mercator(oh.iloc[g])
        s = ground_scale(hidden) if len(hidden) else 1.0
        near = shapely.buffer(hidden, tol * s)
        a, b = (shapely.STRtree(near).query(pieces, predicate="intersects") if len(pieces) and len(hidden)
                else (np.empty(0, np.int64), np.empty(0, np.int64)))
        share = shapely.length(shapely.intersection(pieces[a], near[b])) / np.maximum(shapely.length(pieces[a]), 1e-12)
        rows["s"], rows["change"] = _best_hits(len(rows), a, b, share, g)
        rows["round_weight"] = 1.0 / len(rounds)
        pools.append(rows)
        inside = shapely.intersection(hidden, area) if len(hidden) else hidden  # what the pieces can reach
        along = shapely.length(shapely.intersection(inside[b], shapely.buffer(pieces[a], tol * s)))
        reach = np.maximum(shapely.length(inside[b]), 1e-12)
        covers.append((a + start, np.asarray(g, dtype=np.int64)[b], along / reach))
        lengths[g] = shapely.length(inside) / s
        start += len(rows)
    rows = pd.concat(pools, ignore_index=True) if pools else pd.DataFrame({"s": [], "change": []})
    return Simulated(rows, len(oh), _cover_table(covers), lengths)
