"""Fewer multiplications for the decoder's 3x3 convolutions at CPU inference (no autograd graph).

The gated decoder's convolutions (768 -> 768 channels, 3x3) at 56x56 and 112x112 are most of TCL's
test-time compute besides the ViT. Two exact rewrites cut their multiplications:

* `upsampled_conv3x3`: a 3x3 conv of a nearest-x2 map. Along one axis, output phase 0 at low-res
  position i is w0 x[i-1] + (w1 + w2) x[i] = (w0 + w1 + w2) x[i] + w0 (x[i-1] - x[i]) and phase 1 is
  (w0 + w1 + w2) x[i] + w2 (x[i+1] - x[i]): 3 products give both phases. In 2-D, 9 GEMMs at the low
  resolution give all 4 phases (instead of 4 phases x 4 taps = 16, or 36 at the high resolution).
* `winograd_conv3x3_`: Winograd F(2x2, 3x3) (Lavin & Gray, 2016): 16 GEMMs per 2x2 output tile
  instead of 9 taps per pixel (2.25x fewer products).

Both work on row bands, reusing one workspace, so that their transformed inputs stay small (the
decoder's memory peak stays below the direct convs'), and write `x + gate * (conv + bias)` straight
into the output; the kernels are transformed once per call and pre-scaled by the gate. Results equal
`F.conv2d` to float rounding (tests/tcl/test_modules.py, float64). Training and GPUs keep the direct convs
(`masker.GatedConvBlock._fewer_products` says why).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

# Rows of the per-axis transforms. Upsampled conv: (-, 0, +) terms (w0, w0 + w1 + w2, w2).
_PHASE_T = ((1.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.0, 0.0, 1.0))
# Winograd F(2, 3): G (kernel) and the input transform B^T (applied in `_winograd_input`).
_WINOGRAD_G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))

PreActivation = Callable[[torch.Tensor], torch.Tensor]


def _view(buffer: torch.Tensor, *shape: int) -> torch.Tensor:
    """The front of a flat workspace as a contiguous tensor of `shape`: bands reuse one allocation
    (fresh band-sized buffers each band leave the allocator's heap fragmented, raising peak RSS)."""
    return buffer[: math.prod(shape)].view(shape)


def _transform_kernels(weight: torch.Tensor, rows: tuple, gate: torch.Tensor) -> torch.Tensor:
    """gate * T w T^T for every (out, in) pair: (len(rows)^2, O, I), as one product (T kron T) @ taps
    that writes the result's layout directly (no intermediate of the kernels' size)."""
    t = weight.new_tensor(rows)
    taps = weight.reshape(-1, 9).t()  # (9, O * I), a transposed view
    return torch.mm(torch.kron(t, t), taps).mul_(gate).view(len(rows) ** 2, *weight.shape[:2])


def _padded_band(x: torch.Tensor, pre: PreActivation, top: int, bottom: int) -> torch.Tensor:
    """pre(x) on rows [top - 1, bottom + 1) of one (C, H, W) map, zero rows outside the map, one zero
    column on each side: the conv's padding (pre acts per pixel, so a band computes it exactly)."""
    height = x.shape[-2]
    above, below = max(top - 1, 0), min(bottom + 1, height)
    band = pre(x[None, :, above:below])[0]
    return F.pad(band, (1, 1, 1 - (top - above), 1 - (below - bottom)))


def upsampled_conv3x3(
    x: torch.Tensor, pre: PreActivation, weight: torch.Tensor, bias: torch.Tensor, gate: torch.Tensor,
    band_rows: int = 8,
) -> torch.Tensor:
    """nearest_x2(x) + gate * conv3x3(pre(nearest_x2(x))) for (B, C, H, W) x: (B, O, 2H, 2W).

    `pre` must act per pixel (it then commutes with nearest upsampling); the conv has zero padding 1.
    """
    b, channels, height, width = x.shape
    kernels = _transform_kernels(weight, _PHASE_T, gate)  # (9, O, C), (p, q) in {-, 0, +}^2
    shift = (gate * bias).view(-1, 1, 1)
    out = x.new_empty(b, weight.shape[0], 2 * height, 2 * width)
    rows_n = min(band_rows, height)
    u_space = x.new_empty(9 * channels * rows_n * width)
    m_space = x.new_empty(9 * weight.shape[0] * rows_n * width)
    for i in range(b):
        for top in range(0, height, band_rows):
            bottom = min(top + band_rows, height)
            n = bottom - top
            h = _padded_band(x[i], pre, top, bottom)  # (C, n + 2, W + 2)
            centre = h[:, 1 : n + 1]
            u = _view(u_space, 3, 3, channels, n, width)
            for p, r in enumerate((h[:, :n] - centre, centre, h[:, 2:] - centre)):
                mid = r[..., 1 : width + 1]
                torch.sub(r[..., :width], mid, out=u[p, 0])
                u[p, 1].copy_(mid)
                torch.sub(r[..., 2:], mid, out=u[p, 2])
            m = torch.bmm(kernels, u.view(9, channels, n * width), out=_view(m_space, 9, weight.shape[0], n * width))
            m = m.view(3, 3, -1, n, width)
            low = x[i, :, top:bottom] + shift  # every phase of nearest_x2(x) is x
            # phase a of an axis sums the terms (-, 0) for a = 0 and (0, +) for a = 1
            band = out[i, :, 2 * top : 2 * bottom].unflatten(1, (n, 2)).unflatten(3, (width, 2))
            for a, rows_a in enumerate((m[0].add_(m[1]), m[2].add_(m[1]))):  # in place: m[1] is read first
                for c in range(2):
                    torch.add(rows_a[c], rows_a[c + 1], out=band[:, :, a, :, c]).add_(low)
    return out


def _winograd_input(h: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """B^T d B of every 4x4 tile (stride 2) of a padded (C, 2n + 2, 2m + 2) band, into v (4, 4, C, n, m)."""
    tiles_h, tiles_w = v.shape[-2:]
    d = [h[:, k : k + 2 * tiles_h : 2] for k in range(4)]
    rows = (d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3])
    for a, r in enumerate(rows):
        e = [r[..., k : k + 2 * tiles_w : 2] for k in range(4)]
        torch.sub(e[0], e[2], out=v[a, 0])
        torch.add(e[1], e[2], out=v[a, 1])
        torch.sub(e[2], e[1], out=v[a, 2])
        torch.sub(e[1], e[3], out=v[a, 3])
    return v.view(16, h.shape[0], tiles_h * tiles_w)


def winograd_conv3x3_(
    x: torch.Tensor, pre: PreActivation, weight: torch.Tensor, bias: torch.Tensor, gate: torch.Tensor,
    band_rows: int = 8,
) -> torch.Tensor:
    """Adds gate * conv3x3(pre(x)) (zero padding 1, C = O channels) to (B, C, H, W) x in place and
    returns x: the residual then needs no second full-size map.

    `pre` must act per pixel. Bands run top to bottom; a band's pre-activation starts with the row above
    it, kept from the previous band before that row was overwritten. Odd sizes get one more zero row /
    column of padding (whole 2x2 tiles), whose outputs are dropped.
    """
    if band_rows % 2:
        raise ValueError(f"band_rows must be even (whole 2x2 output tiles), got {band_rows}")
    channels, height, width = x.shape[1:]
    kernels = _transform_kernels(weight, _WINOGRAD_G, gate)  # (16, O, C)
    shift = (gate * bias).view(-1, 1, 1)
    tiles_w = (width + 1) // 2
    tiles = min(band_rows, height + 1) // 2 * tiles_w
    v_space, m_space = x.new_empty(16 * channels * tiles), x.new_empty(16 * channels * tiles)
    y_space = x.new_empty(4 * channels * tiles)
    for image in x:
        above = image.new_zeros(channels, 1, width)  # pre(row top - 1); zero padding above the map
        for top in range(0, height, band_rows):
            bottom = min(top + band_rows, height)
            n, tiles_h = bottom - top, (bottom - top + 1) // 2
            h = torch.cat((above, pre(image[None, :, top : min(bottom + 1, height)])[0]), dim=1)
            above = h[:, n : n + 1].clone()  # pre(row bottom - 1), for the next band
            h = F.pad(h, (1, 2 * tiles_w + 1 - width, 0, 2 * tiles_h + 2 - h.shape[1]))
            v = _winograd_input(h, _view(v_space, 4, 4, channels, tiles_h, tiles_w))
            del h  # freed before the GEMM: the band's buffers are the decoder's memory peak
            m = torch.bmm(kernels, v, out=_view(m_space, 16, channels, tiles_h * tiles_w))
            m = m.view(4, 4, channels, tiles_h, tiles_w)
            # A^T M A with A^T = [[1, 1, 1, 0], [0, 1, -1, -1]], in place: m[a][c] is output (a, c) of every tile
            for r in (m, m[0], m[1]):
                r[0].add_(r[1]).add_(r[2])
                r[1].sub_(r[2]).sub_(r[3])
            y = _view(y_space, channels, tiles_h, 2, tiles_w, 2)
            y.copy_(m[:2, :2].permute(2, 3, 0, 4, 1))
            y = y.view(channels, 2 * tiles_h, 2 * tiles_w)
            image[:, top:bottom].add_(y[:, :n, :width].add_(shift))
    return x
