"""Pixel-adaptive mask refinement (PAMR, Araslanov & Roth, CVPR 2020 "1-stage-wseg").

Each mask is repeatedly replaced by an affinity-weighted average of its values at the 8 neighbours
of every pixel at several dilations. The affinities come from the image only: for a neighbour k at
dilation d, a_k = mean_c(-|I_c - I_c,k| / (1e-8 + 0.1 sigma_c)), softmax over all neighbours, where
sigma_c is the unbiased standard deviation of channel c over the 3x3 samples (centre included) of all
dilations. Borders replicate. Affinities are computed once; the masks are propagated `iterations`
times. Used by TCL (10 iterations, dilations 1, 2, 4, 8, 12, 24) at the mask resolution.

PAMR is ill-conditioned on exactly flat image regions (sigma near 0 turns rounding noise into
affinity differences); that is the method, not a bug.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def _shifted(x: torch.Tensor, dilation: int, offsets: Sequence[tuple[int, int]]) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, len(offsets), H, W): x at (y + dy*d, x + dx*d), borders replicated."""
    h, w = x.shape[-2:]
    d = dilation
    padded = F.pad(x, (d, d, d, d), mode="replicate")
    return torch.stack([padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w] for dy, dx in offsets], 2)


class PAMR(nn.Module):
    """`PAMR(iterations, dilations)(image, masks)`: refine (B, N, h, w) masks with the (B, C, h, w)
    image at the same resolution (any per-channel affine normalisation of the image gives the same
    affinities up to the 1e-8 guard)."""

    def __init__(self, iterations: int = 10, dilations: Sequence[int] = (1, 2, 4, 8, 12, 24)) -> None:
        super().__init__()
        if iterations < 1 or not dilations or min(dilations) < 1:
            raise ValueError(f"PAMR needs iterations >= 1 and positive dilations, got {iterations}, {dilations}")
        self.iterations = int(iterations)
        self.dilations = tuple(int(d) for d in dilations)

    def affinity(self, image: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 1, 8 x len(dilations), h, w) weights summing to 1 over dim 2."""
        samples = torch.cat([_shifted(image, d, ((0, 0), *_NEIGHBOURS)) for d in self.dilations], 2)
        sigma = samples.std(dim=2, keepdim=True)  # unbiased, over 9 x len(dilations) samples
        diffs = torch.cat([_shifted(image, d, _NEIGHBOURS) for d in self.dilations], 2)
        diffs = (image.unsqueeze(2) - diffs).abs()
        return (-diffs / (1e-8 + 0.1 * sigma)).mean(1, keepdim=True).softmax(dim=2)

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if image.dim() != 4 or masks.dim() != 4 or image.shape[0] != masks.shape[0] or image.shape[-2:] != masks.shape[-2:]:
            raise ValueError(
                f"PAMR expects image (B, C, h, w) and masks (B, N, h, w) of one size, got {tuple(image.shape)} "
                f"and {tuple(masks.shape)}"
            )
        weights = self.affinity(image.to(masks.dtype))[:, :, :, None]  # (B, 1, K, 1, h, w)
        h, w = masks.shape[-2:]
        for _ in range(self.iterations):
            # Accumulated neighbour by neighbour: never materialises the (B, N, K, h, w) stack, which
            # for 150 classes is 48x the masks (the memory traffic, not the arithmetic, is the cost).
            refined = torch.zeros_like(masks)
            k = 0
            for d in self.dilations:
                padded = F.pad(masks, (d, d, d, d), mode="replicate")
                for dy, dx in _NEIGHBOURS:
                    window = padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w]
                    refined.addcmul_(window, weights[:, :, k, 0])
                    k += 1
            masks = refined
        return masks

    def extra_repr(self) -> str:
        return f"iterations={self.iterations}, dilations={self.dilations}"
