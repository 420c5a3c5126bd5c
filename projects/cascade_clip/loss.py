"""Cascade-CLIP training loss (official `SegLossPlus`: MaskFormer-style focal + dice without matching)
and the transductive online pseudo-labels.

Targets: channel c of an image is the mask of class c. The focal term covers every channel and every
pixel (ignored pixels are negatives for all classes, officially), averaged over pixels per
(image, class), summed and divided by `num_masks`, the number of (image, present class) pairs in the
global batch (all-reduced, divided by the world size, at least 1). The dice term covers the present
pairs only.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import Tensor

__all__ = ["focal_dice_loss", "pseudo_label_unseen", "global_num_masks"]


def global_num_masks(count: int, device: torch.device) -> float:
    """Present (image, class) pairs averaged over processes, clamped at 1 (official normaliser)."""
    num = torch.tensor([float(count)], device=device)
    if comm.get_world_size() > 1:
        torch.distributed.all_reduce(num)
    return torch.clamp(num / comm.get_world_size(), min=1).item()


def focal_dice_loss(
    logits: Tensor,
    targets: Tensor,
    *,
    ignore_value: int = 255,
    focal_weight: float = 100.0,
    dice_weight: float = 1.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> dict[str, Tensor]:
    """logits (B, N, H, W) at the label resolution, targets (B, H, W) in [0, N) or `ignore_value`."""
    if logits.shape[-2:] != targets.shape[-2:]:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in size")
    b, n = logits.shape[:2]
    valid = targets != ignore_value
    if (targets[valid] >= n).any() or (targets[valid] < 0).any():
        raise ValueError(f"targets hold labels outside [0, {n}) other than the ignore value {ignore_value}")
    onehot = F.one_hot(torch.where(valid, targets, n), n + 1)[..., :n].permute(0, 3, 1, 2).to(logits.dtype)
    logits = logits.flatten(2)
    onehot = onehot.flatten(2)
    present = onehot.amax(dim=2) > 0  # (B, N)
    num_masks = global_num_masks(int(present.sum()), logits.device)

    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, onehot, reduction="none")
    p_t = prob * onehot + (1 - prob) * (1 - onehot)
    alpha_t = alpha * onehot + (1 - alpha) * (1 - onehot)
    focal = (alpha_t * ce * (1 - p_t) ** gamma).mean(dim=2).sum() / num_masks

    p, t = prob[present], onehot[present]
    dice = (1 - (2 * (p * t).sum(-1) + 1) / (p.sum(-1) + t.sum(-1) + 1)).sum() / num_masks
    return {"loss_focal": focal_weight * focal, "loss_dice": dice_weight * dice}


@torch.no_grad()
def pseudo_label_unseen(logits: Tensor, targets: Tensor, unseen_channels: Sequence[int]) -> Tensor:
    """Transductive self-training: every pixel annotated with an unseen class gets the unseen class of
    highest sigmoid score from the same forward (official: seen channels set to -1, then argmax over
    all channels; no threshold). Other pixels keep their label."""
    unseen = torch.as_tensor(list(unseen_channels), device=logits.device, dtype=torch.long)
    best = logits.detach().index_select(1, unseen).sigmoid().argmax(dim=1)
    is_unseen = torch.isin(targets, unseen)
    return torch.where(is_unseen, unseen[best], targets)
