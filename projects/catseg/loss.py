"""CAT-Seg training losses: the official per-class sigmoid BCE over every pixel (ignore pixels included as
negatives), and the mmseg port's softmax cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def catseg_bce_loss(logits: Tensor, targets: Tensor, ignore_value: int = 255) -> Tensor:
    """Official CAT-Seg loss.

    ``logits (B, N, h, w)`` are upsampled bilinearly (align_corners=False) to the label size; the
    target of a pixel is the one-hot vector of its label, and **ignore pixels get an all-zero target
    but are still counted** (the official code does not mask them out). Mean over B*N*H*W.
    Labels outside ``[0, N)`` other than ``ignore_value`` also give all-zero targets.
    """
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    classes = torch.arange(logits.shape[1], device=targets.device).view(1, -1, 1, 1)
    onehot = (targets[:, None] == classes) & (targets[:, None] != ignore_value)
    return F.binary_cross_entropy_with_logits(logits, onehot.to(logits.dtype))


def catseg_cross_entropy_loss(logits: Tensor, targets: Tensor, ignore_value: int = 255) -> Tensor:
    """The mmseg port's loss: ``CrossEntropyLoss(use_sigmoid=False, avg_non_ignore=True)``.

    ``logits (B, N, h, w)`` upsampled bilinearly (align_corners=False) to the label size; softmax
    cross-entropy summed over non-ignored pixels of the whole batch and divided by their number
    (+ float32 eps, mmseg's ``weight_reduce_loss``).
    """
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    total = F.cross_entropy(logits, targets, ignore_index=ignore_value, reduction="sum")
    count = (targets != ignore_value).sum()
    return total / (count + torch.finfo(torch.float32).eps)
