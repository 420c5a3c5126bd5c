"""Contrastive pieces shared by the image-text methods (toy CLIP, TCL, OVSegmentor).

`symmetric_info_nce` is the loss of TCL's `InfoNCE` and OVSegmentor's `Contrastive` (specs tcl.md
3.2, ovsegmentor.md 7): each rank scores its B local rows against all N = B x world gathered
columns, the positive of local row i is column i + B x rank, and the image->text and text->image
cross-entropies are averaged. The gather keeps gradients (`all_gather_with_grad`), so after DDP
averages the parameter gradients over ranks they equal those of the loss over the global batch in
one process.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) of every rank in rank order -> (world x B, ...). The backward pass
    sums the gradients of all ranks onto each slice's owner (`torch.distributed.nn`: gloo and NCCL).
    Without a process group (or with one rank) `x` itself is returned."""
    if not _distributed():
        return x
    return torch.cat(dist_fn.all_gather(x), dim=0)


def symmetric_info_nce(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric InfoNCE of local, paired (B, E) image and text features (L2-normalised here):
    0.5 x [CE(s x img @ all_text^T, y) + CE(s x text @ all_img^T, y)], y = arange(B) + B x rank, where
    `s` = `logit_scale` (the multiplier, i.e. already exp()'d and clamped) and all_* are gathered
    over ranks with gradients. Every rank must pass the same B."""
    if image_features.shape != text_features.shape or image_features.dim() != 2:
        raise ValueError(
            f"expected paired (B, E) features, got image {tuple(image_features.shape)} "
            f"and text {tuple(text_features.shape)}"
        )
    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    rank = dist.get_rank() if _distributed() else 0
    labels = torch.arange(len(image), device=image.device) + len(image) * rank
    logits_per_image = logit_scale * image @ all_gather_with_grad(text).T
    logits_per_text = logit_scale * text @ all_gather_with_grad(image).T
    return 0.5 * (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels))
