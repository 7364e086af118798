"""The command's start-up floor: CPU seconds of a no-op ``python -m tasks <Task>`` on a finished
region, beside ``python -c "import luigi"`` (the floor no Luigi command goes below), and the
overhead of a cheap stage (CoverTiles) over a plain script doing its work (``make bench``).

    python -m bench.bench_startup [--runs 3] [--config configs/demo.toml ...] [--tasks A,B]

Without ``--config`` it generates a small sample town (``[synthetic] size_m = 150``) under
``bench/out/startup`` and finishes it up to ``SplitDataset`` (no training). Each figure is the
median CPU time (user + system) of ``--runs`` whole processes, the floor's runs interleaved with
them; a task that is not complete on a region is skipped (its run would do work, not nothing).
Target: every no-op run and the stage's overhead <= 0.5 s of CPU.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out" / "startup"
TASKS = ("MakeSampleRegion", "ExtractFeatures", "CoverTiles", "MasksAll", "ImageryAll", "SplitDataset",
         "TrainModel", "PredictAll", "EvaluateModel", "MergeFeatures", "CompareWithOSM", "RegionReport",
         "RegionPipeline")
ENV = {**os.environ, "LUIGI_CONFIG_PARSER": "toml", "LUIGI_CONFIG_PATH": str(ROOT / "configs" / "luigi.toml")}

#: a plain script doing what CoverTiles does (read features, cover, write tiles.csv): its body's floor
PLAIN_COVER = """
import sys
from pipeline.config.region import load_config
from pipeline.tiles.cover import region_tiles, write_tiles_csv
from pipeline.labels.features import read_features
cfg = load_config(sys.argv[1])
feats = read_features(cfg.data_dir / "features.parquet")
df = region_tiles(cfg, feats.geometry.to_numpy(), feats["buffer_m"].to_numpy(dtype=float))
write_tiles_csv(df, cfg.data_dir / "bench_tiles.csv")
"""


def cpu(*args: str) -> float:
    """CPU seconds (user + system) of one whole process (and its children)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def complete(task: str, config: Path) -> bool:
    code = (f"import tasks.__main__ as m; m.import_for([{task!r}]); from luigi.task_register import Register; "
            f"print(Register.get_task_cls({task!r})(config={str(config)!r}).complete())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    return out.returncode == 0 and out.stdout.strip().endswith("True")


def small_region() -> Path:
    """A 150 m sample town under bench/out/startup, finished up to SplitDataset."""
    data = OUT / "town150"
    text = (ROOT / "configs" / "demo.toml").read_text()
    text = text.replace('data_dir = "data/demo"', f'data_dir = "{data}"')
    text = text.replace('"data/demo/', f'"{data}/').replace("size_m = 700.0", "size_m = 150.0")
    path = OUT / "town150.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    if not complete("SplitDataset", path):
        print(f"generating {path} up to SplitDataset ...", flush=True)
        subprocess.run([sys.executable, "-m", "tasks", "SplitDataset", "--config", str(path)], cwd=ROOT, env=ENV,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--config", action="append", type=Path, help="a finished region (repeatable)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    own = not args.config
    configs = args.config or [small_region()]
    floor = [cpu("-c", "import luigi") for _ in range(args.runs)]
    for config in configs:
        print(f"--- {config}: no-op runs, CPU s (median of {args.runs}; floor `import luigi` "
              f"{statistics.median(floor):.2f} s)", flush=True)
        for task in args.tasks.split(","):
            if not complete(task, config):
                print(f"{task}: skipped (not complete here: its run would do work)", flush=True)
                continue
            ours: list[float] = []
            for _ in range(args.runs):
                ours.append(cpu("-m", "tasks", task, "--config", str(config)))
                floor.append(cpu("-c", "import luigi"))
            med, base = statistics.median(ours), statistics.median(floor)
            print(f"{task}: {med:.2f} s CPU, floor {base:.2f} s, over the floor {med - base:+.2f} s "
                  f"({'ok' if med <= 0.5 else 'OVER'} the 0.5 s target)", flush=True)
    if own:
        config = configs[0]
        manifest = config.parent / "town150" / "_manifests" / "cover.json"
        runs, plain = [], []
        for _ in range(args.runs):
            manifest.unlink(missing_ok=True)  # CoverTiles reruns (tiles.csv comes out the same)
            runs.append(cpu("-m", "tasks", "CoverTiles", "--config", str(config)))
            plain.append(cpu("-c", PLAIN_COVER, str(config)))
        a, b = statistics.median(runs), statistics.median(plain)
        print(f"CoverTiles rerun: {a:.2f} s CPU, plain script {b:.2f} s: overhead {a - b:+.2f} s "
              f"({'ok' if a - b <= 0.5 else 'OVER'} the 0.5 s target)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
