"""Benchmark: generate the synthetic sample region at the demo size (0.5 km²) and at 25 km².

Run with ``make bench`` or ``python -m bench.bench_synthetic [size_m ...]``. Each size runs in a
fresh process (bench.common.run_phase); prints wall time, peak memory, object counts and the
size of each file. Output goes to ``bench/out/synthetic/<size>/``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import report, run_phase
from pipeline.config.region import load_config

OUT = Path("bench/out/synthetic")
SIZES_M = (700.0, 5000.0)  # 0.49 km² (configs/demo.toml) and 25 km²


def _generate(size_m: float) -> dict[str, Any]:
    from pipeline.synthetic import Scene, make_town
    from pipeline.synthetic.ortho import write_orthophoto
    from pipeline.synthetic.osmfile import write_osm
    from pipeline.synthetic.truth import write_truth

    base = load_config("configs/demo.toml").synthetic
    if base is None:
        raise SystemExit("configs/demo.toml has no [synthetic] section")
    syn = dataclasses.replace(base, size_m=size_m)
    folder = OUT / f"{size_m:.0f}m"
    folder.mkdir(parents=True, exist_ok=True)
    t: dict[str, Any] = {}
    t0 = time.perf_counter()
    town = make_town(syn)
    t["layout_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = write_osm(town, folder / "demo.osm.pbf")
    write_truth(town, ids, folder / "truth.geojson")
    t["osm_truth_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_orthophoto(Scene(town), folder / "orthophoto.tif", syn.jpeg_quality)
    t["orthophoto_s"] = time.perf_counter() - t0
    t["buildings"] = len(town.buildings)
    t["trees"] = len(town.trees)
    t["pixels"] = town.size_px**2
    t["files"] = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    return t


def main(sizes: tuple[float, ...]) -> None:
    for size in sizes:
        res, seconds, peak_mb = run_phase(_generate, size)
        km2 = size * size / 1e6
        files = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in res["files"].items())
        report(f"synthetic {km2:.2f} km² ({size:.0f} m)", seconds, "s",
               peak_mb=round(peak_mb), layout_s=round(res["layout_s"], 1), osm_truth_s=round(res["osm_truth_s"], 1),
               orthophoto_s=round(res["orthophoto_s"], 1), buildings=res["buildings"], trees=res["trees"],
               mpix_per_s=round(res["pixels"] / 1e6 / res["orthophoto_s"], 1))
        print(f"  files: {files}", flush=True)


if __name__ == "__main__":
    main(tuple(float(a) for a in sys.argv[1:]) or SIZES_M)
