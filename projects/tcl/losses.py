"""TCL's feature-level text-grounded contrastive loss (TCL_f, the official `ExtendedInfoNCE`).

The image-level loss (TCL_v) is `ovseg_d2.modeling.contrastive.symmetric_info_nce` on the CLIP
embeddings of the masked images.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

from ovseg_d2.modeling.contrastive import all_gather_with_grad


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def masked_average_pool(dense: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, C, H, W) embeddings pooled with each of (B, N, H, W) soft masks -> (B, N, C)."""
    pooled = torch.einsum("bchw,bnhw->bnc", dense, masks)
    return pooled / (masks.sum(dim=(2, 3))[..., None] + eps)


def text_grounded_info_nce(
    pooled: torch.Tensor,
    text: torch.Tensor,
    logit_scale: torch.Tensor | float,
    official_multi_gpu_text_side: bool = False,
) -> torch.Tensor:
    """Symmetric InfoNCE where the image side of the pair (image i, caption j) is image i pooled
    with caption j's mask.

    pooled: (B, N, C) local images x all N = B x world captions; text: (B, C) the local captions.
    Image -> text: row i scores <P[i, j], T_j> over all j. Text -> image: caption t of this rank
    scores <P[i, t], T_t> over all N images (its column of P gathered over ranks). Positives at
    arange(B) + B x rank; `logit_scale` is the multiplier (already exp'd and clamped).

    `official_multi_gpu_text_side` reproduces the official bug with several processes: every rank
    gathers ITS OWN column block of every rank, so caption t of rank r is scored against the images
    of rank r' pooled with caption t of rank r' (the same local index) instead of with its own mask.
    The released checkpoint was trained so (16 GPUs); with one process both are the same.
    """
    b, n, _ = pooled.shape
    if text.shape[0] != b:
        raise ValueError(f"pooled has {b} images but text has {text.shape[0]} captions")
    pooled = F.normalize(pooled, dim=-1, eps=1e-6)
    text = F.normalize(text, dim=-1, eps=1e-6)
    all_text = all_gather_with_grad(text)
    if all_text.shape[0] != n:
        raise ValueError(f"pooled has {n} caption columns but {all_text.shape[0]} captions were gathered")
    start = b * rank()
    labels = torch.arange(b, device=pooled.device) + start
    logits_image = torch.einsum("bnc,nc->bn", pooled, all_text)
    if official_multi_gpu_text_side:
        own_columns = all_gather_with_grad(pooled[:, start : start + b].contiguous())
    else:
        own_columns = _columns_of_local_captions(pooled, b)  # (N, B, C)
    logits_text = torch.einsum("ntc,tc->tn", own_columns, text)
    return 0.5 * (
        F.cross_entropy(logit_scale * logits_image, labels) + F.cross_entropy(logit_scale * logits_text, labels)
    )


def _columns_of_local_captions(pooled: torch.Tensor, b: int) -> torch.Tensor:
    """(B, N, C) local images x all captions -> (N, B, C): every image of every rank pooled with this
    rank's B captions. Rank r sends its column block r' to rank r' (all_to_all, with gradients)."""
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if world == 1:
        return pooled
    blocks = [block.contiguous() for block in pooled.split(b, dim=1)]  # block r': captions of rank r'
    received = dist_fn.all_to_all([torch.empty_like(blocks[0]) for _ in range(world)], blocks)
    return torch.cat(received, dim=0)
