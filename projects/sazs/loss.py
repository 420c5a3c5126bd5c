"""SAZS training targets and losses (official `utils.JointEdgeSegLoss` + the dataset's edge maps).

Total = w_seg * NLL(seg) + w_edge * class-balanced BCE(edge) + w_att * edge-attention NLL. The official
fourth term (InverseForm, weight 0.3) is left out: it applies a log-softmax over the single edge channel,
which is identically zero, so its gradient is exactly zero and it only shifts the logged loss by a
constant (a frozen 100M-parameter network evaluated for nothing).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

__all__ = [
    "STRIDE",
    "boundary_map",
    "downsample_nearest",
    "edge_attention_loss",
    "edge_bce_loss",
    "seg_nll_loss",
]

STRIDE = 8  # the pixel embeddings and every loss live at 1/8 of the input


def boundary_map(label: np.ndarray, values: Iterable[int], radius: int = 2) -> np.ndarray:
    """(H, W) label map -> (H, W) uint8 edge map: pixels within `radius` (Euclidean) of a boundary of
    any listed value, the image border counting as a boundary (zero padding), as the official dataset
    code. Values not listed (void 255) get no channel, so they border the listed ones."""
    edges = np.zeros(label.shape, dtype=np.float64)
    for value in values:
        mask = np.pad((label == value).astype(np.float64), 1)
        dist = (distance_transform_edt(mask) + distance_transform_edt(1.0 - mask))[1:-1, 1:-1]
        dist[dist > radius] = 0
        edges += dist
    return (edges > 0).astype(np.uint8)


def downsample_nearest(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """(..., H, W) -> (..., H/stride, W/stride) keeping the top-left pixel of every cell (OpenCV's
    INTER_NEAREST at an exact 1/stride scale, which the official code uses)."""
    return x[..., ::stride, ::stride]


def seg_nll_loss(log_probs: torch.Tensor, target: torch.Tensor, ignore_index: int = 255) -> torch.Tensor:
    """Mean NLL over the (B, 2, h, w) log-probs and the (B, h, w) {0, 1, ignore} target."""
    return F.nll_loss(log_probs, target, ignore_index=ignore_index)


def edge_bce_loss(edge_logits: torch.Tensor, edge_target: torch.Tensor) -> torch.Tensor:
    """Class-balanced BCE over the whole batch: positives weighted by the negative fraction and vice
    versa; values > 1 are ignored (weight 0); mean over all elements."""
    target = edge_target.to(edge_logits.dtype)
    pos, neg = target == 1, target == 0
    total = (pos.sum() + neg.sum()).clamp(min=1).to(edge_logits.dtype)
    weight = torch.zeros_like(target)
    weight[pos] = neg.sum() / total
    weight[neg] = pos.sum() / total
    return F.binary_cross_entropy_with_logits(edge_logits, target.clamp(max=1), weight)


def edge_attention_loss(
    log_probs: torch.Tensor, target: torch.Tensor, edge_logits: torch.Tensor, threshold: float = 0.8
) -> torch.Tensor:
    """Segmentation NLL on the pixels whose edge logit exceeds `threshold`, summed over the images.

    Class weights come from the whole batch's kept pixels: w_k = 1 + (1 - freq_k) for a present class,
    1 otherwise. Each image's term is the weighted mean over its kept pixels; an image without kept
    pixels contributes 0 (the official code returns NaN there, 0 / 0).
    """
    kept = torch.where(edge_logits[:, 0] > threshold, target, torch.full_like(target, 255))
    counts = torch.stack([(kept == k).sum() for k in (0, 1)]).to(log_probs.dtype)
    freq = counts / counts.sum().clamp(min=1)
    weight = (counts > 0).to(log_probs.dtype) * (1.0 - freq) + 1.0
    loss = log_probs.new_zeros(())
    for i in range(log_probs.shape[0]):
        if (kept[i] != 255).any():
            loss = loss + F.nll_loss(F.log_softmax(log_probs[i : i + 1], dim=1), kept[i : i + 1], weight, ignore_index=255)
    return loss
