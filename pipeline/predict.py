"""Batched inference over image tiles, each with a border of context read from its neighbours.

A tile of ``T`` pixels is predicted from a window of ``T + 2b`` pixels: the tile itself and a
border of ``b`` pixels taken from its 8 neighbouring tiles (slippy-map tiles, y counted from the
north). A neighbour without imagery is replaced by the mirror image of what lies on the tile's
side of that edge, so the tile's own pixels are never shifted or stretched. ``b`` is rounded up
to a multiple of the model's output stride (32 for the smp encoders), so the strided layers see
the same pixel phase whether the tile is predicted alone or inside a larger mosaic: with a
receptive field inside the border, a tile's output does not depend on where the tile grid
falls (no seams). Only the ``T x T`` centre of each window is kept.

Probabilities: softmax over the model's outputs (channel 0 background, channel k >= 1 the k-th
class by ascending id); the foreground channels are quantised to uint8 and encoded as prediction
tiles (:mod:`pipeline.probs`). Optional flip test-time augmentation averages the softmax over the
4 flips of the window.

Importable with torch, numpy and Pillow alone (no geospatial stack): tiles are plain
``(z, x, y)`` tuples; the caller gives a mapping from tile to image file.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as nnf

from pipeline.errors import InputDataError, ModelError
from pipeline.model import normalise
from pipeline.probs import encode_probs, quantise

TileKey = tuple[int, int, int]  # (z, x, y)
Progress = Callable[[int, int], None]

#: the 4 flips of flip TTA, as tensor dims to flip (N, C, H, W): none, left-right, up-down, both
FLIPS: tuple[tuple[int, ...], ...] = ((), (3,), (2,), (2, 3))


# ---------------------------------------------------------------------------------------------
# Image tiles


def read_image(path: str | Path) -> np.ndarray:
    """An image tile -> uint8 (bands, height, width), decoded exactly as training decodes it
    (:func:`pipeline.split.read_image`: palette expanded, alpha dropped)."""
    from pipeline.split import read_image as read_hwc

    return np.ascontiguousarray(read_hwc(path).transpose(2, 0, 1))


class TileReader:
    """Decoded image tiles by ``(z, x, y)`` from ``{tile: path}``, with a small LRU cache (a tile
    is read once for itself and up to 8 times as a neighbour)."""

    def __init__(self, paths: Mapping[TileKey, Path], cache_tiles: int = 512) -> None:
        self.paths = paths
        self.cache_tiles = cache_tiles
        self._cache: OrderedDict[TileKey, np.ndarray] = OrderedDict()

    def __contains__(self, key: TileKey) -> bool:
        return key in self.paths

    def get(self, key: TileKey) -> np.ndarray | None:
        """The tile's uint8 (bands, h, w) array, or None when the region has no imagery there."""
        if key not in self.paths:
            return None
        arr = self._cache.get(key)
        if arr is None:
            arr = read_image(self.paths[key])
            self._cache[key] = arr
            if len(self._cache) > self.cache_tiles:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return arr


# ---------------------------------------------------------------------------------------------
# Context windows


def plan_border(tile_size: int, context_px: int, stride: int) -> int:
    """The context border in pixels: ``context_px`` rounded up to a multiple of ``stride``, at
    most ``tile_size`` (a neighbour gives no more). With ``tile_size`` a multiple of ``stride``
    the window ``tile_size + 2 * border`` then is one too."""
    if context_px <= 0:
        return 0
    b = math.ceil(context_px / stride) * stride
    return min(b, tile_size)


