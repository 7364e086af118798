"""The ``[split]`` and ``[train]`` config sections (dataset split and training); torch-free.

Keys (all optional)::

    [split]
    block_zoom = 16          # tiles are split by their parent tile at this zoom (a block never
                             # straddles two splits); default: region.zoom - 2 (4 x 4 tiles)
    val_fraction = 0.15      # share of tiles (whole blocks) for validation
    test_fraction = 0.15     # share of tiles (whole blocks) for the test split
    seed = 0                 # shuffles the blocks
    test_areas = [[W, S, E, N], ...]   # or "path/to/areas.geojson": tiles touching them are test
    val_areas = [[W, S, E, N], ...]    # likewise for validation (EPSG:4326 degrees)

    [train]
    arch = "Unet"            # segmentation-models-pytorch architecture
    encoder = "resnet34"     # smp encoder
    encoder_weights = "imagenet"  # pretrained encoder weights: a name smp knows for the encoder
                             # (downloaded by smp into its cache) or a local state-dict file; default none
    arch_options = { decoder_attention_type = "scse" }   # further keyword arguments of smp's
                             # model class (here: the U-Net's decoder attention); default none
    epochs = 30
    batch_size = 8
    lr = 1e-3                # peak learning rate (AdamW); the same when init is set (fine-tuning)
    weight_decay = 1e-4
    schedule = "onecycle"    # or "cosine" (linear warm-up then cosine decay), "constant"
    warmup = 0.1             # share of the steps spent warming up
    grad_clip = 1.0          # max gradient norm; 0: off
    losses = { ce = 1.0, dice = 1.0 }   # weighted sum of ce, dice, lovasz, focal
    scale = 1.0              # input resampling factor (0.5 = half-resolution tiles, 4x faster)
    crop = 0                 # train on random crops of this many (model) pixels; 0: whole tiles
    augment = true           # flips, 90-degree rotations, brightness/contrast/hue, scale jitter
    scale_jitter = 0.15      # +- zoom of the scale jitter (0: off)
    color_jitter = 0.2       # strength of brightness/contrast/hue jitter (0: off)
    empty_tile_weight = 1.0  # sampling weight of tiles without any labelled class (< 1: fewer)
    seed = 0
    amp = "auto"             # "auto" (bf16/fp16 on CUDA), "off"
    channels_last = true     # on CUDA
    compile = false          # torch.compile the model (CUDA)
    init = "models/base.pt"  # fine-tune: start from a checkpoint TrainModel wrote (relative to the
                             # working folder; classes matched by name: shared ones keep their
                             # head rows, new ones start fresh); default none
    freeze_encoder_epochs = 0  # epochs at the start that train the decoder and head only
    regions = ["configs/nairobi.toml"]  # other regions whose train and validation tiles join this
                             # region's (pipeline/model/regions.py: own splits, pooled band statistics,
                             # the same classes); the test split stays this region's; default none
    max_minutes = 0          # time budget (0: none): the LR schedule is laid out for the steps
                             # that fit (measured) and the run stops when they are done (mid-epoch
                             # if one epoch is longer than the budget)
    contact_weight = 5.0     # weight of edge pixels where two features touch (a party wall: edge
                             # beside edge, not background) in the edge loss: it teaches the model
                             # the walls that keep touching buildings apart (1: no extra weight)
    negatives_weight = 5.0   # loss weight of the pixels inside [labels] negatives (rejected candidates:
                             # hard negatives) in the cross-entropy, others 1; in the digest only
                             # when [labels] negatives is set (1: no extra weight)
    ema_epochs = 0           # validate and keep (best.pt) a moving average of the weights with this time
                             # constant in epochs (pipeline/model/ema.py; 0: the raw weights)
    val_every = 1            # validate every N epochs (and always the last); best.pt is chosen
                             # among validated epochs
    checkpoint_minutes = 5.0 # last.pt (full training state) at most this many minutes apart (0: every
                             # epoch), after the first epoch and at the end; operational
    checkpoint_epochs = 0    # and every N epochs (0: by time only); operational
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config.section import Section
from pipeline.core.errors import ConfigError

LOSSES = ("ce", "dice", "lovasz", "focal")
#: default peak learning rate from scratch, and when fine-tuning (``[train] init`` set, ``lr`` not):
#: fine-tuning keeps the from-scratch peak: on 4 philippines tiles (150 epochs from the three-region
#: model, 3 seeds) 1e-3 gave test building IoU 0.651-0.703 against 0.643-0.649 at 3e-4 (docs/notes/i19-travel.md)
LR, FINETUNE_LR = 1e-3, 1e-3
SCHEDULES = ("onecycle", "cosine", "constant")
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class SplitSpec:
    """Parsed ``[split]``. Areas are W,S,E,N boxes (EPSG:4326) or a GeoJSON file path."""

    block_zoom: int | None = None
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    test_areas: tuple[Box, ...] | Path | None = None
    val_areas: tuple[Box, ...] | Path | None = None


#: smp model arguments that are not ``[train] arch_options``: the config sets the first five, and the
#: pipeline needs logits out of one head (no ``activation``, no ``aux_params`` classification head)
RESERVED_OPTIONS = ("encoder_name", "encoder_weights", "in_channels", "classes", "arch", "activation", "aux_params")


@dataclass(frozen=True)
class TrainSpec:
    """Parsed ``[train]`` (see the module docstring for units and meanings)."""

    arch: str = "Unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    # further keyword arguments of smp's model class, sorted (name, value) pairs; in the train
    # digest only when set (pipeline.core.stages)
    arch_options: tuple[tuple[str, Any], ...] = field(default=(), metadata={"digest": "train"})
    epochs: int = 30
    batch_size: int = 8
    lr: float = LR
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    warmup: float = 0.1
    grad_clip: float = 1.0
    losses: tuple[tuple[str, float], ...] = (("ce", 1.0), ("dice", 1.0))
    scale: float = 1.0
    crop: int = 0
    augment: bool = True
    scale_jitter: float = 0.15
    color_jitter: float = 0.2
    empty_tile_weight: float = 1.0
    seed: int = 0
    amp: str = "auto"
    channels_last: bool = True
    compile: bool = False
    # a second model (model/cross/), trained on the val + test tiles, predicts the train tiles; not part
    # of the main model's identity (its digest): the predict stage's digest names it instead
    cross_fit: bool = field(default=False, metadata={"operational": True})
    # fine-tuning: a checkpoint written by TrainModel (its file's fingerprint enters the digest too)
    init: Path | None = None
    freeze_encoder_epochs: int = 0
    # several regions, one model: other region configs (in the train digest only when set, with
    # their split digests: pipeline.core.stages)
    regions: tuple[Path, ...] = field(default=(), metadata={"digest": "train"})
    max_minutes: float = 0.0  # 0: no time budget
    # touching buildings: the weight of edge pixels between two features (not next to background)
    # in the edge loss (1: no extra weight); measured in docs/notes/i15-dense.md
    contact_weight: float = 5.0
    # hard negatives: the cross-entropy weight of pixels inside [labels] negatives (pipeline.model.negatives);
    # in the train digest only when negatives are set (pipeline.core.stages)
    negatives_weight: float = field(default=5.0, metadata={"digest": "train"})
    # the weights' moving average (pipeline.model.ema); in the train digest only when on (pipeline.core.stages)
    ema_epochs: float = field(default=0.0, metadata={"digest": "train"})
    val_every: int = 1
    # how often last.pt is written: how, not what (no part of the digest)
    checkpoint_minutes: float = field(default=5.0, metadata={"operational": True})
    checkpoint_epochs: int = field(default=0, metadata={"operational": True})


def _str_list(sec: Section, key: str) -> list[str]:
    """A list of strings (paths) under ``key``; [] when absent."""
    v = sec.take(key, list, [])
    if not all(isinstance(x, str) and x for x in v):
        raise ConfigError(f"{sec.key(key)} = {v!r}: give a list of paths, e.g. [\"configs/other.toml\"]")
    return list(v)


def _areas(sec: Section, key: str) -> tuple[Box, ...] | Path | None:
    v = sec.take(key, (list, str), None)
    if v is None or isinstance(v, str):
        return Path(v) if v else None
    boxes: list[Box] = []
    for b in v:
        ok = isinstance(b, list) and len(b) == 4 and all(isinstance(c, (int, float)) for c in b)
        if not ok or not (b[0] < b[2] and b[1] < b[3]):
            raise ConfigError(f"{sec.key(key)}: {b!r} is not a [W, S, E, N] box in degrees with W < E and S < N")
        boxes.append((float(b[0]), float(b[1]), float(b[2]), float(b[3])))
    return tuple(boxes)


def parse_split(path: Path, table: dict[str, Any]) -> SplitSpec:
    """``[split]`` of config ``path`` -> :class:`SplitSpec` (errors name the file and key)."""
    sec = Section(path, "split", table)
    d = SplitSpec()
    spec = SplitSpec(
        block_zoom=sec.integer("block_zoom", None, lo=0, hi=24),
        val_fraction=sec.number("val_fraction", d.val_fraction, lo=0.0, hi=0.9),
        test_fraction=sec.number("test_fraction", d.test_fraction, lo=0.0, hi=0.9),
        seed=sec.integer("seed", d.seed),
        test_areas=_areas(sec, "test_areas"),
        val_areas=_areas(sec, "val_areas"),
    )
    if spec.val_fraction + spec.test_fraction >= 1.0:
        raise ConfigError(f"{path}: split.val_fraction + split.test_fraction must leave tiles to train on (< 1)")
    sec.done()
    return spec


def _arch_options(sec: Section) -> tuple[tuple[str, Any], ...]:
    """``arch_options = { decoder_attention_type = "scse" }``: keyword arguments of smp's model
    class, checked to be names and plain values here (smp checks what they mean when the model is built)."""
    table = sec.take("arch_options", dict, None) or {}
    for name, value in table.items():
        if not name.isidentifier() or name in RESERVED_OPTIONS:
            raise ConfigError(f"{sec.key('arch_options')}.{name}: not an option of its own; "
                              f"{', '.join(RESERVED_OPTIONS)} come from the config (arch, encoder, bands, classes) "
                              "or the pipeline (logits out of one head)")
        if isinstance(value, dict):
            raise ConfigError(f"{sec.key('arch_options')}.{name}: give a plain value or a list, not a table")
    return option_pairs(table)


def option_pairs(table: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``{name: value}`` -> sorted, hashable ``(name, value)`` pairs (lists as tuples): ``arch_options``."""
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in table.items()))


