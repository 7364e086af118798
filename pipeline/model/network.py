"""Segmentation models (segmentation-models-pytorch), input normalisation and the checkpoint format.

Importable with torch, segmentation-models-pytorch, numpy and Pillow alone (no geospatial stack),
so a GPU host with only PyTorch can train and predict.

Checkpoint format (``torch.save`` of a dict of tensors and plain Python values, so that
``torch.load(..., weights_only=True)`` reads it)::

    {"format": "osmsat-checkpoint", "version": 1,
     "model": state_dict,                   # weights (always on CPU)
     "meta": {                              # JSON-compatible
        "spec": ModelSpec as dict,
        "classes": [{"name", "id"}, ...],   # output channel k >= 1 = k-th class by ascending id; 0 = background
        "edges": [class id, ...],           # then one edge output per listed class (pipeline.vectors.instances)
        "band_stats": {"mean": [...], "std": [...]},   # per band, in units of pixel / 255 (0..1);
                                            # 16-bit imagery: pixel / "max" (a third key)
        "tile_size": int,                   # pixels of the training tiles (model input side)
        "scale": float,                     # input resampling of training: model px per image px
        "config_digest": str,               # chained digest of the train stage that made it
        "metrics": {...},                   # validation metrics of this epoch (may be empty)
     },
     "train_state": {...} | absent}         # optimiser, scheduler, scaler, RNG states, epoch (resume only)
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import ModelError

CHECKPOINT_FORMAT = "osmsat-checkpoint"
CHECKPOINT_VERSION = 1
ARCHS = ("Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet", "PAN",
         "UPerNet", "Segformer", "DPT")


@dataclass(frozen=True)
class ModelSpec:
    """What to build: smp ``arch`` and ``encoder`` names, ``in_channels`` (image bands),
    ``classes`` (outputs, background included: number of foreground classes + 1) and optional
    pretrained encoder weights ``encoder_weights_path`` (``[train] encoder_weights``): a weight
    name the encoder knows in smp's registry (``"imagenet"``, ``"ssl"``, ...: smp downloads them
    into its cache, the Hugging Face hub's) or a local file, a state dict of the smp encoder (e.g.
    ImageNet weights saved with ``torch.save(model.encoder.state_dict(), path)``). Either way a
    3-band first convolution meeting ``in_channels`` != 3 is adapted (:func:`adapt_first_conv`).
    ``arch_options`` (``[train] arch_options``): further keyword arguments of smp's model class,
    as sorted ``(name, value)`` pairs (``decoder_attention_type = "scse"`` for the U-Net's
    attention; lists as tuples)."""

    arch: str = "Unet"
    encoder: str = "resnet34"
    in_channels: int = 3
    classes: int = 2
    encoder_weights_path: str | None = None
    arch_options: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.arch_options:
            d["arch_options"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.arch_options}
        else:  # checkpoints of models without options read as before
            del d["arch_options"]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"model spec has unknown keys {unknown}; it was written by another osmsat version")
        from pipeline.config.train import option_pairs

        out = dict(d)
        out["arch_options"] = option_pairs(out.get("arch_options") or {})
        return cls(**out)


#: file name endings that make ``[train] encoder_weights`` a local file rather than a weight name
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar")
#: the weight name of ``tu-`` (timm) encoders: the pretrained tag is part of the encoder name
TIMM_WEIGHT_NAMES = ("imagenet",)


def encoder_weight_names(encoder: str) -> tuple[str, ...]:
    """The pretrained weight names smp's encoder registry lists for ``encoder`` (``()`` for an
    unknown encoder); for ``tu-`` (timm) encoders ``("imagenet",)`` when timm has pretrained
    weights for the model (the variant is the tag in the encoder name: ``tu-resnet18.a1_in1k``)."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        return TIMM_WEIGHT_NAMES if timm.is_model_pretrained(encoder[3:]) else ()
    entry = smp.encoders.encoders.get(encoder)
    return tuple(entry["pretrained_settings"]) if entry else ()