def context_window(centre: np.ndarray, neighbours: Mapping[tuple[int, int], np.ndarray | None],
                   border: int, where: str = "image tile") -> np.ndarray:
    """(bands, T + 2b, T + 2b) window: ``centre`` (bands, T, T) in the middle, its border from the
    ``neighbours`` keyed by ``(dx, dy)`` (dx east, dy south), each (bands, T, T) or None;
    ``where`` names the tile in errors.

    A missing edge neighbour is the centre mirrored across that edge (``numpy.pad`` 'symmetric');
    a missing corner is the strip beside it mirrored across the edge whose neighbour is missing
    (so with no neighbour at all the window equals ``numpy.pad(centre, b, 'symmetric')``)."""
    c, t, t2 = centre.shape
    if t != t2:
        raise InputDataError(f"{where}: {t}x{t2} px is not square; rerun ImageryAll")
    b = border
    if b == 0:
        return centre
    if b > t:
        raise ValueError(f"border {b} px is larger than the tile ({t} px)")
    w = t + 2 * b
    win = np.empty((c, w, w), dtype=centre.dtype)
    win[:, b:b + t, b:b + t] = centre
    mid, lo, hi = slice(b, b + t), slice(0, b), slice(b + t, w)

    def nb(dx: int, dy: int) -> np.ndarray | None:
        arr = neighbours.get((dx, dy))
        if arr is not None and arr.shape != centre.shape:
            raise InputDataError(f"{where}: its neighbour ({dx:+d}, {dy:+d}) has shape {arr.shape}, the tile "
                                 f"{centre.shape}; a region's image tiles must share size and bands: rerun ImageryAll")
        return arr

    left, right, top, bottom = nb(-1, 0), nb(1, 0), nb(0, -1), nb(0, 1)
    win[:, mid, lo] = left[:, :, t - b:] if left is not None else centre[:, :, :b][:, :, ::-1]
    win[:, mid, hi] = right[:, :, :b] if right is not None else centre[:, :, t - b:][:, :, ::-1]
    win[:, lo, mid] = top[:, t - b:, :] if top is not None else centre[:, :b, :][:, ::-1, :]
    win[:, hi, mid] = bottom[:, :b, :] if bottom is not None else centre[:, t - b:, :][:, ::-1, :]
    for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        rows, cols = (lo if dy < 0 else hi), (lo if dx < 0 else hi)
        corner = nb(dx, dy)
        if corner is not None:
            win[:, rows, cols] = corner[:, (slice(t - b, t) if dy < 0 else slice(0, b)),
                                        (slice(t - b, t) if dx < 0 else slice(0, b))]
        elif nb(dx, 0) is None or nb(0, dy) is not None:
            # mirror the strip above/below the tile across the vertical edge
            src = win[:, rows, b:2 * b] if dx < 0 else win[:, rows, t:t + b]
            win[:, rows, cols] = src[:, :, ::-1]
        else:
            # the side neighbour exists, the one above/below does not: mirror across the horizontal edge
            src = win[:, b:2 * b, cols] if dy < 0 else win[:, t:t + b, cols]
            win[:, rows, cols] = src[:, ::-1, :]
    return win


def tile_window(reader: TileReader, key: TileKey, border: int) -> np.ndarray:
    """The context window of tile ``key`` from the reader's tiles (neighbours mirrored when missing)."""
    centre = reader.get(key)
    if centre is None:
        raise InputDataError(f"tile {key[0]}/{key[1]}/{key[2]} has no image tile to predict")
    z, x, y = key
    neighbours = {(dx, dy): reader.get((z, x + dx, y + dy)) if border else None
                  for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)}
    return context_window(centre, neighbours, border, where=f"image tile {z}/{x}/{y} ({reader.paths[key]})")


# ---------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class Predictor:
    """A model ready to predict: the network (eval mode, on ``device``), its checkpoint meta and
    where it came from (for messages)."""

    model: torch.nn.Module
    meta: Mapping[str, Any]
    device: torch.device
    source: str = "model"

    @property
    def bands(self) -> int:
        return int(self.meta["spec"]["in_channels"])

    @property
    def classes(self) -> list[dict[str, Any]]:
        return list(self.meta["classes"])

    @property
    def edges(self) -> tuple[int, ...]:
        """Class ids with an edge output (:mod:`pipeline.instances`); () for older checkpoints."""
        return tuple(int(e) for e in self.meta.get("edges") or ())

    @property
    def stride(self) -> int:
        """Output stride of the encoder (input pixels per step of its deepest feature map)."""
        enc = getattr(self.model, "encoder", None)
        return int(getattr(enc, "output_stride", 32) or 32) if enc is not None else 32


