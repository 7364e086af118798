"""Does ``pipeline/pbf.py`` (reading only the relation blocks of a type-sorted PBF) save real
time? Whole-process extraction of the four Helsinki classes from a large generated extract
(Helsinki replicated on a grid, see bench_extract), with the relation-tail fast path and with
the relations pass reading the whole file; medians of ``--runs`` interleaved runs.

    python -m bench.bench_pbf [--grid 39] [--runs 3]     # grid 39: about 1 GB
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench.bench_peers import CONFIG, OUT, SRC, timed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=39)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not SRC.is_file():
        print(f"bench_pbf: skipped, {SRC} not found")
        return 0
    from bench.bench_extract import GENERATOR_VERSION, make_grid_extract

    OUT.mkdir(parents=True, exist_ok=True)
    big = OUT / f"helsinki-{args.grid}x{args.grid}-v{GENERATOR_VERSION}.osm.pbf"
    if not big.is_file():
        make_grid_extract(SRC, big, args.grid)
    mb = big.stat().st_size / 1e6
    with tempfile.TemporaryDirectory(prefix="_bench-pbf-", dir=OUT) as tmp:
        out = Path(tmp) / "features.parquet"
        runs: dict[str, list[tuple[float, float]]] = {"tail": [], "full": []}
        for _ in range(args.runs):
            runs["tail"].append(timed("osmsat_extract", CONFIG, big, out, clean=out))
            runs["full"].append(timed("osmsat_extract_no_tail", CONFIG, big, out, clean=out))
    for k, v in runs.items():
        print(f"extract {big.name} ({mb:.0f} MB), 4 classes, relations pass {k}: wall "
              f"{statistics.median(w for w, _ in v):.1f} s, cpu {statistics.median(c for _, c in v):.1f} s "
              f"(runs: {', '.join(f'{w:.1f}' for w, _ in v)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
