"""End to end: ``RegionPipeline`` on sample towns of several sizes, as a user runs it (one
``python -m tasks`` process with ``--workers 2``), and the time per stage from its ``run.json``.

    python -m bench.bench_e2e [--sizes 700 5000] [--epochs-large 3 | --minutes-large 10]

700 m is the demo town (0.49 km²); 5000 m is 25 km² (4,394 z19 tiles), trained for
``--epochs-large`` epochs only, so that its run stays within an hour on 2 cores (the per-stage
times of the tile stages are what it measures; training time scales with the epochs).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "e2e"


def _config(size_m: int, epochs: int | None, minutes: float | None = None) -> Path:
    name = f"town{size_m}"
    data = OUT / name
    text = (ROOT / "configs" / "demo.toml").read_text()
    text = text.replace('data_dir = "data/demo"', f'data_dir = "{data}"')
    text = text.replace('"data/demo/', f'"{data}/').replace("size_m = 700.0", f"size_m = {float(size_m)}")
    if epochs is not None:
        text = text.replace("epochs = 60", f"epochs = {epochs}")
    if minutes is not None:  # a time budget: the one-cycle is laid out for it
        text = text.replace("[train]\n", f"[train]\nmax_minutes = {minutes}\n", 1)
    path = OUT / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    shutil.rmtree(data, ignore_errors=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[700, 5000], help="town sides in metres")
    ap.add_argument("--epochs-large", type=int, default=3, help="training epochs for towns over 1 km")
    ap.add_argument("--minutes-large", type=float, default=None,
                    help="a training time budget ([train] max_minutes) for towns over 1 km, instead of few epochs")
    args = ap.parse_args()
    for size in args.sizes:
        large = size > 1000
        epochs = (60 if args.minutes_large else args.epochs_large) if large else None
        cfg = _config(size, epochs, args.minutes_large if large else None)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "tasks", "RegionPipeline", "--config", str(cfg), "--workers", "2"],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if done.returncode != 0:
            print(f"e2e {size} m: failed ({done.stderr.strip().splitlines()[-1:]})")
            continue
        run = json.loads((OUT / f"town{size}" / "run.json").read_text())
        print(f"e2e town {size} m ({size * size / 1e6:.2f} km²): {wall:.0f} s wall, --workers 2, "
              f"largest process {peak / 1024:.0f} MiB" + (" (or an earlier run's)" if peak == before else ""))
        for stage, s in sorted(run["stages"].items(), key=lambda kv: (kv[1]["started"], kv[1]["ended"])):  # run order
            rate = f", {s['tiles_per_s']} tiles/s" if s.get("tiles_per_s") else ""
            peak = f", peak {s['peak_mib']:.0f} MiB" if s.get("peak_mib") else ""
            print(f"  {stage:<18} {s['seconds']:8.1f} s in {s['runs']} task(s){rate}{peak}")


if __name__ == "__main__":
    main()
