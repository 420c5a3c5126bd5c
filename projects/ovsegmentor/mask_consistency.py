"""Cross-image mask consistency (OVSegmentor stage 2, spec section 6).

For an anchor image I and a cross image J sharing an entity: the online group queries of I and the
momentum encoder's group queries of J are both read out on J's momentum patch keys (logit maps
M1, M2). M1's groups are matched to M2's by the Hungarian algorithm; the Dice loss pulls the
min-max-normalised M1 towards the binarised sigmoid of M2. Only the groups most related to the
shared entity pass gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

__all__ = ["MaskConsistency", "detach_unrelated_groups", "hungarian_match", "mask_dice_loss", "upsample_group_maps"]


def upsample_group_maps(logits: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """(B, S, h*w) group logit maps -> (B, S, H, W), bilinear with align_corners=True (official)."""
    maps = logits.unflatten(-1, grid)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)


def detach_unrelated_groups(maps: torch.Tensor, group_scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Detach the maps of the `int(S * ratio)` groups with the LOWEST scores (B, S) per sample."""
    num = int(group_scores.shape[1] * ratio)
    lowest = torch.topk(group_scores, k=num, dim=1, largest=False).indices
    frozen = torch.zeros_like(group_scores).scatter_(1, lowest, 1.0).bool()
    return torch.where(frozen[:, :, None, None], maps.detach(), maps)


@torch.no_grad()
def hungarian_match(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S, P) maps -> (B, S) row and column indices minimising the summed L2 distance of the
    L2-normalised rows (scipy on the CPU)."""
    cost = torch.cdist(F.normalize(pred.float(), dim=-1), F.normalize(target.float(), dim=-1)).cpu()
    rows, cols = (np.stack(idx) for idx in zip(*(linear_sum_assignment(c.numpy()) for c in cost)))
    return torch.from_numpy(rows).to(pred.device, torch.long), torch.from_numpy(cols).to(pred.device, torch.long)


def mask_dice_loss(pred: torch.Tensor, target_logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Matched (B, S, P) maps -> sum over samples of the Dice loss over all S maps of a sample,
    divided by S (so it grows with the per-process batch, as officially).

    pred: min-max normalised per map (no epsilon, as officially: a constant map gives NaN);
    target: sigmoid, then 1 where >= threshold x its max, else 0."""
    target = target_logits.sigmoid()
    target = (target >= threshold * target.amax(dim=-1, keepdim=True)).to(pred.dtype)
    low, high = pred.amin(dim=-1, keepdim=True), pred.amax(dim=-1, keepdim=True)
    pred = (pred - low) / (high - low)
    pred, target = pred.flatten(1), target.flatten(1)
    dice = 1 - (2 * (pred * target).sum(-1) + 1) / (pred.sum(-1) + target.sum(-1) + 1)
    return dice.sum() / target_logits.shape[1]


@dataclass(frozen=True)
class MaskConsistency:
    """The loss of section 6. `threshold` 0.6 (binarisation), `group_ratio` 0.5 (groups detached)."""

    threshold: float = 0.6
    group_ratio: float = 0.5

    def __call__(
        self, online_q: torch.Tensor, cross_q: torch.Tensor, cross_k: torch.Tensor, group_scores: torch.Tensor,
        grid: tuple[int, int], size: tuple[int, int],
    ) -> torch.Tensor:
        """online_q (B, S, C): anchor queries (online); cross_q (B, S, C), cross_k (B, N, C): the
        momentum encoder's on the cross image; group_scores (B, S): anchor groups . entity text."""
        scale = cross_k.shape[-1] ** -0.5
        cross_k = cross_k.detach()
        online = upsample_group_maps(online_q @ cross_k.transpose(1, 2) * scale, grid, size)
        target = upsample_group_maps((cross_q @ cross_k.transpose(1, 2) * scale).detach(), grid, size)
        online = detach_unrelated_groups(online, group_scores, self.group_ratio).flatten(2)
        target = target.flatten(2)
        rows, cols = hungarian_match(online, target)
        batch = torch.arange(online.shape[0], device=online.device)[:, None]
        return mask_dice_loss(online[batch, rows], target[batch, cols], self.threshold)
