"""Prediction tiles: per-class probabilities quantised to uint8 and stored as one PNG per tile.

A prediction tile holds one band per foreground class of the region, in ascending class id
(``RegionConfig.classes`` sorted by ``id``); band value ``v`` means probability ``v / 255``.
The bands are stacked vertically in one 8-bit greyscale PNG of ``C * size`` rows by ``size``
columns (C classes), so any number of classes fits one ordinary PNG that image viewers open;
background is implied (1 - the sum of the bands). A model with edge outputs
(:mod:`pipeline.vectors.instances`) adds one band per edge after the classes; the PNG then names their
classes in a text chunk (``osmsat-edges``: class ids, comma-separated, in band order), so a tile
says what its bands are. Pure functions; Pillow and numpy only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, PngImagePlugin

from pipeline.core.errors import InputDataError

EDGES_KEY = "osmsat-edges"


def quantise(probs: np.ndarray) -> np.ndarray:
    """Float probabilities in [0, 1], shape (C, H, W) -> uint8 (C, H, W), round(p * 255)."""
    if probs.ndim != 3:
        raise ValueError(f"probabilities must be (classes, height, width), got shape {probs.shape}")
    return np.clip(np.rint(np.asarray(probs, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def encode_probs(q: np.ndarray, level: int = 1, edges: Sequence[int] = ()) -> bytes:
    """uint8 (C, H, W) probabilities -> PNG bytes (greyscale, bands stacked top to bottom); the
    last ``len(edges)`` bands are the edge bands of the classes ``edges``."""
    if q.dtype != np.uint8 or q.ndim != 3:
        raise ValueError(f"need uint8 (classes, height, width), got {q.dtype} {q.shape}")
    c, h, w = q.shape
    info = None
    if edges:
        info = PngImagePlugin.PngInfo()
        info.add_text(EDGES_KEY, ",".join(str(int(e)) for e in edges))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(q.reshape(c * h, w)), mode="L").save(buf, "PNG", compress_level=level,
                                                                            pnginfo=info)
    return buf.getvalue()


def decode_prob_tile(data: bytes, n_classes: int, where: str = "prediction tile") -> tuple[np.ndarray, tuple[int, ...]]:
    """PNG bytes of a prediction tile -> (uint8 (C + E, H, W) bands, the E edge bands' class ids);
    ``where`` names the tile in errors."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im)
            text = str(getattr(im, "text", {}).get(EDGES_KEY, ""))
    except (OSError, ValueError) as exc:
        raise InputDataError(f"{where}: not a readable PNG ({exc}); delete it and rerun the prediction") from exc
    try:
        edges = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise InputDataError(f"{where}: bad {EDGES_KEY} text {text!r}; delete it and rerun the prediction") from exc
    k = n_classes + len(edges)
    if arr.ndim != 2 or arr.shape[0] % k or arr.dtype != np.uint8:
        raise InputDataError(f"{where}: shape {arr.shape} is not {k} stacked square bands; "
                             "it was made for another class table: delete it and rerun the prediction")
    h = arr.shape[0] // k
    if h != arr.shape[1]:
        raise InputDataError(f"{where}: bands of {h}x{arr.shape[1]} px are not square; delete it and rerun")
    return arr.reshape(k, h, arr.shape[1]), edges


def decode_probs(data: bytes, n_classes: int, where: str = "prediction tile") -> np.ndarray:
    """PNG bytes of a prediction tile -> uint8 (C, H, W) class bands (edge bands left out)."""
    return decode_prob_tile(data, n_classes, where)[0][:n_classes]
