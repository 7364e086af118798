"""Batched inference over image tiles, each with a border of context read from its neighbours,
several tiles at a time as one mosaic window (:mod:`pipeline.inference.windows`).

An :class:`Engine` turns pixel windows (N, C, H, W) into foreground probabilities (N, K - 1, H, W)
at the image's scale: :class:`pipeline.inference.predict_onnx.OnnxEngine` (ONNX Runtime; the default on
CPU: measured 1.4-2.2x faster than PyTorch eager on the demo's U-Net, see ``bench/bench_predict.py``)
or :class:`pipeline.inference.predict_torch.Predictor` (PyTorch; on CUDA with AMP). :func:`open_engine`
picks one. Probabilities: softmax over background and the classes by ascending id, a sigmoid
per edge channel; quantised to uint8 and encoded as prediction tiles (:mod:`pipeline.inference.probs`).
Optional flip test-time augmentation averages over the 4 flips of each window.

Torch-free: with an ONNX engine a prediction process imports onnxruntime, numpy and Pillow only
(torch and segmentation-models-pytorch load when the graph is first exported for a checkpoint).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config.predict import ENGINES
from pipeline.core.errors import InputDataError, ModelError
from pipeline.imagery.nodata import nodata_pixels
from pipeline.inference.predict_engine import Engine, ModelInfo, checkpoint_key, engine_probs, model_scale
from pipeline.inference.probs import encode_probs, quantise
from pipeline.inference.windows import (
    TileKey,
    TileReader,
    block_tiles,
    block_window,
    plan_blocks,
    plan_border,
    tile_window,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
#: largest probability difference accepted between the ONNX graph and PyTorch
ONNX_TOLERANCE = 1e-3
#: version of the exported prediction graph's interface (part of its cache name)
GRAPH_VERSION = 2
#: cached prediction graphs kept per region (a model, its cross-fit twin, and a few earlier ones)
KEEP_GRAPHS = 4


def check_compatible(info: ModelInfo, classes: Sequence[tuple[str, int]], bands: int, where: str) -> None:
    """Raise ModelError unless the model predicts the region's classes (``(name, id)`` pairs)
    from images of ``bands`` bands; ``where`` names the region config in the message."""
    own = sorted((str(c["name"]), int(c["id"])) for c in info.classes)
    want = sorted((str(n), int(i)) for n, i in classes)
    if sorted(own, key=lambda c: c[1]) != sorted(want, key=lambda c: c[1]):
        raise ModelError(f"{info.source}: the model was trained for classes {own} but {where} has {want}; "
                         "set [predict] model to a checkpoint made for these classes, or train one "
                         "(python -m tasks TrainModel)")
    if bands != info.bands:
        raise ModelError(f"{info.source}: the model takes {info.bands}-band images but the image tiles of "
                         f"{where} have {bands} bands; use a model trained on such imagery or set "
                         "[imagery] bands to match")


def border_for(info: ModelInfo, tile_size: int, context_px: int) -> int:
    """The context border (image pixels) for tiles of ``tile_size`` px: ``context_px`` rounded up
    to the model's stride counted in image pixels (stride / scale), at most one tile."""
    stride = max(1, math.ceil(info.stride / model_scale(info.meta, tile_size)))
    return plan_border(tile_size, context_px, stride)


def band_fill(info: ModelInfo) -> np.ndarray:
    """Per band, the pixel value of the band mean (what normalises to 0; band statistics are in
    units of pixel / ``max``, 255 for 8-bit): the fill of a block's tiles without imagery."""
    stats = info.meta["band_stats"]
    vmax = float(stats.get("max", 255))
    return np.clip(np.round(np.asarray(stats["mean"], dtype=np.float64) * vmax), 0, vmax)


@dataclass(frozen=True)
class _Unit:
    """One forward pass: its tiles, how to read its windows and how to cut the output."""

    keys: tuple[TileKey, ...]
    load: Callable[[], np.ndarray]
    cut: Callable[[np.ndarray], list[tuple[TileKey, np.ndarray]]]


def _units(reader: TileReader, keys: Sequence[TileKey], t: int, border: int, fill: np.ndarray,
           block: int, batch_size: int) -> list[_Unit]:
    """Blocks of up to ``block x block`` tiles, one window each; or with ``block`` 1, batches of
    ``batch_size`` tiles, one window per tile."""
    if block > 1:
        return [_Unit(blk.keys, lambda blk=blk: block_window(reader, blk, t, border, fill)[None],  # type: ignore[misc]
                      lambda p, blk=blk: block_tiles(blk, p[0], t, border))  # type: ignore[misc]
                for blk in plan_blocks(keys, block)]

    def cut(batch: tuple[TileKey, ...]) -> Callable[[np.ndarray], list[tuple[TileKey, np.ndarray]]]:
        return lambda p: [(k, q[:, border:border + t, border:border + t]) for k, q in zip(batch, p)]

    batches = [tuple(keys[i:i + batch_size]) for i in range(0, len(keys), batch_size)]
    return [_Unit(b, lambda b=b: np.stack([tile_window(reader, k, border) for k in b]), cut(b))  # type: ignore[misc]
            for b in batches]


