"""Prediction benchmarks (``make bench``): tiles/s and peak memory of ``pipeline.inference.predict``.

* CPU, 256-px tiles from a generated 6 x 6 mosaic (read from PNG, context windows from the
  neighbours, normalised, model, softmax, quantised, PNG-encoded), the default model (U-Net /
  ResNet-34, random weights: speed does not depend on them), 64-px context, batch 8, with and
  without flip TTA; torch on 1 thread and on all cores.
* CUDA when present: the default model on 512-px tiles with AMP (bf16/fp16): tiles/s and GPU memory.
* ``--region configs/demo.toml``: a trained region (its ``model/best.pt`` and image tiles, read
  only): tiles/s over its tiles, the test-split scores of predictions made in a temporary folder,
  and how much a tile's output changes with its context border (0, 32, 64 px) against the
  largest border (a whole neighbour tile): the seam measure on a trained model.
  (context 0/32/64/128 px, rounded up to the model's stride in image pixels)

Run: ``python -m bench.bench_predict [--quick] [--region CONFIG]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import report, run_phase


def make_tiles(folder: Path, n: int, size: int, seed: int = 0) -> dict[tuple[int, int, int], Path]:
    """An n x n mosaic of photo-like RGB tiles (size px) written as PNG z18 tiles."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    side = n * size
    coarse = rng.uniform(0, 255, (side // 16 + 1, side // 16 + 1, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((side, side), Image.Resampling.BILINEAR))
    img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
    paths = {}
    for j in range(n):
        for i in range(n):
            p = folder / f"18/{1000 + i}/{2000 + j}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[j * size:(j + 1) * size, i * size:(i + 1) * size]).save(p)
            paths[(18, 1000 + i, 2000 + j)] = p
    return paths


def _predict(paths: dict[tuple[int, int, int], Path], device: str, threads: int, tta: str, batch: int,
             engine: str = "torch", block: int = 1, context_px: int = 64) -> dict[str, Any]:
    import torch

    from pipeline.inference.predict import make_engine, predict_tiles, prediction_pngs
    from pipeline.inference.windows import TileReader
    from pipeline.model.network import ModelSpec, build_model, make_meta, save_checkpoint

    torch.set_num_threads(threads)
    dev = torch.device(device)
    spec = ModelSpec()  # the default: U-Net / ResNet-34
    meta = make_meta(spec, [{"name": "building", "id": 1}], {"mean": [0.5] * 3, "std": [0.25] * 3}, 256, "bench")
    tmp = Path(tempfile.mkdtemp())
    save_checkpoint(tmp / "bench.pt", build_model(spec), meta)
    pred = make_engine(tmp / "bench.pt", device, engine, tile_size=256, cache_dir=tmp, threads=threads)
    keys = sorted(paths)
    warm = list(predict_tiles(pred, TileReader(paths), keys[:batch], context_px=context_px, block=block,
                              batch_size=batch, tta=tta))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    n = sum(1 for _ in prediction_pngs(predict_tiles(pred, TileReader(paths), keys, context_px=context_px,
                                                     block=block, batch_size=batch, tta=tta)))
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else 0.0
    return {"tiles": n, "seconds": dt, "tiles_per_s": n / dt, "gpu_mb": gpu_mb, "warm": len(warm)}


def bench_cpu(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_tiles(Path(tmp), 4 if quick else 6, 256)
        cores = os.cpu_count() or 1
        runs = [("torch", 1, 0, "none", 1), ("torch", 1, 64, "none", 1), ("onnx", 4, 64, "none", 1),
                ("torch", 1, 0, "none", cores), ("torch", 1, 64, "none", cores), ("torch", 4, 64, "none", cores),
                ("onnx", 4, 64, "none", cores), ("onnx", 4, 64, "flip", cores)]
        for engine, block, ctx, tta, threads in runs[:3] if quick else runs:
            res, _, peak = run_phase(_predict, paths, "cpu", threads, tta, 8, engine, block, ctx)
            report(f"predict CPU 256 px, U-Net/ResNet-34, {engine}, block {block}, context {ctx}, tta={tta}",
                   res["tiles_per_s"], "tiles/s", threads=threads, tiles=res["tiles"], peak_mb=round(peak))


def bench_gpu(quick: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        print("predict CUDA: no GPU here, skipped", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_tiles(Path(tmp), 6 if quick else 12, 512)
        for tta, batch in (("none", 16), ("flip", 16)):
            res, _, peak = run_phase(_predict, paths, "cuda", os.cpu_count() or 1, tta, batch, "torch", 4)
            report(f"predict CUDA 512 px, U-Net/ResNet-34, AMP, context 64, tta={tta}", res["tiles_per_s"], "tiles/s",
                   batch=batch, tiles=res["tiles"], gpu_mb=round(res["gpu_mb"]), peak_mb=round(peak),
                   gpu=torch.cuda.get_device_name(0))


def _region(config: str, threads: int) -> dict[str, Any]:
    """Predict a trained region's tiles into a temporary folder; scores on its test split; seams."""
    import torch

    from pipeline.config.region import load_config
    from pipeline.inference.evaluate import evaluate_tiles
    from pipeline.inference.predict import border_for, make_engine, predict_tiles
    from pipeline.inference.predict_torch import load_predictor, predict_windows
    from pipeline.inference.probs import encode_probs
    from pipeline.inference.windows import TileReader, image_paths, tile_window
    from pipeline.model.regions import model_path
    from pipeline.model.split import read_split_csv

    torch.set_num_threads(threads)
    cfg = load_config(config)
    spec = cfg.predict
    pred = load_predictor(model_path(cfg), "cpu")
    images = image_paths(cfg.data_dir)
    rows = read_split_csv(cfg.data_dir / "split.csv")
    test = [(r.z, r.x, r.y) for r in rows if r.split == "test"]
    reader = TileReader(images)
    out: dict[str, Any] = {"tiles": len(test)}
    t = reader.get(test[0]).shape[-1]  # type: ignore[union-attr]
    classes = sorted(((c.name, c.id) for c in cfg.classes), key=lambda c: c[1])
    out["scores"] = {}
    for engine_name, block in (("torch", 1), (spec.engine, spec.block)):
        engine = make_engine(model_path(cfg), "cpu", engine_name, tile_size=t,
                             cache_dir=cfg.data_dir / "_cache" / "predict")
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            pairs = []
            for key, q in predict_tiles(engine, reader, test, context_px=spec.context_px, block=block,
                                        batch_size=spec.batch_size, tta=spec.tta):
                p = Path(tmp) / f"{key[0]}-{key[1]}-{key[2]}.png"
                p.write_bytes(encode_probs(q))
                pairs.append((p, cfg.data_dir / "masks" / f"{key[0]}/{key[1]}/{key[2]}.png"))
            name = f"{engine_name}, block {block}"
            out.setdefault("tiles_per_s", {})[name] = len(test) / (time.perf_counter() - t0)
            out["scores"][name] = evaluate_tiles(pairs, classes)
    # seams: a tile's probabilities with borders for 0/32/64/128 px against a whole-tile border
    inner = [k for k in test if all((k[0], k[1] + dx, k[2] + dy) in images for dx in (-1, 0, 1) for dy in (-1, 0, 1))]
    seams = {}
    full = border_for(pred.info, t, t)
    for b in sorted({border_for(pred.info, t, ctx) for ctx in (0, 32, 64, 128)}):
        diffs = []
        for k in inner[:12]:
            ref = predict_windows(pred, tile_window(reader, k, full)[None], full)[0]
            got = predict_windows(pred, tile_window(reader, k, b)[None], b)[0]
            diffs.append(np.abs(got - ref))
        d = np.stack(diffs) if diffs else np.zeros(1)
        seams[f"border {b} px"] = {"mean": float(d.mean()), "p99": float(np.quantile(d, 0.99)), "max": float(d.max())}
    out["seams"] = seams
    out["inner_tiles"] = min(12, len(inner))
    return out


def bench_region(config: str) -> None:
    res, _, peak = run_phase(_region, config, os.cpu_count() or 1)
    for name, s in res["scores"].items():
        report(f"predict {config} test split, {name}", res["tiles_per_s"][name], "tiles/s", tiles=res["tiles"],
               peak_mb=round(peak))
        print("  test scores:", {k: {c: round(v, 4) for c, v in s[k].items() if v is not None}
                                  for k in ("iou", "precision", "recall", "f1")}, flush=True)
    print(f"  seams ({res['inner_tiles']} tiles, |p - p(whole-tile border)|):",
          {k: {m: round(v, 4) for m, v in d.items()} for k, d in res["seams"].items()}, flush=True)


def picture(config: str, out: str) -> None:
    """A picture of a predicted region: the imagery mosaic with the predicted class probabilities
    (from ``<data_dir>/predictions``, read through its tile index) blended in the class colours."""
    from PIL import Image

    from pipeline.config.region import load_config
    from pipeline.inference.probs import decode_probs
    from pipeline.inference.windows import image_paths, image_paths_of, read_image

    cfg = load_config(config)
    images = image_paths(cfg.data_dir)
    preds = image_paths_of(cfg.data_dir / "predictions")
    classes = sorted(cfg.classes, key=lambda c: c.id)
    keys = sorted(set(images) & set(preds))
    xs, ys = [k[1] for k in keys], [k[2] for k in keys]
    t = cfg.tile_size
    canvas = np.zeros(((max(ys) - min(ys) + 1) * t, (max(xs) - min(xs) + 1) * t, 3), np.float32)
    for z, x, y in keys:
        img = read_image(images[(z, x, y)])[:3].transpose(1, 2, 0).astype(np.float32)
        probs = decode_probs((cfg.data_dir / "predictions" / preds[(z, x, y)]).read_bytes(), len(classes)) / 255.0
        for c, p in zip(classes, probs):
            colour = np.array([int(c.color[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
            img = img * (1 - 0.6 * p[..., None]) + colour * 0.6 * p[..., None]
        r, c0 = (y - min(ys)) * t, (x - min(xs)) * t
        canvas[r:r + t, c0:c0 + t] = img
    im = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    im.thumbnail((1600, 1600))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    im.save(out, optimize=True, quality=85)
    print(f"picture: {out} ({im.size[0]}x{im.size[1]} px, {len(keys)} tiles)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer tiles")
    ap.add_argument("--region", help="a trained region config (reads its model/best.pt and tiles)")
    ap.add_argument("--gpu-only", action="store_true", help="only the CUDA benchmark")
    ap.add_argument("--picture", help="with --region: write a picture of its predictions folder to this PNG")
    args = ap.parse_args()
    if args.region and args.picture:
        picture(args.region, args.picture)
        return
    if args.region:
        bench_region(args.region)
        return
    if not args.gpu_only:
        bench_cpu(args.quick)
    bench_gpu(args.quick)


if __name__ == "__main__":
    main()
