"""TCL's trainable "grounder" parts (spec tcl.md 1.3): the gated upsampling decoder, the dense
projection and the similarity-to-mask head. The copied last CLIP block is an open_clip
`ResidualAttentionBlock` held by the meta-architecture (`masker_block`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fast_conv import upsampled_conv3x3, winograd_conv3x3_


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of every pixel of a (B, C, H, W) map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GatedConvBlock(nn.Module):
    """Pre-activation conv: LN(channels) -> GELU -> 3x3 conv, scaled by tanh(gate); the gate starts
    at 0, so a fresh decoder is pure nearest upsampling."""

    # `residual` works on bands of this many rows: at the 112x112 stage of a 448 crop the normalised,
    # activated and convolved maps then never exist at full size (the decoder's memory peak).
    band_rows = 32

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = ChannelLayerNorm(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.gate = nn.Parameter(torch.zeros(()))

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.norm(x))

    @staticmethod
    def _fewer_products(x: torch.Tensor) -> bool:
        """The `fast_conv` rewrites serve CPU inference. Training keeps the direct convs (far less saved
        for backward); so does a GPU, where cuDNN has its own fast algorithms and the bands' many small
        kernels would cost launches (not measured: no GPU here)."""
        return not torch.is_grad_enabled() and x.device.type == "cpu"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place on the fresh conv output: one full-resolution tensor less (autograd keeps what it needs).
        return self.conv(self._pre_activation(x)).mul_(self.gate.tanh())

    def residual(self, x: torch.Tensor, overwrite_input: bool = False) -> torch.Tensor:
        """x + forward(x), computed in bands of `band_rows` rows: LN and GELU act per pixel and the conv
        needs one row of context on each side (zero rows at the border, its padding).

        At CPU inference the conv is a Winograd F(2x2, 3x3) (`fast_conv`, 2.25x fewer products), and
        with `overwrite_input` (the caller no longer needs x) the result is written into x.
        """
        if self._fewer_products(x):
            out = x if overwrite_input else x.clone()
            return winograd_conv3x3_(out, self._pre_activation, self.conv.weight, self.conv.bias, self.gate.tanh())
        height = x.shape[-2]
        if height <= self.band_rows:
            return self.forward(x).add_(x)
        gate = self.gate.tanh()
        out = torch.empty_like(x)
        for top in range(0, height, self.band_rows):
            bottom = min(top + self.band_rows, height)
            above, below = max(top - 1, 0), min(bottom + 1, height)
            h = F.pad(self._pre_activation(x[:, :, above:below]), (0, 0, 1 - (top - above), 1 - (below - bottom)))
            band = F.conv2d(h, self.conv.weight, self.conv.bias, padding=(0, 1))
            out[:, :, top:bottom] = band.mul_(gate).add_(x[:, :, top:bottom])
        return out

    def upsampled_residual(self, x: torch.Tensor) -> torch.Tensor:
        """`residual(nearest_x2(x))` computed at the resolution of x (about 2.3x fewer operations), each
        output phase written once: neither the upsampled map nor the gated branch is materialised.

        LN and GELU act per pixel, so they commute with nearest upsampling. A 3x3 conv (zero padding 1)
        of a nearest-x2 map is, for each of the 4 output phases (a, b), a 2x2 conv of the low-resolution
        map whose taps are the 3x3 taps summed over the high-resolution pixels that share a
        low-resolution source: along one axis, phase 0 takes (w0, w1 + w2) at offsets (-1, 0), phase 1
        takes (w0 + w1, w2) at offsets (0, +1). The zero padding maps to zero padding. Every phase of
        nearest_x2(x) is x itself. At CPU inference the 4 phases share their products
        (`fast_conv.upsampled_conv3x3`: 9 GEMMs instead of 16).
        """
        if self._fewer_products(x):
            return upsampled_conv3x3(x, self._pre_activation, self.conv.weight, self.conv.bias, self.gate.tanh())
        h = F.pad(self._pre_activation(x), (1, 1, 1, 1))
        gate = self.gate.tanh()
        w = self.conv.weight
        b, _, height, width = x.shape
        out = x.new_empty(b, w.shape[0], 2 * height, 2 * width)
        for a in range(2):  # kernels built one phase at a time (each is about as large as the conv weight)
            row_taps = _phase_taps(w, a, dim=2)  # (O, I, 2, 3)
            for c in range(2):
                kernel = _phase_taps(row_taps, c, dim=3)  # (O, I, 2, 2)
                window = h[:, :, a : a + height + 1, c : c + width + 1]
                out[:, :, a::2, c::2] = F.conv2d(window, kernel, self.conv.bias).mul_(gate).add_(x)
        return out


def _phase_taps(w: torch.Tensor, phase: int, dim: int) -> torch.Tensor:
    """3 taps along `dim` -> the 2 taps of nearest-x2 output phase 0 (w0, w1 + w2) or 1 (w0 + w1, w2)."""
    t0, t1, t2 = w.unbind(dim)
    return torch.stack((t0, t1 + t2) if phase == 0 else (t0 + t1, t2), dim)


class UpsampleResConv(nn.Module):
    """Nearest x2, then two residual gated convs (the official `ResConv` with double=True)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = GatedConvBlock(channels)
        self.conv2 = GatedConvBlock(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2.residual(self.conv.upsampled_residual(x), overwrite_input=True)


class GatedUpsampleDecoder(nn.Sequential):
    """`stages` x (nearest x2 + two gated residual convs): (B, C, h, w) -> (B, C, h*2^s, w*2^s)."""

    def __init__(self, channels: int, stages: int = 2) -> None:
        super().__init__(*(UpsampleResConv(channels) for _ in range(stages)))


class Sim2Mask(nn.Module):
    """Masks from cosine similarities: sigmoid(w * s + b) with learnable scalars (init 10, -2.5)."""

    def __init__(self, init_w: float = 10.0, init_b: float = -2.5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(float(init_w)))
        self.b = nn.Parameter(torch.tensor(float(init_b)))

    def forward(self, similarity: torch.Tensor) -> torch.Tensor:
        """Logits w * s + b."""
        return similarity * self.w + self.b


def gumbel_sigmoid_hard(logits: torch.Tensor, uniform: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Straight-through hard mask: y = sigmoid((logits + log(u / (1 - u))) / tau), forward 1[y > 0.5],
    backward the gradient of y. `uniform` holds u ~ U[0, 1) of the logits' shape."""
    y = ((logits + torch.log(uniform / (1 - uniform))) / tau).sigmoid()
    return (y > 0.5).to(y.dtype) - y.detach() + y


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """mean |horizontal differences| + mean |vertical differences| of (..., H, W)."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