def _losses(sec: Section) -> tuple[tuple[str, float], ...]:
    table = sec.take("losses", dict, None)
    if table is None:
        return TrainSpec().losses
    out: list[tuple[str, float]] = []
    for name, w in table.items():
        if name not in LOSSES:
            raise ConfigError(f"{sec.key('losses')}: unknown loss {name!r}; choose from {', '.join(LOSSES)}")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise ConfigError(f"{sec.key('losses')}.{name} = {w!r}: give a weight >= 0")
        if w > 0:
            out.append((name, float(w)))
    if not out:
        raise ConfigError(f"{sec.key('losses')}: give at least one loss a weight > 0")
    return tuple(sorted(out))


def parse_train(path: Path, table: dict[str, Any]) -> TrainSpec:
    """``[train]`` of config ``path`` -> :class:`TrainSpec` (errors name the file and key)."""
    sec = Section(path, "train", table)
    d = TrainSpec()
    init = sec.take("init", str, None) or None
    spec = TrainSpec(
        arch=sec.take("arch", str, d.arch),
        encoder=sec.take("encoder", str, d.encoder),
        encoder_weights=sec.take("encoder_weights", str, None) or None,
        arch_options=_arch_options(sec),
        epochs=sec.integer("epochs", d.epochs, lo=1, hi=100000),
        batch_size=sec.integer("batch_size", d.batch_size, lo=1, hi=65536),
        lr=sec.number("lr", FINETUNE_LR if init else LR, lo=1e-8, hi=10.0),
        weight_decay=sec.number("weight_decay", d.weight_decay, lo=0.0, hi=10.0),
        schedule=sec.choice("schedule", SCHEDULES, d.schedule),
        warmup=sec.number("warmup", d.warmup, lo=0.0, hi=0.9),
        grad_clip=sec.number("grad_clip", d.grad_clip, lo=0.0),
        losses=_losses(sec),
        scale=sec.number("scale", d.scale, lo=0.125, hi=4.0),
        crop=sec.integer("crop", d.crop, lo=0, hi=4096),
        augment=sec.take("augment", bool, d.augment),
        scale_jitter=sec.number("scale_jitter", d.scale_jitter, lo=0.0, hi=0.9),
        color_jitter=sec.number("color_jitter", d.color_jitter, lo=0.0, hi=1.0),
        empty_tile_weight=sec.number("empty_tile_weight", d.empty_tile_weight, lo=0.0, hi=1.0),
        seed=sec.integer("seed", d.seed),
        amp=sec.choice("amp", ("auto", "off"), d.amp),
        channels_last=sec.take("channels_last", bool, d.channels_last),
        compile=sec.take("compile", bool, d.compile),
        cross_fit=sec.take("cross_fit", bool, d.cross_fit),
        init=Path(init) if init else None,
        regions=tuple(Path(p) for p in _str_list(sec, "regions")),
        freeze_encoder_epochs=sec.integer("freeze_encoder_epochs", d.freeze_encoder_epochs, lo=0, hi=100000),
        max_minutes=sec.number("max_minutes", d.max_minutes, lo=0.0),
        contact_weight=sec.number("contact_weight", d.contact_weight, lo=1.0, hi=100.0),
        negatives_weight=sec.number("negatives_weight", d.negatives_weight, lo=1.0, hi=100.0),
        ema_epochs=sec.number("ema_epochs", d.ema_epochs, lo=0.0, hi=1000.0),
        val_every=sec.integer("val_every", d.val_every, lo=1, hi=100000),
        checkpoint_minutes=sec.number("checkpoint_minutes", d.checkpoint_minutes, lo=0.0),
        checkpoint_epochs=sec.integer("checkpoint_epochs", d.checkpoint_epochs, lo=0, hi=100000),
    )
    if spec.crop % 32:
        raise ConfigError(f"{path}: train.crop = {spec.crop}: use a multiple of 32 (the models' output stride), or 0")
    sec.done()
    return spec
