"""The ``[vectorize]`` config section: thresholds and tolerances of :mod:`pipeline.vectors.vectorize`.

Apart from the vectorising code (numpy, scipy, shapely), so that loading a config and computing a
stage digest import none of it (``RegionConfig.vectorize`` in :mod:`pipeline.config.region` is parsed here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError

#: tiles to vectorise: probabilities (``predictions``) or label masks (``masks``)
SOURCES = ("predictions", "masks")
#: how buildings are squared: ``square`` (own, numpy; the default) or the ``buildingregulariser`` library
REGULARIZERS = ("square", "buildingregulariser")


@dataclass(frozen=True)
class VectorizeSpec:
    """``[vectorize]``: thresholds and tolerances (ground metres / square metres)."""

    source: str = "predictions"      # tiles to vectorise: "predictions" (probabilities) or "masks"
    threshold: float = 0.5           # probability at or above which a pixel belongs to a class
    min_area_m2: float = 2.0         # polygons smaller than this (after the merge) are dropped
    min_hole_m2: float = 1.0         # holes smaller than this are filled
    simplify_m: float = 0.3          # polygon simplification tolerance (Douglas-Peucker), after the merge
    line_simplify_m: float = 1.0     # centreline simplification tolerance
    min_length_m: float = 3.0        # centrelines shorter than this are dropped
    spur_m: float = 8.0              # skeleton spurs (free end, other end at a junction) shorter than this are dropped
    #: area classes whose polygons get right angles (:mod:`pipeline.vectors.regularize`); None (the key left out):
    #: every building class (:func:`regularized_classes`); ``[]`` turns it off
    regularize: tuple[str, ...] | None = None
    regularize_min_iou: float = 0.9  # a regularised polygon is kept only with IoU >= this with the raw one
    #: the regulariser (:data:`REGULARIZERS`); "" (the key left out) is ``square``. In the vectorize
    #: digest only when set (``optional`` in the stage table)
    regularizer: str = field(default="", metadata={"digest": "vectorize"})
    instances: bool = True           # split area classes that have an edge band into instances (watershed)
    #: cores smaller than this (ground m²) seed no instance of their own: 32 measured against 8 on the
    #: sample town (object F1 0.710 -> 0.754, dense quarters 0.596 -> 0.655), nairobi (0.773 -> 0.819,
    #: 0.703 -> 0.719), nepal (0.263 -> 0.278), kampala (0.237 -> 0.231); docs/notes/i15-dense.md
    marker_min_m2: float = 32.0
    #: the neck split cuts a polygon only into bodies of at least this (ground m²)
    neck_min_m2: float = 8.0
    #: buildings joined by a neck narrower than twice one of these (ground metres, tried in order) are split
    #: (:mod:`pipeline.vectors.necks`); [] turns it off
    neck_m: tuple[float, ...] = (2.0, 3.0)
    #: predicted area-class polygons whose confidence (:mod:`pipeline.vectors.confidence`: learnt from the
    #: region's OSM on its training and validation tiles) is below this are dropped; 0 keeps them all
    min_confidence: float = 0.5


def parse_vectorize(path: Path, table: dict[str, Any]) -> VectorizeSpec:
    """Parse ``[vectorize]`` (``{}`` gives the defaults)."""
    sec = Section(path, "vectorize", table)
    d = VectorizeSpec()
    spec = VectorizeSpec(
        source=sec.choice("source", SOURCES, d.source),
        threshold=sec.number("threshold", d.threshold, lo=0.0, hi=1.0),
        min_area_m2=sec.number("min_area_m2", d.min_area_m2, lo=0.0),
        min_hole_m2=sec.number("min_hole_m2", d.min_hole_m2, lo=0.0),
        simplify_m=sec.number("simplify_m", d.simplify_m, lo=0.0),
        line_simplify_m=sec.number("line_simplify_m", d.line_simplify_m, lo=0.0),
        min_length_m=sec.number("min_length_m", d.min_length_m, lo=0.0),
        spur_m=sec.number("spur_m", d.spur_m, lo=0.0),
        regularize=_names(sec.take("regularize", list, None)),
        regularize_min_iou=sec.number("regularize_min_iou", d.regularize_min_iou, lo=0.0, hi=1.0),
        regularizer=sec.choice("regularizer", REGULARIZERS) if "regularizer" in table else d.regularizer,
        instances=sec.take("instances", bool, d.instances),
        marker_min_m2=sec.number("marker_min_m2", d.marker_min_m2, lo=0.0),
        neck_min_m2=sec.number("neck_min_m2", d.neck_min_m2, lo=0.0),
        neck_m=_radii(sec, "neck_m", d.neck_m),
        min_confidence=sec.number("min_confidence", d.min_confidence, lo=0.0, hi=1.0),
    )
    sec.done()
    return spec


def _radii(sec: Section, k: str, default: tuple[float, ...]) -> tuple[float, ...]:
    """A list of positive numbers (ground metres); a single number is a list of one."""
    v = sec.take(k, (list, int, float), list(default))
    values = v if isinstance(v, list) else [v]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in values):
        raise ConfigError(f"{sec.key(k)} = {v!r}; give a list of positive numbers (ground metres), [] for none")
    return tuple(float(x) for x in values)


def _names(values: list[Any] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(str(v) for v in values)