def _off_nodata(p: np.ndarray, img: np.ndarray | None) -> np.ndarray:
    """Probabilities ``p`` (K - 1, T, T) set to 0 on the tile's nodata pixels (``img``: its
    (bands, T, T) image; :func:`pipeline.imagery.nodata.nodata_pixels`): nothing is predicted off
    the imagery."""
    nodata = nodata_pixels(img, channel_axis=0) if img is not None else None
    if nodata is None or nodata.shape != p.shape[1:]:
        return p
    p = p.copy()
    p[:, nodata] = 0
    return p


def predict_tiles(engine: Engine, reader: TileReader, keys: Sequence[TileKey], *, context_px: int = 64,
                  block: int = 4, batch_size: int = 8, tta: str = "none",
                  progress: Progress | None = None) -> Iterator[tuple[TileKey, np.ndarray]]:
    """Predict every tile of ``keys``: yields ``(tile, uint8 (K - 1, T, T))`` quantised foreground
    probabilities, block by block (:func:`pipeline.inference.windows.plan_blocks`; ``block`` tiles a side,
    1: tile by tile in batches of ``batch_size``). The next window is read in a background thread
    while the engine runs on the current one."""
    if not keys:
        return
    first = reader.get(keys[0])
    if first is None:
        raise InputDataError(f"tile {'/'.join(map(str, keys[0]))} has no image tile to predict")
    t = first.shape[1]
    border = border_for(engine.info, t, context_px)
    units = _units(reader, keys, t, border, band_fill(engine.info), block, batch_size)
    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(units[0].load)
        for i, unit in enumerate(units):
            windows = future.result()
            if i + 1 < len(units):
                future = pool.submit(units[i + 1].load)
            for key, p in unit.cut(engine_probs(engine, windows, t, tta)):
                yield key, quantise(_off_nodata(p, reader.get(key)))
            done += len(unit.keys)
            if progress is not None:
                progress(done, len(keys))


def prediction_pngs(results: Iterator[tuple[TileKey, np.ndarray]], level: int = 1,
                    threads: int = 4, edges: Sequence[int] = ()) -> Iterator[tuple[TileKey, bytes]]:
    """``(tile, uint8 probabilities)`` -> ``(tile, prediction PNG bytes)``
    (:func:`~pipeline.inference.probs.encode_probs`) in order, encoded by ``threads`` threads (zlib
    releases the GIL) with at most ``4 * threads`` tiles in flight."""
    pending: deque[tuple[TileKey, Future[bytes]]] = deque()
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for key, q in results:
            pending.append((key, pool.submit(encode_probs, q, level, edges)))
            while len(pending) > 4 * threads:
                k, fut = pending.popleft()
                yield k, fut.result()
        while pending:
            k, fut = pending.popleft()
            yield k, fut.result()


# ---------------------------------------------------------------------------------------------
# Choosing and opening an engine


_OPEN: dict[tuple[Any, ...], Engine] = {}


def open_engine(checkpoint: Path, device: str = "auto", engine: str = "auto", *, tile_size: int,
                cache_dir: Path | None = None) -> Engine:
    """:func:`make_engine`, kept for the life of the process (a worker that predicts several
    shards loads the model once), keyed by the checkpoint file's identity (path, size, mtime)."""
    try:
        st = Path(checkpoint).stat()
    except OSError:  # make_engine says what is wrong with it
        return make_engine(checkpoint, device, engine, tile_size=tile_size, cache_dir=cache_dir)
    key = (str(Path(checkpoint).resolve()), st.st_size, st.st_mtime_ns, device, engine, tile_size, str(cache_dir))
    if key not in _OPEN:
        _OPEN.clear()  # one model at a time
        _OPEN[key] = make_engine(checkpoint, device, engine, tile_size=tile_size, cache_dir=cache_dir)
    return _OPEN[key]


