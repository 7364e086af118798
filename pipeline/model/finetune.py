"""Fine-tuning: start training from a checkpoint TrainModel wrote (``[train] init``).

* :func:`read_init` reads the file (one-line errors that name ``[train] init`` and the file) and
  :func:`lineage` says where a model came from: the init file's path and sha256, its train digest,
  its own lineage (so a chain of fine-tunes stays traceable). The checkpoint's ``meta["init"]``
  holds it; ``run.json`` and the model card show it.
* :func:`init_weights` loads the init model's weights into a freshly built model. The class
  table is matched by name: output rows of a class both tables have (background always, and a
  class's edge output) keep their weights; rows of new classes keep the fresh model's random
  initialisation; rows of classes the init had and this region lacks are dropped. The
  architecture (``[train] arch``, ``encoder``) must agree; another band count adapts the first
  convolution (:func:`pipeline.model.network.adapt_first_conv`: 1 band sums the init's bands, more
  repeat them scaled by old / new, as smp and timm adapt pretrained encoders).

Importable with torch and numpy alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import ModelError

KEY = "[train] init"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _card_checkpoint(card: Path, where: str) -> Path:
    """The checkpoint an exported model's STAC card (``model.stac.json``, ExportModel) names as its
    weights, checked against the checksum the card records."""
    import hashlib
    import json

    try:
        asset = json.loads(card.read_text())["assets"]["weights"]
        href, checksum = str(asset["href"]), str(asset.get("file:checksum", ""))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"{where}: {card} is not a model card ExportModel wrote (no weights asset); name a "
                         "best.pt written by TrainModel") from exc
    ckpt = (card.parent / href).resolve()
    if not ckpt.is_file():
        raise ModelError(f"{where}: the checkpoint the model card names, {ckpt}, is not there; copy it with the "
                         "export, or name a best.pt")
    if checksum and checksum != "1220" + hashlib.sha256(ckpt.read_bytes()).hexdigest():
        raise ModelError(f"{where}: {ckpt} changed since the export its card describes; rerun ExportModel or "
                         "name the checkpoint itself")
    return ckpt


def read_init(path: str | Path) -> dict[str, Any]:
    """The init checkpoint's dict (``weights_only``); a missing or unreadable file is one line."""
    from pipeline.model.network import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

    path = Path(path)
    where = f"{KEY} = {str(path)!r}"
    if path.suffix.lower() == ".onnx":
        card = path.with_name("model.stac.json")
        also = f" ({_card_checkpoint(card, where)})" if card.is_file() else ""
        raise ModelError(f"{where}: an ONNX export cannot be trained further (its batch norms are folded into "
                         f"the convolutions); name the checkpoint it was exported from{also}, or its "
                         "model.stac.json")
    if path.suffix.lower() == ".json" and path.is_file():
        path = _card_checkpoint(path, where)
    if not path.is_file():
        raise ModelError(f"{where}: no such file; name a best.pt written by TrainModel (data/<region>/model/"
                         "best.pt, copied where you like), or remove the key to train from scratch")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises anything (KeyError, RuntimeError, ...) on a file that is no checkpoint
        why = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:120]}"
        raise ModelError(f"{where}: not a readable checkpoint ({why}); name a best.pt written by TrainModel") \
            from exc
    ok = isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT and isinstance(blob.get("meta"), dict) \
        and isinstance(blob.get("model"), dict)
    if not ok:
        raise ModelError(f"{where}: not an osmsat checkpoint (no format tag); name a best.pt written by TrainModel")
    if blob.get("version") != CHECKPOINT_VERSION:
        raise ModelError(f"{where}: checkpoint version {blob.get('version')}, this osmsat reads {CHECKPOINT_VERSION}")
    return blob


def lineage(path: str | Path, blob: Mapping[str, Any]) -> dict[str, Any]:
    """Where a fine-tuned model came from: the init file (as configured, and resolved), its sha256,
    the train digest and classes of the init model and the init model's own lineage."""
    path = Path(path)
    meta = blob["meta"]
    spec = meta.get("spec", {})
    out: dict[str, Any] = {"path": str(path), "resolved": str(path.resolve()), "sha256": file_sha256(path),
                           "config_digest": meta.get("config_digest"), "arch": spec.get("arch"),
                           "encoder": spec.get("encoder"),
                           "classes": [str(c["name"]) for c in sorted(meta.get("classes", []), key=lambda c: c["id"])]}
    if meta.get("init"):
        out["parent"] = dict(meta["init"])
    return out


def output_names(classes: Sequence[Mapping[str, Any]], edges: Sequence[int]) -> list[str]:
    """Name of each output channel: ``background``, the classes by ascending id, then ``<name>/edge``."""
    table = sorted(classes, key=lambda c: int(c["id"]))
    by_id = {int(c["id"]): str(c["name"]) for c in table}
    return ["background", *(str(c["name"]) for c in table), *(f"{by_id[int(e)]}/edge" for e in sorted(edges))]


