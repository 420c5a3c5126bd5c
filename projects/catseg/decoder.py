"""CAT-Seg upsampling decoder: per-class 2x(transposed conv -> concat guidance -> double conv) + head.

All classes of all images are decoded as one batch ``(B*N, C, H, W)``. The guidance maps are shared by
the classes of an image; the first conv of each stage, which in the official code runs on
``cat([upsampled, guidance])``, is evaluated as ``conv(upsampled) + conv(guidance)`` with the guidance
half computed once per image (exact in real arithmetic: that conv has no bias).
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DecoderStage", "CATSegDecoder"]


class DecoderStage(nn.Module):
    """``ConvTranspose2d(in -> in - g, k2, s2)``, concat ``g`` guidance channels, then
    ``[conv3x3 (no bias) -> GroupNorm(out/16) -> ReLU] x 2``."""

    def __init__(self, in_dim: int, out_dim: int, guidance_dim: int):
        super().__init__()
        self.guidance_dim = guidance_dim
        self.up = nn.ConvTranspose2d(in_dim, in_dim - guidance_dim, kernel_size=2, stride=2)
        self.conv1 = nn.Conv2d(in_dim, out_dim, kernel_size=3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(out_dim // 16, out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, kernel_size=3, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(out_dim // 16, out_dim)

    def forward(self, x: Tensor, guidance: Tensor | None) -> Tensor:
        """
        Args:
            x: ``(B*N, C, H, W)`` class maps, image-major (row b*N + n).
            guidance: ``(B, g, 2H, 2W)`` shared by the classes of an image, ``(B, N, g, 2H, 2W)`` per class
                (the mmseg port's tiling), or None (only when ``guidance_dim == 0``).
        Returns:
            ``(B*N, out, 2H, 2W)``.
        """
        x = self.up(x)
        if guidance is None:
            y = self.conv1(x)
        else:
            split = x.shape[1]
            y = F.conv2d(x, self.conv1.weight[:, :split], padding=1)
            b = guidance.shape[0]
            if guidance.dim() == 5:
                yg = F.conv2d(guidance.flatten(0, 1), self.conv1.weight[:, split:], padding=1)
                y = y + yg
            else:
                yg = F.conv2d(guidance, self.conv1.weight[:, split:], padding=1)
                y = (y.unflatten(0, (b, -1)) + yg[:, None]).flatten(0, 1)
        y = F.relu(self.norm1(y))
        return F.relu(self.norm2(self.conv2(y)))


class CATSegDecoder(nn.Module):
    """Two guided upsampling stages (x4 in total) and a 3x3 conv head giving one logit per class.

    ``dropout``: ``Dropout2d`` before the head (the mmseg port's decode-head default 0.1, absent in the
    official code; it drops whole channels of every class map in training).
    """

    def __init__(
        self,
        in_dim: int,
        dims: Sequence[int] = (64, 32),
        guidance_dims: Sequence[int] = (32, 16),
        dropout: float = 0.0,
    ):
        super().__init__()
        if len(dims) != len(guidance_dims):
            raise ValueError("decoder dims and guidance dims must have the same length")
        stages, prev = [], in_dim
        for dim, gdim in zip(dims, guidance_dims):
            stages.append(DecoderStage(prev, dim, gdim))
            prev = dim
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = nn.Conv2d(prev, 1, kernel_size=3, padding=1)

    def forward(self, x: Tensor, guidance: Sequence[Tensor | None]) -> Tensor:
        """
        Args:
            x: ``(B, N, H, W, C)`` aggregated cost embedding.
            guidance: one projected guidance map ``(B, g_i, H*2^(i+1), W*2^(i+1))`` (or ``(B, N, ...)`` per
                class, or None) per stage.
        Returns:
            logits ``(B, N, H*2^S, W*2^S)``.
        """
        b, n, h, w, c = x.shape
        y = x.permute(0, 1, 4, 2, 3).reshape(b * n, c, h, w)
        for stage, g in zip(self.stages, guidance):
            y = stage(y, g)
        y = self.predictor(self.dropout(y))
        return y.reshape(b, n, *y.shape[-2:])
