"""Training losses: weighted sums of segmentation-models-pytorch's multiclass losses, with an
independent binary loss per edge channel (:mod:`pipeline.vectors.instances`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pipeline.model.metrics import IGNORE


def build_loss(losses: Sequence[tuple[str, float]], ignore_index: int = IGNORE,
               fold: torch.Tensor | None = None, n_main: int = 0, contact_weight: float | None = None,
               band_px: int = 1) -> Callable[..., torch.Tensor]:
    """Weighted sum of ``ce``, ``dice``, ``lovasz``, ``focal`` (smp.losses, multiclass, logits in)
    with label ``ignore_index`` left out.

    With edge outputs (``fold``: target index -> class index, ``n_main``: background + classes),
    the multiclass loss sees the first ``n_main`` logits and the folded target (a building's
    edge is building), and each further logit is an independent edge channel (sigmoid) trained
    with binary cross-entropy + Dice on ``target == n_main + j``, so learning the thin edge never
    takes probability away from the footprint.

    ``contact_weight`` (> 1) weighs the edge pixels where two features touch (farther than
    ``band_px`` target pixels, the edge band's width, from background: a party wall, not an outer
    wall) that much more in the binary cross-entropy: they are few, faint, and what keeps touching
    buildings apart.

    The loss takes ``(logits, target, weight=None)``: ``weight`` (N, H, W), per-pixel weights (hard
    negatives, :mod:`pipeline.model.negatives`), scales each pixel's cross-entropy
    (:func:`weighted_ce`); Dice, Lovasz and focal are set-level or their own weighting and stay
    unweighted, as do the edge channels."""
    from segmentation_models_pytorch import losses as smp_losses

    makers: dict[str, Callable[[], torch.nn.Module]] = {
        "ce": lambda: torch.nn.CrossEntropyLoss(ignore_index=ignore_index),
        "dice": lambda: smp_losses.DiceLoss("multiclass", ignore_index=ignore_index),
        "lovasz": lambda: smp_losses.LovaszLoss("multiclass", ignore_index=ignore_index),
        "focal": lambda: smp_losses.FocalLoss("multiclass", ignore_index=ignore_index),
    }
    parts = [(name, makers[name](), w) for name, w in losses]

    def loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        return sum((w * (weighted_ce(logits, target, weight, ignore_index) if name == "ce" and weight is not None
                         else fn(logits, target)) for name, fn, w in parts), torch.zeros((), device=logits.device))

    if fold is None:
        return loss
    bce = smp_losses.SoftBCEWithLogitsLoss(ignore_index=ignore_index)
    dice = smp_losses.DiceLoss("binary", from_logits=True, ignore_index=ignore_index)
    weigh = contact_weight is not None and contact_weight != 1.0

    def with_edges(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        main = loss(logits[:, :n_main], fold.to(target.device)[target], weight)
        ignore = target == ignore_index
        near_bg = _near(target == 0, band_px) if weigh else None
        for j in range(logits.shape[1] - n_main):
            t = torch.where(ignore, torch.full_like(target, ignore_index), (target == n_main + j).long())
            e = logits[:, n_main + j]
            if near_bg is None:
                main = main + bce(e, t.to(e.dtype))
            else:
                contact = (target == n_main + j) & ~near_bg
                main = main + _weighted_bce(e, t, ignore, 1.0 + (float(contact_weight or 1.0) - 1.0) * contact)
            main = main + dice(e[:, None], t[:, None])
        return main

    return with_edges


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                ignore_index: int = IGNORE) -> torch.Tensor:
    """Cross-entropy with a weight per pixel: the sum of weight x pixel loss over the pixels not
    ignored, divided by their number (not by the weights' sum: extra weight adds to the loss, the
    other pixels keep theirs). All weights 1: the plain mean cross-entropy."""
    per = torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none")
    valid = target != ignore_index
    return (per * weight.to(per.dtype) * valid).sum() / valid.sum().clamp(min=1)


def _near(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """True within ``radius`` pixels (Chebyshev) of a True pixel of ``mask`` (N, H, W)."""
    k = 2 * max(1, radius) + 1
    near = torch.nn.functional.max_pool2d(mask[:, None].float(), k, stride=1, padding=k // 2)
    return near[:, 0] > 0


def _weighted_bce(logits: torch.Tensor, target: torch.Tensor, ignore: torch.Tensor,
                  weight: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with a weight per pixel, ignored pixels counting 0 in the mean (as in
    smp's ``SoftBCEWithLogitsLoss``, which the unweighted loss uses)."""
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target.clamp(0, 1).to(logits.dtype), weight=weight.to(logits.dtype), reduction="none")
    return (per * ~ignore).mean()
