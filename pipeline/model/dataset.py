"""A torch Dataset over the tiles of one split, joint augmentations and a seeded sampler.

Samples are dicts ``{"image": float32 (C, H, W) normalised with the split's band statistics,
"mask": int64 (H, W) model output indices (255 = ignore), "tile": (z, x, y)}``: mask values are
mapped through ``lut`` (:func:`pipeline.vectors.instances.target_lut`; without one they are used as they
are). Importable with torch, numpy and Pillow; albumentations is imported when augmentations are built.
With hard negatives (``negatives``: :func:`pipeline.model.negatives.negative_flags`) a sample also has
``"weight"``: float32 (H, W) loss weights, ``negatives_weight`` inside ``[labels] negatives`` and 1
elsewhere, augmented with the mask (an extra mask of the same transforms).

Determinism: the sampler yields ``(index, seed)`` pairs drawn from a generator seeded by
(seed, epoch); each sample's augmentation is seeded by its pair, so an epoch gives the same
batches whatever the number of DataLoader workers, and a resumed run replays an epoch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.config.train import TrainSpec
from pipeline.imagery.nodata import nodata_pixels
from pipeline.model.network import normalise
from pipeline.model.split import IGNORE, TileRow, read_image, read_mask, value_max


def build_augment(spec: TrainSpec, bands: int) -> Any:
    """albumentations Compose applied jointly to image (H, W, C: uint8, or float32 0..1 for
    16-bit tiles) and mask: a random crop
    (``spec.crop`` px, when set), flips, 90-degree rotations, scale jitter (mask resampled
    nearest, new border ignored) and colour jitter."""
    import albumentations as alb
    import cv2

    ts: list[Any] = [alb.RandomCrop(spec.crop, spec.crop, pad_if_needed=True, fill_mask=IGNORE)] if spec.crop else []
    ts += [alb.HorizontalFlip(p=0.5), alb.VerticalFlip(p=0.5), alb.RandomRotate90(p=1.0)]
    if spec.scale_jitter > 0:
        j = spec.scale_jitter
        ts.append(alb.Affine(scale=(1 - j, 1 + j), border_mode=cv2.BORDER_REFLECT_101, fill_mask=IGNORE, p=0.5))
    if spec.color_jitter > 0:
        c = spec.color_jitter
        ts.append(alb.RandomBrightnessContrast(brightness_limit=c, contrast_limit=c, p=0.8))
        if bands == 3:
            ts.append(alb.HueSaturationValue(hue_shift_limit=int(20 * c), sat_shift_limit=int(30 * c),
                                           val_shift_limit=0, p=0.5))
    return alb.Compose(ts)


class TileDataset(Dataset[dict[str, Any]]):
    """Image/mask tiles of ``rows`` under ``data_dir``; ``scale`` resamples them (0.5: half size);
    ``augment`` is a callable from :func:`build_augment` (or None). Index with an int or with an
    ``(index, seed)`` pair from :class:`EpochSampler` (the seed drives the augmentation); ``lut``
    (256 uint8) maps mask values to output indices after the augmentation. ``negatives`` (flags by
    mask path, :func:`~pipeline.model.negatives.negative_flags`) adds a ``"weight"`` map to every
    sample: ``negatives_weight`` on flagged pixels, 1 elsewhere."""

    def __init__(self, data_dir: str | Path, rows: Sequence[TileRow], band_stats: Mapping[str, Any],
                 scale: float = 1.0, augment: Any = None, lut: np.ndarray | None = None,
                 negatives: Mapping[str, np.ndarray] | None = None, negatives_weight: float = 1.0) -> None:
        self.data_dir = Path(data_dir)
        self.rows = list(rows)
        self.band_stats: dict[str, Any] = {"mean": list(band_stats["mean"]), "std": list(band_stats["std"])}
        if "max" in band_stats:  # 16-bit imagery: statistics in pixel / max units
            self.band_stats["max"] = float(band_stats["max"])
        self.bands = len(self.band_stats["mean"])
        self.scale = scale
        self.augment = augment
        self.lut = lut
        self.negatives = dict(negatives) if negatives else None
        self.negatives_weight = negatives_weight

    def __len__(self) -> int:
        return len(self.rows)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, C) and mask (H, W) of row ``i``, resampled by ``scale``: an 8-bit tile as
        uint8; a 16-bit tile as float32 min(pixel / ``band_stats["max"]``, 1) (0..1, which
        albumentations' colour jitter expects of floats; normalise clips alike)."""
        r = self.rows[i]
        img = read_image(self.data_dir / r.image, self.bands)
        if img.dtype != np.uint8:
            img = np.minimum(img.astype(np.float32) / np.float32(value_max(self.band_stats)), np.float32(1.0))
        mask = read_mask(self.data_dir / r.mask)
        nodata = nodata_pixels(img)
        if nodata is not None and nodata.shape == mask.shape:
            mask = np.where(nodata, np.uint8(IGNORE), mask)
        if self.scale != 1.0:
            from PIL import Image

            size = max(1, round(img.shape[1] * self.scale)), max(1, round(img.shape[0] * self.scale))
            chans = [np.asarray(Image.fromarray(img[:, :, c]).resize(size, Image.Resampling.BOX
                                                                      if self.scale < 1 else Image.Resampling.BILINEAR))
                     for c in range(img.shape[2])]
            img = np.stack(chans, axis=2)
            mask = np.asarray(Image.fromarray(mask).resize(size, Image.Resampling.NEAREST))
        return img, mask

    def flags(self, i: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """The negative flags of row ``i`` at the mask's (resampled) ``shape`` (zeros where no
        negative touches the tile); None without negatives."""
        if self.negatives is None:
            return None
        got = self.negatives.get(self.rows[i].mask)
        if got is None:
            return np.zeros(shape[:2], dtype=np.uint8)
        if got.shape != shape[:2]:
            from PIL import Image

            got = np.asarray(Image.fromarray(got).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
        return got

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, seed = (key, None) if isinstance(key, int) else (int(key[0]), int(key[1]))
        img, mask = self.load(i)
        flags = self.flags(i, mask.shape)
        if self.augment is not None and seed is not None:
            self.augment.set_random_seed(seed)
            out = self.augment(image=img, mask=mask, **({} if flags is None else {"masks": [flags]}))
            img, mask = out["image"], out["mask"]
            flags = None if flags is None else np.asarray(out["masks"][0])
        r = self.rows[i]
        if self.lut is not None:
            mask = self.lut[mask]
        scaled = img.dtype != np.uint8  # a 16-bit tile, already pixel / max
        sample = {"image": torch.from_numpy(normalise(np.ascontiguousarray(img), self.band_stats, scaled)),
                  "mask": torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64)),
                  "tile": (r.z, r.x, r.y)}
        if flags is not None:
            from pipeline.model.negatives import weight_map

            sample["weight"] = torch.from_numpy(weight_map(flags, self.negatives_weight))
        return sample