def resolve_encoder_weights(encoder: str, value: str | None) -> tuple[str, str] | None:
    """``[train] encoder_weights`` -> ``("name", name)`` (smp downloads it), ``("file", path)``
    (a local state dict) or None (random initialisation). A value is a file when it names one
    that exists, holds a path separator or ends like a weights file (``.pth``, ``.pt``, ...);
    otherwise it must be one of :func:`encoder_weight_names`, or ModelError says which are (with
    a "did you mean") and that a local file is the alternative."""
    if not value:
        return None
    names = encoder_weight_names(encoder)
    if value in names:
        return ("name", value)
    path = Path(value)
    if path.exists() or "/" in value or "\\" in value or path.suffix.lower() in WEIGHT_FILE_SUFFIXES:
        return ("file", value)
    import difflib

    close = difflib.get_close_matches(value, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    known = f"the {encoder} encoder knows {', '.join(repr(n) for n in names)}" if names else \
        f"the {encoder} encoder has no pretrained weights in smp's registry"
    raise ModelError(f"[train] encoder_weights = {value!r}: not a weight name nor a file; {hint}{known} — or give "
                     f"the path of a local {encoder} encoder state dict (e.g. 'weights/{encoder}.pth')")


def build_model(spec: ModelSpec) -> torch.nn.Module:
    """An smp model for ``spec``: randomly initialised, with pretrained encoder weights by name
    (smp's own loader downloads them into its cache; offline, a ModelError that names the key and
    the local-file alternative) or from a local file. A 3-band first convolution is adapted to
    ``in_channels`` bands as smp does it (:func:`adapt_first_conv`)."""
    import segmentation_models_pytorch as smp

    if spec.in_channels < 1 or spec.classes < 2:
        raise ModelError(f"model needs in_channels >= 1 and classes >= 2 (background + one class), got "
                         f"in_channels={spec.in_channels}, classes={spec.classes}")
    weights = resolve_encoder_weights(spec.encoder, spec.encoder_weights_path) \
        if spec.encoder_weights_path and not _is_smp_error_arch(spec) else None
    name = weights[1] if weights and weights[0] == "name" else None
    if spec.arch_options:
        _check_option_names(spec)
    try:
        model = smp.create_model(spec.arch, encoder_name=spec.encoder,
                                 encoder_weights=(True if spec.encoder.startswith("tu-") else name) if name else None,
                                 in_channels=spec.in_channels, classes=spec.classes, **dict(spec.arch_options))
    except (KeyError, ValueError, TypeError) as exc:
        if spec.arch_options:
            raise ModelError(_options_refused(spec, exc)) from exc
        raise ModelError(f"[train] arch={spec.arch!r} encoder={spec.encoder!r}: not an smp model ({exc}); "
                         f"arch is one of {', '.join(ARCHS)}; encoders: "
                         "segmentation_models_pytorch.encoders.get_encoder_names()") from exc
    except OSError as exc:  # the hub's errors (offline, not found, HTTP) and urllib's are all OSErrors
        raise ModelError(_download_failed(spec, str(name), exc)) from exc
    if weights and weights[0] == "file":
        _load_encoder_weights(model, spec)
    return model


def _check_option_names(spec: ModelSpec) -> None:
    """ModelError unless every ``arch_options`` name is a parameter of smp's model class (smp's
    classes pass unknown names on to the encoder, which may ignore them without a word)."""
    import difflib
    import inspect

    import segmentation_models_pytorch as smp

    from pipeline.config.train import RESERVED_OPTIONS

    cls = smp.MODEL_ARCHITECTURES_MAPPING.get(spec.arch.lower())
    if cls is None:
        return  # smp's own error names the architectures
    params = inspect.signature(cls.__init__).parameters.values()
    known = sorted(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD
                   and p.name != "self" and p.name not in RESERVED_OPTIONS)
    for k, _ in spec.arch_options:
        if k not in known:
            close = difflib.get_close_matches(k, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ModelError(f"[train] arch_options.{k}: not an argument of smp.{cls.__name__}; {hint}"
                             f"it takes {', '.join(known)}")


def _options_refused(spec: ModelSpec, exc: BaseException) -> str:
    """The one line for ``[train] arch_options`` that smp's model class refused (unknown name or value)."""
    why = (str(exc).strip().splitlines() or [""])[0][:200]
    given = ", ".join(f"{k} = {v!r}" for k, v in spec.arch_options)
    return (f"[train] arch_options = {{ {given} }}: segmentation-models-pytorch's {spec.arch} refused them "
            f"({type(exc).__name__}: {why}); they are keyword arguments of smp.{spec.arch} (see its documentation, "
            f"e.g. decoder_attention_type = \"scse\" for Unet): fix or remove the key")


def _is_smp_error_arch(spec: ModelSpec) -> bool:
    """True when ``spec.encoder`` is unknown to smp (its own error then says so first)."""
    import segmentation_models_pytorch as smp

    return not (spec.encoder.startswith("tu-") or spec.encoder in smp.encoders.encoders)


def _download_failed(spec: ModelSpec, name: str, exc: BaseException) -> str:
    why = (str(exc).strip().splitlines() or [""])[0][:200]
    return (f"[train] encoder_weights = {name!r}: could not download the {spec.encoder} {name!r} weights "
            f"({type(exc).__name__}: {why}); is this machine offline? Connect it once (smp keeps them in "
            f"its cache, ~/.cache/huggingface) or set [train] encoder_weights to a local file: a state dict "
            f"of the {spec.encoder} encoder, e.g. torch.save(model.encoder.state_dict(), "
            f"'weights/{spec.encoder}.pth') on a machine that has them")


def _load_encoder_weights(model: torch.nn.Module, spec: ModelSpec) -> None:
    path = Path(str(spec.encoder_weights_path))
    if not path.is_file():
        raise ModelError(f"[train] encoder_weights = {str(path)!r}: no such file. Put the pretrained "
                         f"{spec.encoder} encoder weights (a PyTorch state dict) at that path, give a weight "
                         "name smp knows (e.g. 'imagenet', downloaded when online), or remove the key to train "
                         "from scratch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        raise ModelError(f"{path}: not a readable PyTorch state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a PyTorch state dict (a {type(state).__name__}); save one with "
                         "torch.save(model.encoder.state_dict(), path)")
    encoder: Any = model.encoder
    own = encoder.state_dict()
    usable: dict[str, torch.Tensor] = {}
    for k, t in state.items():
        if k not in own or not isinstance(t, torch.Tensor):
            continue
        w = own[k]
        if w.shape != t.shape and t.ndim == 4 and w.ndim == 4 and t.shape[1] == 3:
            t = adapt_first_conv(t, int(w.shape[1]))  # noqa: PLW2901 — a 3-band first conv meets 1 or 4+ bands
        if w.shape == t.shape:
            usable[k] = t
    if not usable:
        raise ModelError(f"{path}: none of its tensors fit the {spec.encoder} encoder with "
                         f"{spec.in_channels} input bands; is it the weights of another encoder?")
    encoder.load_state_dict(usable, strict=False)


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-convolution weight (out, 3, kh, kw) for ``in_channels`` bands, as smp's
    ``patch_first_conv`` adapts pretrained encoders (and timm's ``adapt_input_conv`` much alike):
    1 band takes the sum over the colour bands; ``n`` > 3 bands repeat the colour bands
    cyclically (R, G, B, R, ...), scaled by 3 / n (so the summed weight stays of the same order).
    Other shapes come back unchanged."""
    c = int(weight.shape[1])
    if c == in_channels or weight.ndim != 4:
        return weight
    if in_channels == 1:
        return weight.sum(1, keepdim=True)
    idx = torch.arange(in_channels) % c
    return weight[:, idx] * (c / in_channels)


def normalise(image: np.ndarray | torch.Tensor, band_stats: Mapping[str, Any], scaled: bool = False) -> Any:
    """Image (H, W, C) or (C, H, W) -> float32 (C, H, W): ``(min(pixel / max, 1) - mean) / std`` per band.

    ``band_stats`` mean and std are in units of pixel / ``max``: ``band_stats["max"]`` for 16-bit
    imagery (the training pixels' 99th percentile, see :func:`pipeline.model.split.training_stats`;
    brighter pixels count as ``max``), 255 without it (8-bit: the clip never acts). ``scaled``: the
    image is already float pixel / ``max`` (augmented 16-bit tiles). An (H, W, C) input is
    recognised by its last axis matching the number of bands; a numpy input gives a numpy array,
    a tensor a tensor. Used identically by training and prediction."""
    mean = [float(v) for v in band_stats["mean"]]
    std = [float(v) for v in band_stats["std"]]
    vmax = 1.0 if scaled else float(band_stats.get("max", 255))
    n = len(mean)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise ValueError(f"image must be (H, W, C) or (C, H, W), got shape {tuple(image.shape)}")
    if image.shape[0] != n and image.shape[-1] == n:
        image = image.permute(2, 0, 1) if isinstance(image, torch.Tensor) else np.transpose(image, (2, 0, 1))
    if image.shape[0] != n:
        raise ModelError(f"image has shape {tuple(image.shape)} but the model's band statistics have {n} bands")
    if isinstance(image, torch.Tensor):
        m = torch.tensor(mean, dtype=torch.float32, device=image.device).view(n, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=image.device).view(n, 1, 1)
        return ((image.to(torch.float32) / vmax).clamp(max=1.0) - m) / s
    m_np = np.asarray(mean, dtype=np.float32).reshape(n, 1, 1)
    s_np = np.asarray(std, dtype=np.float32).reshape(n, 1, 1)
    x = np.minimum(np.asarray(image, dtype=np.float32) / np.float32(vmax), np.float32(1.0))
    return ((x - m_np) / s_np).astype(np.float32)


def make_meta(spec: ModelSpec, classes: Sequence[Mapping[str, Any]], band_stats: Mapping[str, Any],
              tile_size: int, config_digest: str, metrics: Mapping[str, Any] | None = None,
              scale: float = 1.0, edges: Sequence[int] = ()) -> dict[str, Any]:
    """The checkpoint's ``meta`` dict (see the module docstring), checked for consistency.
    ``scale`` is the input resampling factor of training (0.5: image tiles were halved);
    ``edges`` the class ids with an edge output."""
    table = [{"name": str(c["name"]), "id": int(c["id"])} for c in sorted(classes, key=lambda c: int(c["id"]))]
    edge_list = sorted(int(e) for e in edges)
    if not set(edge_list) <= {c["id"] for c in table}:
        raise ModelError(f"edge outputs {edge_list} name classes the table {table} lacks")
    want = len(table) + 1 + len(edge_list)
    if want != spec.classes:
        raise ModelError(f"{len(table)} classes and {len(edge_list)} edges need a model with {want} outputs, "
                         f"spec has {spec.classes}")
    if len(band_stats["mean"]) != spec.in_channels or len(band_stats["std"]) != spec.in_channels:
        raise ModelError(f"band statistics have {len(band_stats['mean'])} bands, the model {spec.in_channels}")
    return {"spec": spec.to_dict(), "classes": table, "edges": edge_list,
            "band_stats": {"mean": [float(v) for v in band_stats["mean"]],
                           "std": [float(v) for v in band_stats["std"]],
                           **({"max": float(band_stats["max"])} if "max" in band_stats else {})},
            "tile_size": int(tile_size), "scale": float(scale), "config_digest": str(config_digest),
            "metrics": dict(metrics or {})}


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: Mapping[str, Any],
                    train_state: Mapping[str, Any] | None = None) -> None:
    """Write a checkpoint atomically (temporary file in the same folder, then rename).

    ``model`` may be wrapped (DDP, torch.compile): its inner module's weights are saved, on CPU."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = unwrap(model)
    state = {k: v.detach().to("cpu") for k, v in inner.state_dict().items()}
    blob: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                            "model": state, "meta": dict(meta)}
    if train_state is not None:
        blob["train_state"] = dict(train_state)
    write_checkpoint(path, blob)


def write_checkpoint(path: str | Path, blob: Mapping[str, Any]) -> None:
    """Write a checkpoint dict atomically, through a file object: torch then names the archive's
    records ``archive/...`` rather than after the temporary file, so equal checkpoints are equal
    bytes (a ``best.pt`` rebuilt from ``last.pt`` matches the sha256 its manifest recorded)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(dict(blob), fh)


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict (``weights_only=True``), checked to be an osmsat checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint; train a model first (python -m tasks TrainModel ...)")
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises anything (KeyError, IndexError, ...) on a file that is no checkpoint
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:160]}"  # its text runs to lines
        raise ModelError(f"{path}: not a readable checkpoint ({why}); set [predict] model to a model/best.pt "
                         "written by TrainModel (if this is the region's own checkpoint, delete it and train "
                         "again)") from exc
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(f"{path}: not an osmsat checkpoint (no format tag)")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{path}: checkpoint version {blob.get('version')}, this osmsat reads {CHECKPOINT_VERSION}")
    return blob


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """``(model in eval mode, meta)`` from a checkpoint written by :func:`save_checkpoint`.

    The encoder weights file is not needed (the checkpoint holds all weights)."""
    blob = read_checkpoint(path, map_location)
    meta = blob["meta"]
    spec = ModelSpec.from_dict({**meta["spec"], "encoder_weights_path": None})
    model = build_model(spec)
    try:
        model.load_state_dict(blob["model"])
    except RuntimeError as exc:
        raise ModelError(f"{path}: weights do not fit the model its spec describes ({exc})") from exc
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    return model, meta


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP / torch.compile wrappers."""
    inner: Any = model
    while True:
        if hasattr(inner, "_orig_mod"):
            inner = inner._orig_mod
        elif isinstance(inner, torch.nn.parallel.DistributedDataParallel):
            inner = inner.module
        else:
            return inner  # type: ignore[no-any-return,unused-ignore]
