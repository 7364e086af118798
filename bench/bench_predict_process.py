"""Whole-process prediction against a plain script (issue 20's comparison; ``make bench``).

On a trained region (default ``configs/demo.toml``, read only): the project's
``python -m tasks PredictAll --workers 2`` on a hard-linked copy of the region's data folder with
its predictions removed, side by side with a plain script a competent user would write with the
same libraries (:func:`plain_predict`: the smp model from the checkpoint, Pillow reads,
normalise, the model's scale, batches of 8 tiles, softmax, one PNG per tile, no neighbour
context). Same inputs, outputs on disk, alternating pairs, medians of wall time and of the CPU
time of the processes; ratio < 1 means the project is faster. The project's first run also
exports the model's ONNX prediction graph (once per checkpoint): reported on its own line.

Run: ``python -m bench.bench_predict_process [--config configs/demo.toml] [--pairs 3]``.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report

ROOT = Path(__file__).resolve().parents[1]


def plain_predict(images: Path, checkpoint: Path, out: Path) -> int:
    """The plain loop: every ``z/x/y.png`` under ``images`` -> ``out/z/x/y.png`` (foreground
    probabilities x 255 stacked vertically); returns the tile count."""
    import numpy as np
    import segmentation_models_pytorch as smp
    import torch
    from PIL import Image

    blob = torch.load(checkpoint, map_location="cpu", weights_only=False)
    meta = blob["meta"]
    spec = meta["spec"]
    model = smp.create_model(spec["arch"], encoder_name=spec["encoder"], encoder_weights=None,
                             in_channels=spec["in_channels"], classes=spec["classes"])
    model.load_state_dict(blob["model"])
    model.eval()
    mean = torch.tensor(meta["band_stats"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["band_stats"]["std"]).view(1, -1, 1, 1)
    scale = float(meta.get("scale") or 1.0)
    paths = sorted(images.glob("*/*/*.png"))
    for i in range(0, len(paths), 8):
        batch = paths[i:i + 8]
        x = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in batch])).permute(0, 3, 1, 2)
        x = (x.float() / 255 - mean) / std
        side = x.shape[-1]
        with torch.inference_mode():
            if scale != 1.0:
                x = torch.nn.functional.interpolate(x, scale_factor=scale, mode="area")
            p = model(x).softmax(1)
            if scale != 1.0:
                p = torch.nn.functional.interpolate(p, size=(side, side), mode="bilinear", align_corners=False)
        q = (p[:, 1:] * 255).round().byte().numpy()
        for path, probs in zip(batch, q):
            dest = out / path.relative_to(images)
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(probs.reshape(-1, probs.shape[-1])).save(dest, compress_level=1)
    return len(paths)


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and the CPU seconds (user + system) of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed: {done.stderr.strip().splitlines()[-1:]}")
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def region_copy(config: Path, tmp: Path) -> tuple[Path, Path]:
    """A hard-linked copy of the region's data folder (the task replaces files, never writes into
    them) and a config pointing at it that names the trained checkpoint as ``[predict] model``;
    returns (config, data folder)."""
    text = config.read_text()
    data_dir = Path(re.search(r'(?m)^data_dir\s*=\s*"([^"]+)"', text).group(1))  # type: ignore[union-attr]
    data = tmp / "data"
    subprocess.run(["cp", "-al", str(ROOT / data_dir), str(data)], check=True)
    text = text.replace(f'"{data_dir}', f'"{data}')
    # the checkpoint as a given model: prediction does not wait on (or retrain) the region's model
    os.link(data / "model" / "best.pt", tmp / "given.pt")
    model = f'model = "{tmp}/given.pt"\n'
    text = text.replace("[predict]\n", "[predict]\n" + model) if "[predict]\n" in text else \
        text + "\n[predict]\n" + model
    cfg = tmp / config.name
    cfg.write_text(text)
    return cfg, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.toml")
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GDAL_NUM_THREADS")}
    with tempfile.TemporaryDirectory(dir=ROOT / "data") as tmpdir:
        tmp = Path(tmpdir)
        cfg, data = region_copy(args.config, tmp)
        ours = [sys.executable, "-m", "tasks", "PredictAll", "--config", str(cfg), "--workers", "2"]
        plain = [sys.executable, "-c", "import sys; from bench.bench_predict_process import plain_predict; "
                 "plain_predict(*map(__import__('pathlib').Path, sys.argv[1:]))", str(data / "images"),
                 str(tmp / "given.pt"), str(tmp / "plain")]
        shutil.rmtree(data / "predictions", ignore_errors=True)
        shutil.rmtree(data / "_cache", ignore_errors=True)
        first = _timed(ours, env)
        report("predict, project, first run (exports the ONNX graph)", first[0], "s", cpu_s=round(first[1], 1))
        runs: dict[str, list[tuple[float, float]]] = {"project": [], "plain": []}
        for _ in range(args.pairs):
            shutil.rmtree(data / "predictions", ignore_errors=True)
            runs["project"].append(_timed(ours, env))
            shutil.rmtree(tmp / "plain", ignore_errors=True)
            runs["plain"].append(_timed(plain, env))
        tiles = len(list((data / "predictions").glob("*/*/*.png")))
        med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in runs.items()}
        for k, (w, c) in med.items():
            report(f"predict {tiles} tiles, {k}", w, "s", cpu_s=round(c, 1), tiles_per_s=round(tiles / w, 1))
        report("predict, project / plain (wall)", med["project"][0] / med["plain"][0], "x",
               cpu_ratio=round(med["project"][1] / med["plain"][1], 2))


if __name__ == "__main__":
    main()