def make_engine(checkpoint: Path, device: str = "auto", engine: str = "auto", *, tile_size: int,
                cache_dir: Path | None = None, threads: int = 0) -> Engine:
    """The engine that predicts with ``checkpoint`` on ``device`` (``auto``, ``cpu``, ``cuda``,
    ``cuda:1``) for image tiles of ``tile_size`` px. ``engine`` ``auto``: ONNX Runtime on CPU when
    the model's graph exports faithfully (cached in ``cache_dir`` as ``<sha256[:16]>-<tile_size>-g<version>.onnx``
    with its meta beside it), else PyTorch; ``onnx`` insists on ONNX Runtime (CPU), ``torch`` on
    PyTorch. ``threads``: ONNX Runtime's threads (0: one per physical core). Errors name the
    checkpoint."""
    from pipeline.model.device import cuda_may_exist, pick_device

    if engine not in ENGINES:
        raise ModelError(f"prediction engine {engine!r}: use one of {', '.join(ENGINES)}")
    on_cpu = device == "cpu" or (device == "auto" and (not cuda_may_exist() or pick_device().type == "cpu"))
    if engine == "torch" or (engine == "auto" and not on_cpu) or cache_dir is None or not Path(checkpoint).is_file():
        return _torch_engine(checkpoint, device)
    if engine == "onnx" and not on_cpu:
        raise ModelError(f"[predict] engine = 'onnx' runs on the CPU, but device {device!r} was asked for; "
                         "use engine = 'torch' for CUDA or device = 'cpu'")
    from pipeline.inference.predict_onnx import OnnxEngine, load_graph_meta

    stem = cache_dir / f"{checkpoint_key(Path(checkpoint))}-{tile_size}-g{GRAPH_VERSION}"
    onnx_path, meta_path = stem.with_suffix(".onnx"), stem.with_suffix(".json")
    cached = load_graph_meta(meta_path, onnx_path)
    if cached is None:
        cached = _export_graph(checkpoint, tile_size, onnx_path, meta_path, insist=engine == "onnx")
        if cached is None:
            return _torch_engine(checkpoint, "cpu")
        prune_graphs(cache_dir)
    else:
        os.utime(onnx_path)  # recently used: kept by prune_graphs
    return OnnxEngine(onnx_path, cached, threads)


def prune_graphs(cache_dir: Path, keep: int = KEEP_GRAPHS) -> list[Path]:
    """Delete all but the ``keep`` most recently used graphs of ``cache_dir`` (and their meta);
    returns the deleted graphs. Graphs of checkpoints no longer used go this way."""
    graphs = sorted(cache_dir.glob("*.onnx"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    for old in graphs[keep:]:
        old.unlink(missing_ok=True)
        old.with_suffix(".json").unlink(missing_ok=True)
    return graphs[keep:]


def _torch_engine(checkpoint: Path, device: str) -> Engine:
    from pipeline.inference.predict_torch import load_predictor
    from pipeline.model.device import pick_device

    return load_predictor(checkpoint, pick_device(device))


def _export_graph(checkpoint: Path, tile_size: int, onnx_path: Path, meta_path: Path,
                  insist: bool) -> ModelInfo | None:
    """Export the checkpoint's prediction graph and write its meta; None (PyTorch then predicts)
    when the model's scale has no integer factor or the graph differs from PyTorch."""
    from pipeline.core.atomic import atomic_path
    from pipeline.inference.predict_torch import export_predict_graph, graph_factor, load_predictor

    pred = load_predictor(checkpoint, "cpu")
    factor = graph_factor(pred, tile_size)
    why = None
    if factor is None:
        why = f"its scale {model_scale(pred.meta, tile_size)} is not 1/k for an integer k"
    else:
        onnx_path.parent.mkdir(parents=True, exist_ok=True)
        side = 2 * pred.stride * factor
        diff = export_predict_graph(pred, tile_size, factor, onnx_path, side)
        if diff > ONNX_TOLERANCE:
            why = f"its ONNX graph's probabilities differ from PyTorch's by {diff:.1e}"
            onnx_path.unlink(missing_ok=True)
    if why is not None:
        if insist:
            raise ModelError(f"{checkpoint}: [predict] engine = 'onnx' cannot run this model ({why}); "
                             "set engine = 'auto' or 'torch'")
        log.info("predict with PyTorch: %s: %s", checkpoint, why)
        return None
    info = pred.info
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps({"source": str(checkpoint), "stride": info.stride,
                                   "onnx_sha256": checkpoint_key(onnx_path), "meta": _json_meta(info.meta)}, indent=1))
    return ModelInfo(meta=_json_meta(info.meta), source=str(checkpoint), stride=info.stride)


def _json_meta(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a checkpoint's meta prediction reads, as plain JSON values."""
    keys = ("spec", "classes", "edges", "band_stats", "scale", "tile_size")
    return json.loads(json.dumps({k: meta.get(k) for k in keys}, default=_plain))


def _plain(value: Any) -> Any:
    """JSON for dataclasses and paths inside a checkpoint's meta."""
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)