def load_predictor(path: str | Path, device: torch.device | str = "cpu") -> Predictor:
    """Load a checkpoint (:func:`pipeline.model.load_checkpoint`) onto ``device``."""
    from pipeline.model import load_checkpoint

    dev = torch.device(device)
    model, meta = load_checkpoint(path, map_location="cpu")
    model.to(dev).eval()
    if dev.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return Predictor(model=model, meta=meta, device=dev, source=str(path))


def check_compatible(pred: Predictor, classes: Sequence[tuple[str, int]], bands: int, where: str) -> None:
    """Raise ModelError unless the model predicts the region's classes (``(name, id)`` pairs)
    from images of ``bands`` bands; ``where`` names the region config in the message."""
    own = sorted((str(c["name"]), int(c["id"])) for c in pred.classes)
    want = sorted((str(n), int(i)) for n, i in classes)
    if sorted(own, key=lambda c: c[1]) != sorted(want, key=lambda c: c[1]):
        raise ModelError(f"{pred.source}: the model was trained for classes {own} but {where} has {want}; "
                         "set [predict] model to a checkpoint made for these classes, or train one "
                         "(python -m tasks TrainModel)")
    if bands != pred.bands:
        raise ModelError(f"{pred.source}: the model takes {pred.bands}-band images but the image tiles of "
                         f"{where} have {bands} bands; use a model trained on such imagery or set "
                         "[imagery] bands to match")


def forward_probs(pred: Predictor, x: torch.Tensor, tta: str = "none") -> torch.Tensor:
    """Softmax probabilities (N, K, H, W) float32 of a normalised batch (N, C, H, W) on the
    predictor's device; with ``tta='flip'`` the mean over the 4 flips (each flipped back)."""
    flips = FLIPS if tta == "flip" else ((),)
    out = torch.zeros((), device=pred.device)
    amp = pred.device.type == "cuda"
    dtype = torch.bfloat16 if amp and torch.cuda.is_bf16_supported() else torch.float16
    with torch.inference_mode(), torch.autocast(pred.device.type, dtype=dtype, enabled=amp):
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            if amp:
                xi = xi.contiguous(memory_format=torch.channels_last)
            logits = pred.model(xi).float()
            p = output_probs(logits, len(pred.edges))
            p = torch.flip(p, dims) if dims else p
            out = out + p
    return out / len(flips)


def output_probs(logits: torch.Tensor, n_edges: int) -> torch.Tensor:
    """Logits (N, K, H, W) -> probabilities: softmax over background and the classes, and a
    sigmoid per edge channel (the last ``n_edges``; :mod:`pipeline.instances`)."""
    if n_edges == 0:
        return torch.softmax(logits, dim=1)
    k = logits.shape[1] - n_edges
    return torch.cat([torch.softmax(logits[:, :k], dim=1), torch.sigmoid(logits[:, k:])], dim=1)


def _scale_of(pred: Predictor, tile_size: int) -> float:
    """Input resampling factor: the checkpoint's ``scale`` (``[train] scale``, e.g. 0.5 for
    half-resolution training), or for checkpoints without one its ``tile_size`` (model input
    side) over the image tile side."""
    if pred.meta.get("scale"):
        return float(pred.meta["scale"])
    model_side = int(pred.meta.get("tile_size") or tile_size)
    return model_side / tile_size


