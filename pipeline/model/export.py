"""Model export: ONNX (dynamic batch and image size) checked against PyTorch with onnxruntime,
and a model card as a STAC item with the Machine Learning Model extension (``mlm``, v1.4).

The ONNX graph takes the normalised image (float32, N x bands x H x W, ``(pixel / 255 - mean) /
std`` per band, i.e. a z-score of the 0-255 pixel values with ``mean * 255`` and ``std * 255``,
as the card's ``value_scaling`` states; 16-bit tiles: ``max`` of the band statistics for 255)
and returns the logits (N x classes x H x W, channel 0
background, channel k the k-th class by ascending id); softmax gives the probabilities. H and W
are free; the card's input shape is one tile with its context border at the model's scale.

The card writes the input recipe out (``osmsat:input_recipe``, and ``resize_type`` in
``mlm:input``): the model sees a tile *with* ``context_px`` pixels of its neighbours on every
side (mirrored where a neighbour has no imagery), normalised, then resized by ``scale`` (area
interpolation when shrinking, bilinear when enlarging); its output is resized back to the
window and the border cut off. Fed the plain tile, a model trained this way loses accuracy.
:func:`mlm_problems` checks a card against the rules of the STAC-MLM v1.4.0 JSON schema that
osmsat's cards touch (required fields, the model asset's role and artifact type).
Importable with torch, numpy (onnx and onnxruntime are imported when used).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pipeline.core.atomic import atomic_path
from pipeline.core.errors import ConfigError, ModelError
from pipeline.vectors.instances import edge_value

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
ONNX_OPSET = 17
RGB_NAMES = ("red", "green", "blue")


def export_onnx(model: torch.nn.Module, bands: int, side: int, path: str | Path, opset: int = ONNX_OPSET) -> None:
    """Write ``model`` (eval mode, CPU, float32) as ONNX to ``path`` atomically: input ``image``
    (batch, bands, height, width), output ``logits``; batch, height and width are dynamic (traced
    at ``side`` x ``side`` px, which must suit the model's stride)."""
    model = model.to("cpu").float().eval()
    example = torch.zeros((1, bands, side, side), dtype=torch.float32)
    axes = {0: "batch", 2: "height", 3: "width"}
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of dynamo
        torch.onnx.export(model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": axes, "logits": axes}, opset_version=opset, dynamo=False)


def check_onnx(path: str | Path, model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Run the ONNX file with onnxruntime (CPU) and ``model`` (PyTorch, CPU, float32) on the model
    input batch ``x``; returns the largest absolute differences of logits and of softmax
    probabilities, and the sample count."""
    import onnxruntime as ort

    x = x.detach().to("cpu", torch.float32)
    with torch.inference_mode():
        ref = model.to("cpu").float().eval()(x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(sess.run(["logits"], {"image": x.numpy()})[0])
    if got.shape != ref.shape:
        raise ModelError(f"{path}: ONNX output shape {tuple(got.shape)} differs from PyTorch's {tuple(ref.shape)}")
    return {"max_abs_diff_logits": float((got - ref).abs().max()),
            "max_abs_diff_probs": float((got.softmax(1) - ref.softmax(1)).abs().max()),
            "samples": int(x.shape[0]), "height": int(x.shape[2]), "width": int(x.shape[3])}


def file_info(path: str | Path) -> dict[str, Any]:
    """``file:size`` and ``file:checksum`` (multihash: 1220 + sha256 hex) of a file."""
    data = Path(path).read_bytes()
    return {"file:size": len(data), "file:checksum": "1220" + hashlib.sha256(data).hexdigest()}


def band_names(bands: int) -> list[str]:
    """Names of the input bands: red, green, blue for 3 bands, else band1..bandN (tile order)."""
    return list(RGB_NAMES) if bands == 3 else [f"band{i + 1}" for i in range(bands)]


#: MLM ``resize_type`` values (v1.4.0 schema enum, besides null)
RESIZE_TYPES = ("crop", "pad", "interpolation-nearest", "interpolation-linear", "interpolation-cubic",
                "interpolation-area", "interpolation-lanczos4", "interpolation-max", "wrap-fill-outliers",
                "wrap-inverse-map")


def input_recipe(tile_size: int, context_px: int, side: int) -> dict[str, Any]:
    """How a tile becomes the model's input (and the output a prediction tile), as the card
    states it: the tile of ``tile_size`` px with ``context_px`` px of neighbour context on every
    side, resized to ``side`` px (the model's scale)."""
    window = tile_size + 2 * context_px
    scale = side / window
    resize = None if side == window else "area" if side < window else "bilinear"
    return {
        "tile_px": int(tile_size), "context_px": int(context_px), "window_px": int(window),
        "scale": round(scale, 6), "model_px": int(side),
        "context": (f"the tile plus {context_px} px of its 8 neighbours on every side ({window} x {window} px); "
                    "a missing neighbour is mirrored from the tile"),
        "normalisation": "per band (pixel / 255 - mean) / std with the checkpoint's band statistics "
                         "(= z-score of the 0-255 values, as value_scaling states; 16-bit tiles: pixel / the "
                         "statistics' max)",
        "resize": (None if resize is None else
                   f"after normalising, {window} -> {side} px ({resize} interpolation, torch "
                   f"interpolate{'' if resize == 'area' else ', align_corners=False'})"),
        "resize_type": None if resize is None else "interpolation-area" if resize == "area" else
        "interpolation-linear",
        "output": (f"logits at {side} px: softmax (class channels), resized back to {window} px (bilinear), "
                   f"then the {context_px} px border is cut off: the tile's {tile_size} x {tile_size} px"),
    }


def model_assets(onnx_path: Path, checkpoint: Path, folder: Path) -> dict[str, dict[str, Any]]:
    """The card's assets: the ONNX model (role ``mlm:model``, ``mlm:artifact_type`` onnx) and the
    PyTorch checkpoint it was exported from (``mlm:weights``/``mlm:checkpoint``; the MLM schema
    allows ``mlm:artifact_type`` only on an asset with the ``mlm:model`` role, so the checkpoint's
    format is in its type and title)."""
    return {
        "model": {"href": onnx_path.name, "title": "ONNX model (opset 17, dynamic batch/height/width)",
                  "type": "application/octet-stream; framework=onnx; profile=onnx",
                  "roles": ["mlm:model"], "mlm:artifact_type": "onnx", **file_info(onnx_path)},
        "weights": {"href": Path(os.path.relpath(checkpoint, folder)).as_posix(),
                    "title": "PyTorch checkpoint (osmsat format, torch.save of the state dict and meta)",
                    "type": "application/octet-stream; framework=pytorch; profile=torch.save",
                    "roles": ["mlm:weights", "mlm:checkpoint"], **file_info(checkpoint)},
    }


_MLM_ITEM = ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output")
_MLM_ONLY_FOR_MODEL = ("mlm:artifact_type", "mlm:compile_method")


#: the keys the MLM schema requires of an input's ``input`` and an output's ``result``
_MLM_STRUCT = ("shape", "dim_order", "data_type")


def _missing(where: str, obj: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """One problem line per key of ``keys`` that ``obj`` lacks."""
    return [f"{where}: {k} is required" for k in keys if k not in obj]


def mlm_problems(card: Mapping[str, Any]) -> list[str]:
    """What in ``card`` breaks the STAC-MLM v1.4.0 schema's rules (empty: none). Checked: the
    item's required ``mlm:*`` fields and the name pattern; each input's ``name``, ``bands``,
    ``input`` (``shape``, ``dim_order``, ``data_type``, one dimension per name) and ``resize_type``;
    each output's ``name``, ``tasks``, ``result``; at least one asset with the ``mlm:model`` role,
    each with ``mlm:artifact_type``; ``mlm:artifact_type`` / ``mlm:compile_method`` on no other asset."""
    import re

    out: list[str] = []
    if MLM_SCHEMA not in card.get("stac_extensions", ()):
        out.append(f"stac_extensions lacks {MLM_SCHEMA}")
    props = card.get("properties", {})
    out += _missing("properties", props, _MLM_ITEM)
    if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]", str(props.get("mlm:name", ""))):
        out.append(f"properties: mlm:name {props.get('mlm:name')!r} does not match the schema's pattern")
    for i, inp in enumerate(props.get("mlm:input", [])):
        struct = inp.get("input", {})
        out += _missing(f"mlm:input[{i}]", inp, ("name", "bands", "input"))
        out += _missing(f"mlm:input[{i}].input", struct, _MLM_STRUCT)
        if len(struct.get("shape", ())) != len(struct.get("dim_order", ())):
            out.append(f"mlm:input[{i}].input: shape and dim_order differ in length")
        if inp.get("resize_type") not in (None, *RESIZE_TYPES):
            out.append(f"mlm:input[{i}]: resize_type {inp.get('resize_type')!r} is not in the schema's list")
    for i, o in enumerate(props.get("mlm:output", [])):
        out += _missing(f"mlm:output[{i}]", o, ("name", "tasks", "result"))
        out += _missing(f"mlm:output[{i}].result", o.get("result", {}), _MLM_STRUCT)
    assets = card.get("assets", {})
    models = [k for k, a in assets.items() if "mlm:model" in a.get("roles", ())]
    if not models:
        out.append("assets: no asset has the mlm:model role")
    for k, a in assets.items():
        if k in models and "mlm:artifact_type" not in a:
            out.append(f"assets.{k}: the mlm:model asset needs mlm:artifact_type")
        if k not in models:
            out += [f"assets.{k}: {f} is allowed only with the mlm:model role" for f in _MLM_ONLY_FOR_MODEL if f in a]
    return out


@dataclass(frozen=True)
class CardDetails:
    """What a model card states besides the checkpoint (all optional): ``metrics`` the
    evaluation (``model/metrics.json``: per-class iou/precision/recall/f1) copied under
    ``osmsat:metrics``; ``total_parameters``; ``assets`` the STAC assets (model files,
    :func:`model_assets`); ``extra`` properties added last; ``colors`` class id -> '#rrggbb';
    ``recipe`` the input recipe (:func:`input_recipe`), written out as ``osmsat:input_recipe``
    and in the input's ``resize_type`` and the description."""

    metrics: Mapping[str, Any] | None = None
    total_parameters: int | None = None
    assets: Mapping[str, Mapping[str, Any]] | None = None
    extra: Mapping[str, Any] | None = None
    colors: Mapping[int, str] | None = None
    recipe: Mapping[str, Any] | None = None
    band_names: Sequence[str] = ()  # ``[imagery] band_names`` (tile order); () = :func:`band_names`


def model_card(meta: Mapping[str, Any], *, item_id: str, bbox: Sequence[float], side: int, created: str,
               details: CardDetails | None = None) -> dict[str, Any]:
    """A STAC item (STAC 1.1, ``mlm`` 1.4) describing a checkpoint's model.

    ``meta`` is the checkpoint meta (spec, classes, band_stats, tile_size); ``bbox`` the area it
    was trained on (W, S, E, N, EPSG:4326); ``side`` the input side the card states (one tile with
    its context border, at the model's scale); ``created`` an ISO 8601 UTC time; ``details`` what
    else the card states (:class:`CardDetails`: metrics, assets, class colours, input recipe...)."""
    more = details or CardDetails()
    metrics, total_parameters, assets = more.metrics, more.total_parameters, more.assets
    extra, colors, recipe = more.extra, more.colors, more.recipe
    spec = meta["spec"]
    bands = int(spec["in_channels"])
    names = list(more.band_names) or band_names(bands)
    if len(names) != bands:
        raise ConfigError(f"[imagery] band_names lists {len(names)} names ({', '.join(names)}) but the model takes "
                          f"{bands} bands; give one name per band of the image tiles, in tile order")
    stats = meta["band_stats"]
    vmax = float(stats.get("max", 255))  # 16-bit imagery: statistics in pixel / max units
    depth = "8-bit" if "max" not in stats else f"16-bit, statistics over 0-{vmax:.0f}"
    classes = sorted(meta["classes"], key=lambda c: int(c["id"]))
    out_classes: list[dict[str, Any]] = [{"value": 0, "name": "background", "description": "no class (channel 0)"}]
    for k, c in enumerate(classes, start=1):
        entry = {"value": k, "name": str(c["name"]),
                 "description": f"channel {k}: osmsat class id {int(c['id'])} ({c['name']})"}
        if colors and int(c["id"]) in colors:
            entry["color_hint"] = colors[int(c["id"])].lstrip("#").upper()
        out_classes.append(entry)
    for j, cid in enumerate(sorted(int(e) for e in meta.get("edges") or ())):
        k = len(classes) + 1 + j
        own = 1 + [int(c["id"]) for c in classes].index(cid)
        name = str(classes[own - 1]["name"])
        out_classes.append({"value": k, "name": f"{name}_edge",
                            "description": f"channel {k}: the edge band inside each {name} outline (mask value "
                                           f"{edge_value(cid)}); the {name} footprint is channel {own} plus this one, "
                                           "its instances are split along it"})
    w, s, e, n = (float(v) for v in bbox)
    props: dict[str, Any] = {
        "datetime": created,
        "description": (f"{spec['arch']} / {spec['encoder']} semantic segmentation of "
                        f"{', '.join(str(c['name']) for c in classes)} in aerial imagery tiles, trained by osmsat "
                        "on labels burnt from OpenStreetMap. Output: logits; softmax over channels gives "
                        "per-class probabilities (channel 0 background)."
                        + ("" if recipe is None else
                           f" Input: each tile with {recipe['context_px']} px of neighbour context on every side, "
                           f"normalised, resized by {recipe['scale']:g} ({recipe['window_px']} -> "
                           f"{recipe['model_px']} px); see osmsat:input_recipe.")),
        "mlm:name": item_id,
        "mlm:architecture": f"segmentation_models_pytorch.{spec['arch']} ({spec['encoder']} encoder"
                            + "".join(f", {k}={v!r}" for k, v in sorted((spec.get("arch_options") or {}).items()))
                            + ")",
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": "PyTorch",
        "mlm:framework_version": torch.__version__.split("+")[0],
        "mlm:pretrained": bool(spec.get("encoder_weights_path")),
        "bands": [{"name": b, "description": f"image tile band {i + 1} ({depth})"} for i, b in enumerate(names)],
        "mlm:accelerator": None,
        "mlm:accelerator_constrained": False,
        "mlm:input": [{
            "name": "image",
            "bands": names,
            "input": {"shape": [-1, bands, side, side], "dim_order": ["batch", "bands", "height", "width"],
                      "data_type": "float32"},
            "value_scaling": [{"type": "z-score", "mean": float(m) * vmax, "stddev": float(sd) * vmax}
                              for m, sd in zip(stats["mean"], stats["std"])],
            "resize_type": None if recipe is None else recipe["resize_type"],
            "pre_processing_function": None,
        }],
        "mlm:output": [{
            "name": "logits",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, len(out_classes), side, side],
                       "dim_order": ["batch", "channel", "height", "width"], "data_type": "float32"},
            "classification:classes": out_classes,
            "post_processing_function": None,
        }],
    }
    init = meta.get("init")  # fine-tuned ([train] init): where it started, pipeline.model.finetune.lineage
    if init:
        props["mlm:pretrained"] = True
        props["mlm:pretrained_source"] = f"osmsat model {init['path']} (sha256 {init['sha256']})"
        props["osmsat:init"] = dict(init)
    if not props["mlm:pretrained"]:
        props["mlm:pretrained_source"] = None  # mlm: trained from scratch
    if total_parameters is not None:
        props["mlm:total_parameters"] = int(total_parameters)
    if recipe is not None:
        props["osmsat:input_recipe"] = dict(recipe)
    if metrics:
        props["osmsat:metrics"] = {k: metrics[k] for k in ("iou", "precision", "recall", "f1", "miou", "accuracy",
                                                           "tiles", "scope", "note") if k in metrics}
    props.update(extra or {})
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA, FILE_SCHEMA],
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n],
        "properties": props,
        "links": [],
        "assets": {k: {**v, "bands": [{"name": b} for b in names]} if "mlm:model" in v.get("roles", ())
                   else dict(v) for k, v in (assets or {}).items()},
    }

