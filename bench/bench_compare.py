"""Benchmark: the comparison with OSM of a finished region, as one block and in blocks, in one
process and side by side (``[compare] block_tiles`` and ``processes``).

    python -m bench.bench_compare [--config bench/out/e2e/town5000.toml] [--settings 0:1,32:1,32:2]

Per setting (``block_tiles:processes``): a copy of the region's config with that ``[compare]``
(the same ``data_dir``), the comparison's manifest deleted, then ``python -m tasks CompareWithOSM``;
its wall and CPU time (the command and every process it forked) and the peak memory of its
largest process (``getrusage`` of a parent of its own), the number of blocks, and whether every
OSM feature got the status of the first setting (statuses do not depend on blocks; candidates
move by fractions of a millimetre between one block and several). The region's own comparison is
redone last with its own config. Default region: the 25 km² town of ``bench_e2e`` when it is
there, else its demo-sized town (run ``bench_e2e`` first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "bench" / "out" / "e2e"
STATUS_FILES = ("matched", "offset", "not_seen", "unknown", "not_seen_lines")


#: runs the task and reports its own subtree's rusage (``RUSAGE_CHILDREN``'s peak is the largest
#: process ever waited for, so each measurement needs a parent of its own)
_WRAPPER = ("import json, resource, subprocess, sys; "
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "r = resource.getrusage(resource.RUSAGE_CHILDREN); "
            "print(json.dumps({'rc': done.returncode, 'tail': (done.stdout + done.stderr).strip().splitlines()[-1:], "
            "'cpu': r.ru_utime + r.ru_stime, 'peak_kib': r.ru_maxrss}))")


def run_compare(config: Path, data: Path) -> dict[str, float]:
    """``CompareWithOSM`` redone for ``config``: wall and CPU seconds (the task and every process
    it forked), its largest process (MiB)."""
    (data / "_manifests" / "compare.json").unlink(missing_ok=True)
    env = {**os.environ, "LUIGI_CONFIG_PARSER": "toml", "LUIGI_CONFIG_PATH": str(ROOT / "configs" / "luigi.toml")}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, sys.executable, "-m", "tasks", "CompareWithOSM",
                           "--config", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    r = json.loads(done.stdout)
    if r["rc"] != 0:
        raise SystemExit(f"CompareWithOSM failed: {r['tail']}")
    return {"wall": wall, "cpu": r["cpu"], "peak_mib": r["peak_kib"] / 1024}


def statuses(folder: Path) -> dict[tuple[str, int], str]:
    """Every OSM feature's status in a comparison folder."""
    out = {}
    for s in STATUS_FILES:
        path = folder / f"{s}.geojson"
        if path.is_file():
            for f in json.loads(path.read_text())["features"]:
                out[(f["properties"]["osm_type"], int(f["properties"]["osm_id"]))] = s
    return out


def main() -> int:
    default = E2E / "town5000.toml" if (E2E / "town5000.toml").is_file() else E2E / "town700.toml"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=default)
    ap.add_argument("--settings", default="0:1,32:1,32:2", help="block_tiles:processes, comma separated")
    args = ap.parse_args()
    if not args.config.is_file():
        print(f"bench_compare: skipped, no finished region at {args.config} (python -m bench.bench_e2e first)")
        return 0
    sys.path.insert(0, str(ROOT))
    from pipeline.config.region import load_config

    config = args.config.resolve()
    data = Path(load_config(config).data_dir).resolve()
    text = config.read_text()
    if "[compare]" in text:
        print("bench_compare: skipped, the config has its own [compare] section")
        return 0
    text = text.replace(f'"{load_config(config).data_dir}"', f'"{data}"')
    print(f"--- comparison of {data}: block_tiles:processes, wall / CPU, largest process")
    first: dict[tuple[str, int], str] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.settings.split(","):
            tiles, procs = (int(v) for v in setting.split(":"))
            path = Path(tmp) / f"compare-{tiles}-{procs}.toml"
            path.write_text(f"{text}\n[compare]\nblock_tiles = {tiles}\nprocesses = {procs}\n")
            r = run_compare(path, data)
            blocks = json.loads((data / "compare" / "summary.json").read_text()).get("blocks", 1)
            got = statuses(data / "compare")
            first = got if first is None else first
            differ = sum(first.get(k) != v for k, v in got.items())
            same = "same statuses" if got == first else f"{differ} statuses differ"
            print(f"{tiles:>4}:{procs:<3} {blocks:>4} blocks  wall {r['wall']:6.1f} s  CPU {r['cpu']:6.1f} s  "
                  f"largest process {r['peak_mib']:5.0f} MiB  {same} ({len(got)} OSM features)", flush=True)
    run_compare(config, data)  # the region's own outputs back
    return 0


if __name__ == "__main__":
    sys.exit(main())