def sample_weights(rows: Sequence[TileRow], empty_tile_weight: float) -> list[float] | None:
    """Sampling weight per tile: ``empty_tile_weight`` for tiles with no labelled pixel, else 1;
    None when all weights are 1 (plain shuffling)."""
    if empty_tile_weight >= 1.0:
        return None
    return [1.0 if r.labelled > 0 else empty_tile_weight for r in rows]


class EpochSampler(Sampler[tuple[int, int]]):
    """Seeded, distributed sampler of ``(index, augmentation seed)`` pairs.

    Each epoch draws a permutation (or, with ``weights``, a weighted draw with replacement) from
    a generator seeded by ``(seed, epoch)``, pads it to a multiple of ``world_size`` and gives
    rank ``rank`` every ``world_size``-th element, like ``DistributedSampler``. Call
    :meth:`set_epoch` before each epoch."""

    def __init__(self, n: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 weights: Sequence[float] | None = None) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world_size
        self.shuffle, self.weights = shuffle, weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.n / self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        if self.weights is not None and self.shuffle:
            w = torch.tensor(self.weights, dtype=torch.float64)
            order = torch.multinomial(w, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        seeds = torch.randint(0, 2**31 - 1, (len(order),), generator=g).tolist()
        pairs = list(zip(order, seeds, strict=True))
        total = len(self) * self.world
        pairs += pairs[: total - len(pairs)]
        return iter(pairs[self.rank : total : self.world])


def collate(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch dict (``tile`` stays a list of (z, x, y); ``weight`` when the
    samples have one)."""
    out = {"image": torch.stack([b["image"] for b in batch]), "mask": torch.stack([b["mask"] for b in batch]),
           "tile": [tuple(b["tile"]) for b in batch]}
    if batch and "weight" in batch[0]:
        out["weight"] = torch.stack([b["weight"] for b in batch])
    return out
