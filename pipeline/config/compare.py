"""The ``[compare]`` config section: matching thresholds of :mod:`pipeline.review.compare`.

Apart from the comparison code (numpy, pandas, shapely), so that loading a config and computing a
stage digest import none of it (``RegionConfig.compare`` in :mod:`pipeline.config.region` is parsed here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError

#: OSM tags of the areas a building cannot stand on (the context of a missing candidate)
CONTEXT_TAGS = ("natural=water|wetland", "waterway=riverbank|dock", "landuse=reservoir|basin")


@dataclass(frozen=True)
class CompareSpec:
    """``[compare]``: matching thresholds; ``classes`` empty = every area class."""

    match_iou: float = 0.3     # pairs with IoU below this never match
    offset_m: float = 0.75     # a matched pair further apart than this (centroids, ground metres) is "offset"
    offset_gain: float = 0.1   # ... when the OSM outline moved by that offset overlaps the prediction this much
    #                            better (IoU): a displacement, not a differently shaped prediction; 0: distance alone
    score_iou: float = 0.5     # IoU at which a match counts as a true positive in the figures
    max_offset_m: float = 3.0  # second pass: leftover pairs this close (centroids), of similar area, match too
    seen_cover: float = 0.5    # an OSM feature covered at least this much by predictions of its class is seen
    explain_m: float = 0.5     # predicted area within this of an OSM feature (ground metres) is explained by it,
    #                            and an OSM feature's parts within this of predictions count as covered
    open_m: float = 1.0        # unexplained area narrower than twice this (ground metres) is a sliver, not a building
    missing_min_m2: float = 5.0  # unexplained parts smaller than this (ground m²) are no candidates
    min_area_m2: tuple[tuple[str, float], ...] = ()  # per class: overrides missing_min_m2
    min_length_m: float = 15.0  # line classes: missing / not-seen pieces shorter than this (ground m) are dropped
    min_score: float | None = None  # None ("auto"): chosen from the estimated curve (calibration.choose_min_score)
    target_precision: float = 0.9  # "auto" min_score aims at this estimated precision (the queue's aim, issue 16)
    gap_share: float = 0.2     # gap simulation: share of held-out OSM features hidden per round (1/share rounds)
    gap_seed: int = 0
    classes: tuple[str, ...] = ()
    #: OSM areas where no building stands (water): a missing candidate's score is scaled by the share
    #: of it off them (:func:`pipeline.review.candidates.missing_evidence`); [] turns it off
    context_tags: tuple[str, ...] = CONTEXT_TAGS
    #: a region is compared in square blocks of this many tiles a side (a power of two; memory is
    #: one block's, :mod:`pipeline.review.blocks`); 0: the whole region at once
    block_tiles: int = 32
    #: blocks compared side by side in this many processes (forked where the platform forks); the
    #: config's 0 (its default) is one per CPU this process may use; operational: not in the digest
    processes: int = field(default=1, compare=False, metadata={"operational": True})

    def min_area(self, name: str) -> float:
        """The smallest missing candidate of class ``name`` (ground m²)."""
        return dict(self.min_area_m2).get(name, self.missing_min_m2)


def parse_compare(path: Path, table: dict[str, Any]) -> CompareSpec:
    """Parse ``[compare]`` (``{}`` gives the defaults)."""
    sec = Section(path, "compare", table)
    d = CompareSpec()
    spec = CompareSpec(
        match_iou=sec.number("match_iou", d.match_iou, lo=0.01, hi=1.0),
        offset_m=sec.number("offset_m", d.offset_m, lo=0.0),
        offset_gain=sec.number("offset_gain", d.offset_gain, lo=0.0, hi=1.0),
        score_iou=sec.number("score_iou", d.score_iou, lo=0.01, hi=1.0),
        max_offset_m=sec.number("max_offset_m", d.max_offset_m, lo=0.0),
        seen_cover=sec.number("seen_cover", d.seen_cover, lo=0.01, hi=1.0),
        explain_m=sec.number("explain_m", d.explain_m, lo=0.0),
        open_m=sec.number("open_m", d.open_m, lo=0.0),
        missing_min_m2=sec.number("missing_min_m2", d.missing_min_m2, lo=0.0),
        min_area_m2=_per_class(sec, "min_area_m2"),
        min_length_m=sec.number("min_length_m", d.min_length_m, lo=0.0),
        min_score=_min_score(sec),
        target_precision=sec.number("target_precision", d.target_precision, lo=0.0, hi=1.0),
        gap_share=sec.number("gap_share", d.gap_share, lo=0.01, hi=0.5),
        gap_seed=sec.integer("gap_seed", d.gap_seed),
        classes=tuple(str(v) for v in sec.take("classes", list, list(d.classes))),
        context_tags=_context_tags(sec),
        block_tiles=_block_tiles(sec),
        processes=_processes(sec.integer("processes", 0, lo=0, hi=1024)),
    )
    sec.done()
    return spec


def _processes(n: int) -> int:
    """``processes``: 0 -> the CPUs this process may run on."""
    import os

    if n:
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _block_tiles(sec: Section) -> int:
    """``block_tiles``: 0 or a power of two (blocks are whole tiles of a lower zoom)."""
    v = sec.integer("block_tiles", CompareSpec.block_tiles, lo=0, hi=1 << 16)
    if v & (v - 1):
        raise ConfigError(f"{sec.key('block_tiles')} = {v}; give a power of two (e.g. 32), or 0 for one block")
    return v


def _context_tags(sec: Section) -> tuple[str, ...]:
    """``context_tags``: OSM tag filters (``key``, ``key=value`` or ``key=v1|v2``), checked here."""
    from pipeline.labels.tags import TagFilter

    tags = tuple(sec.strings("context_tags", list(CONTEXT_TAGS)))
    for t in tags:
        TagFilter.parse(t, sec.key("context_tags"))
    return tags


def _per_class(sec: Section, key: str) -> tuple[tuple[str, float], ...]:
    """A ``{class = number}`` table (ground units, >= 0)."""
    table = sec.take(key, dict, {})
    for k, v in table.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"{sec.key(key)}.{k} must be a number >= 0, got {v!r}")
    return tuple(sorted((str(k), float(v)) for k, v in table.items()))


def _min_score(sec: Section) -> float | None:
    """``min_score``: a number in [0, 1] or "auto" (None: chosen from the calibration)."""
    v = sec.take("min_score", (int, float, str), "auto")
    if isinstance(v, str):
        if v != "auto":
            raise ConfigError(f"{sec.key('min_score')} = {v!r}; give a number in [0, 1] or \"auto\"")
        return None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{sec.key('min_score')} = {v} is out of range [0, 1]")
    return float(v)