def row_map(old: Sequence[str], new: Sequence[str]) -> list[int | None]:
    """For each new output channel, the init channel of the same name (None: a new class)."""
    index = {n: i for i, n in enumerate(old)}
    return [index.get(n) for n in new]


def _head_keys(state: Mapping[str, torch.Tensor], n_out: int) -> list[str]:
    """The state-dict keys of the output layer: under ``segmentation_head.``, first axis = outputs."""
    return [k for k, v in state.items() if k.startswith("segmentation_head.") and v.ndim >= 1 and v.shape[0] == n_out]


def init_weights(model: torch.nn.Module, blob: Mapping[str, Any], model_spec: Any,
                 classes: Sequence[Mapping[str, Any]], edges: Sequence[int], path: str | Path) -> dict[str, Any]:
    """Load the init checkpoint ``blob`` into ``model`` (built for ``model_spec``, this region's
    ``classes`` and ``edges``); returns what was matched: ``kept`` and ``new`` output names and
    the init's ``dropped`` ones."""
    where = f"{KEY} = {str(path)!r}"
    meta = blob["meta"]
    spec = meta.get("spec", {})
    if (spec.get("arch"), spec.get("encoder")) != (model_spec.arch, model_spec.encoder):
        raise ModelError(f"{where}: a {spec.get('arch')} / {spec.get('encoder')} model, [train] asks for "
                         f"{model_spec.arch} / {model_spec.encoder}; set [train] arch = {spec.get('arch')!r} and "
                         f"encoder = {spec.get('encoder')!r}")
    theirs = dict(spec.get("arch_options") or {})
    mine = model_spec.to_dict().get("arch_options", {})
    if theirs != mine:
        raise ModelError(f"{where}: a model built with arch_options {theirs or 'none'}, [train] asks for "
                         f"{mine or 'none'}; set [train] arch_options as the init model's")
    old_bands = int(spec.get("in_channels", -1))
    if old_bands < 1:
        raise ModelError(f"{where}: the init checkpoint does not say how many bands its model takes")
    old = output_names(meta.get("classes", []), meta.get("edges", []))
    new = output_names(classes, edges)
    rows = row_map(old, new)
    own = model.state_dict()
    init = blob["model"]
    heads = set(_head_keys(init, len(old))) & set(_head_keys(own, len(new)))
    state: dict[str, torch.Tensor] = {}
    for k, mine in own.items():
        if k not in init:
            raise ModelError(f"{where}: the init model has no {k!r}; is it of another segmentation-models-pytorch "
                             "version?")
        theirs = init[k]
        if k in heads:
            out = mine.clone()
            for j, i in enumerate(rows):
                if i is not None:
                    out[j] = theirs[i].to(out.dtype)
            state[k] = out
        elif (theirs.ndim == 4 and theirs.shape[1] == old_bands != mine.shape[1] == model_spec.in_channels
              and theirs.shape[0] == mine.shape[0] and theirs.shape[2:] == mine.shape[2:]):
            # the first convolution meets another band count: smp's / timm's adaptation
            from pipeline.model.network import adapt_first_conv

            state[k] = adapt_first_conv(theirs, model_spec.in_channels).to(mine.dtype)
        elif theirs.shape != mine.shape:
            raise ModelError(f"{where}: {k} has shape {tuple(theirs.shape)} there, {tuple(mine.shape)} here")
        else:
            state[k] = theirs
    model.load_state_dict(state)
    return {"kept": [n for n, i in zip(new, rows) if i is not None],
            "new": [n for n, i in zip(new, rows) if i is None],
            "dropped": [n for n in old if n not in new],
            "bands": [old_bands, model_spec.in_channels]}


def set_encoder_frozen(model: torch.nn.Module, frozen: bool, toggle_grad: bool = True) -> None:
    """Freeze (or thaw) ``model.encoder``: no gradient (``toggle_grad``; leave it False under DDP,
    whose reducer fixes the trained parameters at construction) and batch-norm statistics fixed."""
    encoder: Any = getattr(model, "encoder", None)
    if encoder is None:
        raise ModelError("freeze_encoder_epochs: the model has no encoder to freeze")
    if toggle_grad:
        for p in encoder.parameters():
            p.requires_grad_(not frozen)
    if frozen:
        encoder.eval()


def drop_encoder_grads(model: torch.nn.Module) -> None:
    """Set the encoder's gradients to None (the frozen encoder under DDP: AdamW skips it)."""
    for p in model.get_submodule("encoder").parameters():
        p.grad = None
