"""CAT-Seg training loss: per-class sigmoid BCE over every pixel, ignore pixels included as negatives."""

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
