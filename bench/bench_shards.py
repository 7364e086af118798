"""Benchmark: the tile stages' shard processes with and without the libraries they inherit from
the scheduling process (``[osmsat] preload`` in ``configs/luigi.toml``), on a finished region.

    python -m bench.bench_shards [--config bench/out/e2e/town5000.toml] [--stages masks,imagery,predict,vectorize]

Per stage and mode: the stage's shard manifests and product summary deleted, then
``python -m tasks <Stage> --config ... --workers 2`` (with ``--osmsat-preload false`` for each shard
importing its own libraries); summed task seconds and tiles/s of its shard tasks from the region's
``_runlog/``, the command's wall time and the largest shard's peak memory. The outputs are the same
either way (the same code runs; only where the imports happen moves). Default region: the 25 km²
town of ``bench_e2e`` when it is there, else its demo-sized town (run ``bench_e2e`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "bench" / "out" / "e2e"

#: stage -> (the task that runs its shards, product folder, shard task, product summary under
#: data_dir, the product whose shard manifests count the stage's tiles)
STAGES = {
    "masks": ("MasksAll", "masks", "RasterizeMasks", "masks/_manifest.json", "masks"),
    "imagery": ("ImageryAll", "images", "FetchImagery", "images/_manifest.json", "images"),
    "predict": ("PredictAll", "predictions", "Predict", "predictions/_manifest.json", "predictions"),
    "vectorize": ("MergeFeatures", "vectors", "Vectorize", "_manifests/vectorize.json", "predictions"),
}


def data_dir(config: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from pipeline.config.region import load_config

    return Path(load_config(config).data_dir)


def run_stage(config: Path, data: Path, stage: str, preload: bool) -> dict[str, float]:
    """One stage's shards redone; its figures."""
    task, product, shard_task, summary, counted = STAGES[stage]
    for p in (data / product / "_shards").glob("*.json"):
        p.unlink()
    (data / summary).unlink(missing_ok=True)
    env = {**os.environ, "LUIGI_CONFIG_PARSER": "toml", "LUIGI_CONFIG_PATH": str(ROOT / "configs" / "luigi.toml")}
    since = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tasks", task, "--config", str(config), "--workers", "2",
                           "--osmsat-preload", "true" if preload else "false"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{task} failed: {(done.stdout + done.stderr).strip().splitlines()[-1:]}")
    logs = [json.loads(p.read_text()) for p in (data / "_runlog").glob(f"{shard_task}_*.json")]
    logs = [r for r in logs if r["started"] >= since]
    seconds = sum(float(r["seconds"]) for r in logs)
    tiles = sum(int(json.loads(p.read_text()).get("tiles") or 0) for p in (data / counted / "_shards").glob("*.json")
                if not p.name.endswith(".started.json"))
    return {"shards": len(logs), "seconds": seconds, "wall": wall, "tiles": tiles,
            "peak_mib": max((float(r["peak_mib"] or 0) for r in logs), default=0.0)}


def main() -> int:
    default = E2E / "town5000.toml" if (E2E / "town5000.toml").is_file() else E2E / "town700.toml"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=default)
    ap.add_argument("--stages", default=",".join(STAGES))
    args = ap.parse_args()
    if not args.config.is_file():
        print(f"bench_shards: skipped, no finished region at {args.config} (python -m bench.bench_e2e first)")
        return 0
    data = data_dir(args.config)
    print(f"--- shard stages of {data} (--workers 2): each shard importing its libraries / inheriting them")
    for stage in args.stages.split(","):
        own, inherited = (run_stage(args.config, data, stage, preload) for preload in (False, True))
        rate = [f"{r['tiles'] / r['seconds']:.1f}" if r["seconds"] else "-" for r in (own, inherited)]
        print(f"{stage:10s} {own['shards']} shards: summed {own['seconds']:.1f} s -> {inherited['seconds']:.1f} s "
              f"({rate[0]} -> {rate[1]} tiles/s per process), wall {own['wall']:.1f} s -> {inherited['wall']:.1f} s, "
              f"largest shard {own['peak_mib']:.0f} -> {inherited['peak_mib']:.0f} MiB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