def model_input(pred: Predictor, windows: np.ndarray, tile_size: int) -> torch.Tensor:
    """uint8 windows (N, C, W, W) around tiles of ``tile_size`` px -> the model's float32 input on
    its device: normalised with the checkpoint's band statistics and resampled to the model's
    scale (``meta['scale']``; older checkpoints: ``meta['tile_size']`` per ``tile_size``) when
    that is not 1."""
    n, c, w, _ = windows.shape
    x = torch.from_numpy(np.ascontiguousarray(windows))
    if pred.device.type == "cuda":
        x = x.pin_memory()
    x = x.to(pred.device, non_blocking=True)
    # normalise() takes one (C, H, W) image: stack the batch along the rows
    x = normalise(x.permute(1, 0, 2, 3).reshape(c, n * w, w), pred.meta["band_stats"])
    x = x.reshape(c, n, w, w).permute(1, 0, 2, 3).contiguous()
    scale = _scale_of(pred, tile_size)
    if scale != 1.0:
        side = max(1, round(w * scale))
        x = nnf.interpolate(x, size=(side, side), mode="area" if scale < 1 else "bilinear",
                            align_corners=None if scale < 1 else False)
    return x


def border_for(pred: Predictor, tile_size: int, context_px: int) -> int:
    """The context border (image pixels) for tiles of ``tile_size`` px: ``context_px`` rounded up
    to the model's stride counted in image pixels (stride / scale), at most one tile."""
    stride = max(1, math.ceil(pred.stride / _scale_of(pred, tile_size)))
    return plan_border(tile_size, context_px, stride)


def predict_windows(pred: Predictor, windows: np.ndarray, border: int, tta: str = "none") -> np.ndarray:
    """uint8 windows (N, C, T + 2b, T + 2b) -> float32 foreground probabilities (N, K - 1, T, T)
    of their centres (see :func:`model_input`; probabilities are resampled back to the image
    scale before the centre is cut). With edge outputs, the edge bands follow the classes."""
    w = windows.shape[-1]
    t = w - 2 * border
    p = forward_probs(pred, model_input(pred, windows, t), tta)
    if p.shape[-1] != w:
        p = nnf.interpolate(p, size=(w, w), mode="bilinear", align_corners=False)
    return p[:, 1:, border:border + t, border:border + t].float().cpu().numpy()


def predict_tiles(pred: Predictor, reader: TileReader, keys: Sequence[TileKey], *, context_px: int = 64,
                  batch_size: int = 8, tta: str = "none",
                  progress: Progress | None = None) -> Iterator[tuple[TileKey, np.ndarray]]:
    """Predict every tile of ``keys`` (in the order given): yields ``(tile, uint8 (K - 1, T, T))``
    quantised foreground probabilities. Windows of the next batch are read in a background thread
    while the model runs on the current one."""
    if not keys:
        return
    first = reader.get(keys[0])
    if first is None:
        raise InputDataError(f"tile {'/'.join(map(str, keys[0]))} has no image tile to predict")
    t = first.shape[1]
    border = border_for(pred, t, context_px)
    batches = [list(keys[i:i + batch_size]) for i in range(0, len(keys), batch_size)]

    def load(batch: list[TileKey]) -> np.ndarray:
        return np.stack([tile_window(reader, k, border) for k in batch])

    done = 0
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(load, batches[0])
        for i, batch in enumerate(batches):
            windows = future.result()
            if i + 1 < len(batches):
                future = pool.submit(load, batches[i + 1])
            probs = predict_windows(pred, windows, border, tta)
            for k, p in zip(batch, probs):
                yield k, quantise(p)
            done += len(batch)
            if progress is not None:
                progress(done, len(keys))


def prediction_pngs(results: Iterator[tuple[TileKey, np.ndarray]], level: int = 1,
                    threads: int = 4, edges: Sequence[int] = ()) -> Iterator[tuple[TileKey, bytes]]:
    """``(tile, uint8 probabilities)`` -> ``(tile, prediction PNG bytes)`` (:func:`pipeline.probs.encode_probs`),
    in order, encoded by ``threads`` threads (zlib releases the GIL) with at most ``4 * threads`` tiles in flight."""
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
