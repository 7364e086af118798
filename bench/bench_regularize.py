"""Benchmark: building squaring, the own ``square`` against the ``buildingregulariser`` library, on
the same polygons: the demo's traced building outlines as ``finish`` hands them to ``regularize``
(captured while vectorising the demo's prediction tiles with the demo config; ``make demo`` first).

    python -m bench.bench_regularize [--config configs/demo.toml] [--predictions data/demo/predictions]

Per regulariser: CPU time per building (``time.process_time``, one core, so a busy machine does not
skew it), the share of buildings the IoU gate keeps squared, the vertices of the squared outlines
(exterior ring, p25/median/p75) and their worst corner (degrees off 90).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from bench.common import report

ROOT = Path(__file__).resolve().parent.parent


def demo_inputs(config: Path, predictions: Path) -> list[tuple[np.ndarray, float, float, float]]:
    """The arguments of every ``regularize`` call while vectorising ``predictions`` with ``config``."""
    import pipeline.vectors.regularize as reg
    from bench.peer_jobs import osmsat_vectorize

    calls: list[tuple[np.ndarray, float, float, float]] = []
    real = reg.regularize

    def capture(polys: np.ndarray, min_iou: float, scale: float = 1.0, pixel: float = 0.0,
                method: str = "square") -> np.ndarray:
        calls.append((np.asarray(polys, dtype=object).copy(), min_iou, scale, pixel))
        return real(polys, min_iou, scale, pixel, method)

    reg.regularize = capture  # finish imports it at call time
    try:
        osmsat_vectorize(str(config), str(predictions), "/dev/null")
    finally:
        reg.regularize = real
    return calls


def worst_corner(polys: np.ndarray) -> float:
    """The largest deviation from 90 degrees of any exterior corner of ``polys``."""
    worst = 0.0
    for p in polys:
        ring = shapely.get_coordinates(p.exterior)[:-1]
        a, b = np.roll(ring, 1, axis=0) - ring, np.roll(ring, -1, axis=0) - ring
        cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        worst = max(worst, float(np.abs(np.degrees(np.arccos(np.clip(cos, -1, 1))) - 90).max()))
    return worst


def measure(calls: list[tuple[np.ndarray, float, float, float]], method: str) -> dict[str, Any]:
    from pipeline.model.metrics import iou
    from pipeline.vectors.regularize import regularize

    outs, raws, cpu = [], [], 0.0
    for polys, min_iou, scale, pixel in calls:
        t0 = time.process_time()
        outs.append(regularize(polys, min_iou, scale, pixel, method))
        cpu += time.process_time() - t0
        raws.append(polys)
    out, raw = np.concatenate(outs), np.concatenate(raws)
    squared = np.array([o is not r for o, r in zip(out, raw, strict=True)])
    verts = shapely.get_num_coordinates(shapely.get_exterior_ring(out[squared])) - 1
    p25, p50, p75 = np.percentile(verts, [25, 50, 75]) if squared.any() else (np.nan,) * 3
    return {"buildings": len(raw), "us_per_building": 1e6 * cpu / len(raw),
            "squared_share": round(float(squared.mean()), 3), "vertices_p25": p25, "vertices_median": p50,
            "vertices_p75": p75, "raw_vertices_median": float(np.median(shapely.get_num_coordinates(
                shapely.get_exterior_ring(raw)) - 1)),
            "min_iou_squared": round(float(iou(out[squared], raw[squared]).min()), 3) if squared.any() else None,
            "worst_corner_deg": round(worst_corner(out[squared]), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.toml")
    ap.add_argument("--predictions", type=Path, default=ROOT / "data" / "demo" / "predictions")
    args = ap.parse_args(argv)
    if not any(args.predictions.glob("*/*/*.png")):
        print(f"no prediction tiles in {args.predictions} (make demo first)")
        return 1
    calls = demo_inputs(args.config, args.predictions)
    for method in ("square", "buildingregulariser"):
        r = measure(calls, method)
        report(f"regularize {method}", r.pop("us_per_building"), "µs of CPU per building", **r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
