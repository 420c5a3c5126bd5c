"""CAT-Seg cost aggregation: cost volume, guidance projections, spatial (Swin) and class aggregation.

Layouts (batch-first, channel-last inside the aggregation layers):

- cost embedding ``x``: ``(B, N, H, W, C)`` — B images, N classes, an H x W grid, C channels;
- appearance guidance ``g``: ``(B, H, W, Cg)`` — shared by all classes of an image;
- text guidance ``t``: ``(B, N, Ct)``.

Guidance is never physically replicated per class or per pixel: every linear map applied to the
concatenation ``[x, g]`` is split into ``W_x x + W_g g`` and the guidance term is computed once per
image and broadcast. This is exact in real arithmetic (float differences ~1e-7).

Options for the pre-CVPR version as ported by mmsegmentation (``projects/CAT-Seg``); the defaults are
the correct computation, the switches reproduce the port's bugs because its checkpoints were trained
with them:

- ``port_guidance_tiling``: the port flattens cost rows batch-major (row ``b*T + t``) but replicates
  guidance with ``repeat(T, ...)``, so row ``r`` receives the guidance of image ``r mod B``: with
  batch > 1 the appearance, text and decoder guidance of the wrong image is used
  (:func:`port_guidance_index`). No effect with batch 1 (then skipped: the guidance stays shared).
- ``port_class_mlp_identity``: the port's class-aggregation MLP is an mmcv ``FFN`` with
  ``add_identity=True`` called on ``norm2(x)``, giving ``x + norm2(x) + MLP(norm2(x))``.
- ``decoder_dropout``: the port's ``Dropout2d(0.1)`` before the final conv (mmseg's decode-head default).

Inference on CPU runs in chunks (``chunk_tokens``): the per-class stages (cost embedding, spatial
aggregation, decoder) over groups of classes, the class aggregation over groups of pixels. Each stage is
independent across those groups, so the result is the same (float differences ~1e-7); what changes is that
no intermediate exceeds glibc's mmap threshold (32 MiB at most). Larger buffers are mapped fresh and
page-faulted on every allocation: at the official test setting (150 classes x 5 views) that was 17 million
faults and ~40 % of the forward's CPU time. Training and other devices keep one batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decoder import CATSegDecoder

__all__ = [
    "CPU_CHUNK_TOKENS",
    "CATSegAggregator",
    "GuidedLinear",
    "GuidedWindowAttention",
    "GuidedSwinBlock",
    "SpatialAggregation",
    "LinearClassAttention",
    "ClassAggregation",
    "AggregatorLayer",
    "cosine_cost_volume",
    "port_guidance_index",
    "select_top_classes",
    "shifted_window_mask",
]


# ----------------------------------------------------------------------------------------------
# helpers


class GuidedLinear(nn.Linear):
    """``Linear(in_features + guidance_features -> out)`` applied to ``cat([x, g], -1)``.

    The weight is stored exactly like the plain linear on the concatenation (so checkpoints map
    one to one); :meth:`forward` evaluates ``x`` and the guidance separately so that a guidance
    shared by many rows (all classes of an image, all pixels of an image) is projected once.
    """

    def __init__(self, in_features: int, guidance_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features + guidance_features, out_features, bias=bias)
        self.x_features = in_features
        self.guidance_features = guidance_features

    def project_x(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight[:, : self.x_features])

    def project_guidance(self, g: Tensor | None) -> Tensor | None:
        """Guidance term including the bias (``None`` guidance → bias only)."""
        if g is None:
            return self.bias
        return F.linear(g, self.weight[:, self.x_features :], self.bias)


def port_guidance_index(batch: int, repeats: int, device: torch.device | None = None) -> Tensor:
    """``(B, T)`` index of the image whose guidance the mmseg port gives to row ``b*T + t``.

    The port replicates a ``(B, ...)`` guidance with ``repeat(T, ...)`` (image-minor) while its rows
    are image-major, so row ``r = b*T + t`` gets image ``r mod B`` instead of ``b``.
    """
    return torch.arange(batch * repeats, device=device).remainder(batch).view(batch, repeats)


# Cost-embedding tokens (image x class x pixel) per inference chunk on CPU: 16 maps of a 24x24 grid keep
# the largest intermediate (the decoder's last stage, 48 x 96 x 96 floats per map) under 32 MiB.
CPU_CHUNK_TOKENS = 16 * 24 * 24


def _chunk_length(chunk_tokens: int, tokens_per_item: int, items: int) -> int:
    """How many of ``items`` (classes or pixels, ``tokens_per_item`` tokens each) go in one chunk; 0 = all."""
    if chunk_tokens <= 0:
        return items
    return min(items, max(1, chunk_tokens // tokens_per_item))


def _chunked(fn: Callable[[int, int], Tensor], total: int, length: int, dim: int) -> Tensor:
    """``cat([fn(i, i + length) ...], dim)`` over ``range(total)``, written into one preallocated output."""
    if length >= total:
        return fn(0, total)
    first = fn(0, length)
    out = first.new_empty(first.shape[:dim] + (total,) + first.shape[dim + 1 :])
    out.narrow(dim, 0, length).copy_(first)
    for start in range(length, total, length):
        stop = min(start + length, total)
        out.narrow(dim, start, stop - start).copy_(fn(start, stop))
    return out


def _class_slice(guidance: Tensor | None, start: int, stop: int, per_class_dim: int) -> Tensor | None:
    """Classes ``start:stop`` of a per-class guidance (``per_class_dim`` dims, class axis 1); a guidance
    shared by the classes (or None) is returned as is."""
    if guidance is None or guidance.dim() != per_class_dim:
        return guidance
    return guidance[:, start:stop]


def shifted_window_mask(height: int, width: int, window: int, shift: int, device=None) -> Tensor:
    """Additive mask ``(num_windows, window**2, window**2)`` of a cyclically shifted window layer.

    Standard Swin 3x3 region labelling; pairs from different regions get -100 (not -inf), exactly
    as in the official code. Windows are enumerated row-major.
    """
    labels = torch.zeros(height, width, device=device)
    cuts_h = (0, height - window, height - shift, height)
    cuts_w = (0, width - window, width - shift, width)
    region = 0
    for i in range(3):
        for j in range(3):
            labels[cuts_h[i] : cuts_h[i + 1], cuts_w[j] : cuts_w[j + 1]] = region
            region += 1
    windows = _partition(labels[None, :, :, None], window).flatten(1)  # (nW, window**2)
    diff = windows[:, None, :] - windows[:, :, None]
    return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))


def _partition(x: Tensor, window: int) -> Tensor:
    """``(B, H, W, C) -> (B * nW, window, window, C)``, windows row-major inside each image."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def _unpartition(windows: Tensor, window: int, height: int, width: int) -> Tensor:
    """Inverse of :func:`_partition`: ``(B * nW, window, window, C) -> (B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


# ----------------------------------------------------------------------------------------------
# spatial aggregation


class GuidedWindowAttention(nn.Module):
    """Window self-attention with appearance guidance, no relative position bias.

    ``q, k = Linear([x, g])``, ``v = Linear(x)``, softmax attention with scale ``head_dim**-0.5``
    (via :func:`F.scaled_dot_product_attention`), output projection.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = GuidedLinear(dim, guidance_dim, dim)
        self.k = GuidedLinear(dim, guidance_dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, g: Tensor | None, mask: Tensor | None) -> Tensor:
        """
        Args:
            x: ``(B, N, nW, T, C)`` normalised cost tokens per window (T = window**2).
            g: ``(B, 1, nW, T, Cg)`` normalised guidance shared across the N classes, ``(B, N, nW, T, Cg)``
                per class (the port's tiling), or None.
            mask: ``(nW, T, T)`` additive mask or None.
        Returns:
            ``(B, N, nW, T, C)``.
        """
        *lead, t, c = x.shape
        h = self.num_heads
        q = self.q.project_x(x) + self.q.project_guidance(g)
        k = self.k.project_x(x) + self.k.project_guidance(g)
        v = self.v(x)
        b, n, nw = lead
        # (B, N, nW, T, h, d) -> (B*N, nW*h, T, d): windows x heads act as the SDPA head axis, so the
        # per-window mask is a small (1, nW*h, T, T) tensor broadcast over images and classes.
        q, k, v = (
            y.reshape(b * n, nw, t, h, c // h).transpose(2, 3).reshape(b * n, nw * h, t, c // h) for y in (q, k, v)
        )
        attn_mask = None
        if mask is not None:
            attn_mask = mask[:, None].expand(nw, h, t, t).reshape(1, nw * h, t, t)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = out.reshape(b, n, nw, h, t, c // h).transpose(3, 4).reshape(b, n, nw, t, c)
        return self.proj(out)


class Mlp(nn.Module):
    """``fc1 -> activation -> fc2`` (timm ``Mlp`` layout)."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class GuidedSwinBlock(nn.Module):
    """Pre-norm (shifted-)window transformer block with appearance guidance on q and k.

    Follows the official modified Swin block: no relative position bias, no padding (the grid
    must be divisible by the window), shift mask value -100, exact-GELU MLP with ratio 4.
    """

    def __init__(
        self, dim: int, guidance_dim: int, num_heads: int, window_size: int, shift_size: int, mlp_ratio: float = 4.0
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = GuidedWindowAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._mask_cache: dict[tuple, Tensor] = {}

    def _geometry(self, height: int, width: int) -> tuple[int, int]:
        window, shift = self.window_size, self.shift_size
        if min(height, width) <= window:  # official rule: one window covering the grid, no shift
            window, shift = min(height, width), 0
        if height % window or width % window:
            raise ValueError(f"feature grid {height}x{width} is not divisible by the window {window}")
        return window, shift

    def _mask(self, height: int, width: int, window: int, shift: int, ref: Tensor) -> Tensor | None:
        if shift == 0:
            return None
        key = (height, width, window, shift, ref.device, ref.dtype)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = shifted_window_mask(height, width, window, shift, device=ref.device).to(ref.dtype)
            self._mask_cache[key] = mask
        return mask

    def _to_windows(self, x: Tensor, window: int, shift: int) -> Tensor:
        """``(B, M, H, W, C) -> (B, M, nW, window**2, C)`` after the cyclic shift."""
        b, m, h, w, c = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(2, 3))
        x = _partition(x.reshape(b * m, h, w, c), window)
        return x.reshape(b, m, -1, window * window, c)

    def _from_windows(self, x: Tensor, window: int, shift: int, height: int, width: int) -> Tensor:
        b, m, _, _, c = x.shape
        x = _unpartition(x.reshape(-1, window, window, c), window, height, width)
        x = x.reshape(b, m, height, width, c)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(2, 3))
        return x

    def forward(self, x: Tensor, g: Tensor | None) -> Tensor:
        """
        Args:
            x: ``(B, N, H, W, C)``.
            g: ``(B, H, W, Cg)`` normalised appearance guidance, ``(B, N, H, W, Cg)`` per class, or None.
        """
        _, _, h, w, _ = x.shape
        window, shift = self._geometry(h, w)
        xw = self._to_windows(self.norm1(x), window, shift)
        if g is not None and g.dim() == 4:
            g = g[:, None]
        gw = self._to_windows(g, window, shift) if g is not None else None
        attn = self.attn(xw, gw, self._mask(h, w, window, shift, x))
        x = x + self._from_windows(attn, window, shift, h, w)
        return x + self.mlp(self.norm2(x))


class SpatialAggregation(nn.Module):
    """Two guided Swin blocks (shift 0, then shift window//2) sharing one guidance LayerNorm."""

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, window_size: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shift_size=0),
                GuidedSwinBlock(dim, guidance_dim, num_heads, window_size, shift_size=window_size // 2),
            ]
        )
        self.guidance_norm = nn.LayerNorm(guidance_dim) if guidance_dim > 0 else None

    def forward(self, x: Tensor, g: Tensor | None) -> Tensor:
        if g is not None:
            g = self.guidance_norm(g)
        for block in self.blocks:
            x = block(x, g)
        return x


# ----------------------------------------------------------------------------------------------
# class aggregation


class LinearClassAttention(nn.Module):
    """Multi-head linear attention (Katharopoulos et al.) over the class axis, no output projection.

    ``phi(u) = elu(u) + 1``; values are divided by the sequence length S before the key-value
    product and the result multiplied by S again (official fp16 guard, kept for parity);
    normaliser epsilon 1e-6.
    """

    def __init__(self, dim: int, guidance_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.eps = eps
        self.q = GuidedLinear(dim, guidance_dim, dim)
        self.k = GuidedLinear(dim, guidance_dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(
        self, x: Tensor, g: Tensor | None, pad_x: Tensor | None = None, pad_g: Tensor | None = None, num_pad: int = 0
    ) -> Tensor:
        """
        Args:
            x: ``(B, P, N, C)`` normalised tokens; P pixels per image, N classes.
            g: ``(B, 1, N, Ct)`` text guidance shared by all pixels of an image, ``(B, P, N, Ct)`` per
                pixel (the port's tiling), or None.
            pad_x, pad_g, num_pad: the normalised padding token ``(C,)``, its guidance ``(Ct,)`` and how
                many copies pad the class sequence to its fixed length. Padding positions are identical
                at every pixel, so they enter only as keys/values and in closed form
                (``num_pad`` x one key/value) instead of as ``num_pad`` materialised tokens; their
                query outputs are never needed (the official code discards them).
        Returns:
            ``(B, P, N, C)`` attention outputs of the N real tokens.
        """
        *lead, n, c = x.shape
        h = self.num_heads
        s = n + num_pad  # sequence length of the official padded sequence
        q = self.q.project_x(x) + self.q.project_guidance(g)
        k = self.k.project_x(x) + self.k.project_guidance(g)
        v = self.v(x)
        q, k, v = (y.reshape(*lead, n, h, c // h) for y in (q, k, v))
        q = F.elu(q) + 1.0
        k = F.elu(k) + 1.0
        v = v / s
        kv = torch.einsum("...shd,...she->...hde", k, v)
        k_sum = k.sum(dim=-3)
        if num_pad:
            kp = F.elu(self.k.project_x(pad_x) + self.k.project_guidance(pad_g)) + 1.0
            kp = kp.reshape(h, c // h)
            vp = (self.v(pad_x) / s).reshape(h, c // h)
            kv = kv + num_pad * torch.einsum("hd,he->hde", kp, vp)
            k_sum = k_sum + num_pad * kp
        z = 1.0 / (torch.einsum("...lhd,...hd->...lh", q, k_sum) + self.eps)
        out = torch.einsum("...lhd,...hde->...lhe", q, kv) * (z[..., None] * s)
        return out.reshape(*lead, n, c)


class ClassAggregation(nn.Module):
    """Class-axis transformer layer on a (optionally) pooled cost volume.

    Pools the grid (``AvgPool2d(pooling_size)``), pads the class axis to ``pad_len`` with a learned
    token (and learned text guidance) when there are fewer classes, applies pre-norm linear
    attention + ReLU MLP, upsamples back with bilinear ``align_corners=True`` and adds the result
    to the input (residual around the whole layer). The padding is evaluated in closed form (see
    :class:`LinearClassAttention`): same result as the official materialised padding, cost O(N)
    instead of O(pad_len). ``port_guidance_tiling`` / ``port_class_mlp_identity``: see the module docstring.
    """

    def __init__(
        self,
        dim: int,
        guidance_dim: int,
        num_heads: int,
        pooling_size: Sequence[int] | None = (2, 2),
        pad_len: int = 256,
        port_guidance_tiling: bool = False,
        port_class_mlp_identity: bool = False,
    ):
        super().__init__()
        self.pooling_size = tuple(pooling_size) if pooling_size is not None else None
        self.pad_len = pad_len
        self.port_guidance_tiling = port_guidance_tiling
        self.port_class_mlp_identity = port_class_mlp_identity
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LinearClassAttention(dim, guidance_dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * 4, act=nn.ReLU)
        self.pad_token = nn.Parameter(torch.zeros(dim)) if pad_len > 0 else None
        self.pad_guidance = nn.Parameter(torch.zeros(guidance_dim)) if pad_len > 0 and guidance_dim > 0 else None

    def _pool(self, x: Tensor) -> Tensor:
        """``(B, N, H, W, C) -> (B, N, h, w, C)``."""
        if self.pooling_size is None or self.pooling_size == (1, 1):
            return x
        b, n, h, w, c = x.shape
        y = F.avg_pool2d(x.reshape(b * n, h, w, c).permute(0, 3, 1, 2), self.pooling_size)
        return y.permute(0, 2, 3, 1).reshape(b, n, *y.shape[-2:], c)

    def forward(self, x: Tensor, t: Tensor | None, chunk_tokens: int = 0) -> Tensor:
        """
        Args:
            x: ``(B, N, H, W, C)`` cost embedding.
            t: ``(B, N, Ct)`` projected text guidance, or None.
            chunk_tokens: pixels are mixed in chunks of about this many tokens (0: all at once).
        """
        b, n, h, w, c = x.shape
        y = self._pool(x)
        hp, wp = y.shape[2:4]
        tokens = y.reshape(b, n, hp * wp, c)
        num_pad = self.pad_len - n if self.pad_token is not None and n < self.pad_len else 0
        pad_x = self.norm1(self.pad_token[None])[0] if num_pad else None
        pad_g = self.pad_guidance if num_pad and t is not None else None
        if t is not None:  # one image: the port's tiling is the identity, so the guidance stays shared
            t = t[port_guidance_index(b, hp * wp, t.device)] if self.port_guidance_tiling and b > 1 else t[:, None]

        def mix(start: int, stop: int) -> Tensor:
            """Class mixing at pixels ``start:stop``: ``(B, N, p, C)``."""
            yi = tokens[:, :, start:stop].transpose(1, 2)  # (B, p, N, C)
            ti = t if t is None or t.shape[1] == 1 else t[:, start:stop]
            yi = yi + self.attn(self.norm1(yi), ti, pad_x, pad_g, num_pad)
            z = self.norm2(yi)
            # per token: padded positions would be discarded, so never computed
            yi = yi + z + self.mlp(z) if self.port_class_mlp_identity else yi + self.mlp(z)
            return yi.transpose(1, 2)

        y = _chunked(mix, hp * wp, _chunk_length(chunk_tokens, b * n, hp * wp), dim=2).reshape(b, n, hp, wp, c)
        if (hp, wp) != (h, w):
            y = y.permute(0, 1, 4, 2, 3).reshape(b * n, c, hp, wp)
            y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True)
            y = y.reshape(b, n, c, h, w).permute(0, 1, 3, 4, 2)
        return x + y


class AggregatorLayer(nn.Module):
    """Spatial aggregation (Swin pair) followed by class aggregation."""

    def __init__(
        self,
        dim: int,
        appearance_dim: int,
        text_dim: int,
        num_heads: int,
        window_size: int,
        pooling_size: Sequence[int] | None,
        pad_len: int,
        port_guidance_tiling: bool = False,
        port_class_mlp_identity: bool = False,
    ):
        super().__init__()
        self.spatial = SpatialAggregation(dim, appearance_dim, num_heads, window_size)
        self.classes = ClassAggregation(
            dim, text_dim, num_heads, pooling_size, pad_len, port_guidance_tiling, port_class_mlp_identity
        )

    def forward(self, x: Tensor, g: Tensor | None, t: Tensor | None, chunk_tokens: int = 0) -> Tensor:
        """``chunk_tokens``: the spatial aggregation runs over chunks of classes, the class aggregation over
        chunks of pixels, of about this many tokens each (0: one chunk)."""
        b, n, h, w, _ = x.shape
        classes = _chunk_length(chunk_tokens, b * h * w, n)
        x = _chunked(lambda i, j: self.spatial(x[:, i:j], _class_slice(g, i, j, 5)), n, classes, dim=1)
        return self.classes(x, t, chunk_tokens)


# ----------------------------------------------------------------------------------------------
# cost volume and class selection


def cosine_cost_volume(image: Tensor, text: Tensor) -> Tensor:
    """Cosine similarity between every pixel embedding and every class embedding.

    Args:
        image: ``(B, E, H, W)`` dense image embeddings (not normalised).
        text: ``(N, P, E)`` shared by the batch, or ``(B, N, P, E)`` per image (not normalised).
    Returns:
        ``(B, N, P, H, W)``.
    """
    image = F.normalize(image, dim=1)
    text = F.normalize(text, dim=-1)
    if text.dim() == 3:
        return torch.einsum("behw,npe->bnphw", image, text)
    return torch.einsum("behw,bnpe->bnphw", image, text)


def select_top_classes(cost: Tensor, k: int) -> Tensor:
    """Indices ``(B, k)`` of the k classes with the highest max-over-(prompt, pixel) cosine score.

    Indices are returned in ascending class order (the official ``topk(sorted=False)`` order is
    unspecified; the aggregation is equivariant to the class order).
    """
    return class_scores(cost).topk(k, dim=-1).indices.sort(dim=-1).values


def class_scores(cost: Tensor) -> Tensor:
    """The ranking score used by :func:`select_top_classes`: ``(B, N)``."""
    return cost.flatten(2).amax(dim=-1)


# ----------------------------------------------------------------------------------------------
# the whole head


class CATSegAggregator(nn.Module):
    """Cost volume -> embedding -> ``num_layers`` x (spatial + class aggregation) -> decoder.

    Args:
        text_dim: dimension E of the text embeddings (CLIP embed dim; 512 for ViT-B/16).
        appearance_dim: channels of the appearance guidance input (the dense CLIP embedding E, or the
            feature backbone's res4 channels in the pre-CVPR version).
        decoder_guidance_dims: channels of the decoder guidance inputs (outputs of the tap upsamplers).
        prompt_channels: P, templates per class (1 for CAT-Seg's "single" ensemble).
        pad_len: fixed class-sequence length of the class aggregation (pad with a learned token when
            N < pad_len; keep the top-pad_len classes and fill the others with ``fill_value`` when N > pad_len).
            0 disables both (pre-CVPR version, mmseg port).
        port_guidance_tiling, port_class_mlp_identity, decoder_dropout: the mmseg port's bugs, off by
            default (module docstring).
        chunk_tokens: inference (no autograd) runs in chunks of about this many cost-embedding tokens
            (module docstring); None: :data:`CPU_CHUNK_TOKENS` on CPU and one chunk on other devices; 0: one chunk.
    """

    def __init__(
        self,
        *,
        text_dim: int,
        appearance_dim: int,
        prompt_channels: int = 1,
        hidden_dim: int = 128,
        text_proj_dim: int = 128,
        appearance_proj_dim: int = 128,
        decoder_dims: Sequence[int] = (64, 32),
        decoder_guidance_dims: Sequence[int] = (256, 128),
        decoder_guidance_proj_dims: Sequence[int] = (32, 16),
        num_layers: int = 2,
        num_heads: int = 4,
        window_size: int = 12,
        pooling_size: Sequence[int] | None = (2, 2),
        pad_len: int = 256,
        fill_value: float = -100.0,
        port_guidance_tiling: bool = False,
        port_class_mlp_identity: bool = False,
        decoder_dropout: float = 0.0,
        chunk_tokens: int | None = None,
    ):
        super().__init__()
        self.pad_len = pad_len
        self.chunk_tokens = chunk_tokens
        self.port_guidance_tiling = port_guidance_tiling
        self.fill_value = fill_value
        self.corr_embed = nn.Conv2d(prompt_channels, hidden_dim, kernel_size=7, padding=3)
        self.appearance_proj = (
            nn.Conv2d(appearance_dim, appearance_proj_dim, kernel_size=3, padding=1) if appearance_dim > 0 else None
        )
        self.text_proj = nn.Linear(text_dim, text_proj_dim) if text_dim > 0 else None
        self.decoder_guidance_proj = nn.ModuleList(
            nn.Conv2d(d, dp, kernel_size=3, padding=1)
            for d, dp in zip(decoder_guidance_dims, decoder_guidance_proj_dims)
        )
        self.layers = nn.ModuleList(
            AggregatorLayer(
                hidden_dim,
                appearance_proj_dim if appearance_dim > 0 else 0,
                text_proj_dim if text_dim > 0 else 0,
                num_heads,
                window_size,
                pooling_size,
                pad_len,
                port_guidance_tiling,
                port_class_mlp_identity,
            )
            for _ in range(num_layers)
        )
        self.decoder = CATSegDecoder(hidden_dim, decoder_dims, decoder_guidance_proj_dims, dropout=decoder_dropout)

    def set_pooling_size(self, pooling_size: Sequence[int] | None) -> None:
        """Spatial pooling of the class aggregation (official: 2x2 for training, 1x1 for testing)."""
        for layer in self.layers:
            layer.classes.pooling_size = tuple(pooling_size) if pooling_size is not None else None

    def inference_chunk_tokens(self, ref: Tensor) -> int:
        """The chunk size in effect for a forward on ``ref``'s device (0: one chunk)."""
        if torch.is_grad_enabled():
            return 0  # autograd keeps every intermediate anyway: chunks would only add steps
        if self.chunk_tokens is None:
            return CPU_CHUNK_TOKENS if ref.device.type == "cpu" else 0
        return self.chunk_tokens

    def forward(
        self,
        image_embed: Tensor,
        text_embed: Tensor,
        decoder_guidance: Sequence[Tensor],
        *,
        appearance: Tensor | None = None,
        return_info: bool = False,
    ):
        """
        Args:
            image_embed: ``(B, E, H, W)`` dense CLIP embedding (also the appearance guidance input unless
                ``appearance`` is given).
            text_embed: ``(N, P, E)`` class embeddings shared by the batch (or ``(B, N, P, E)``).
            decoder_guidance: the decoder guidance inputs, one ``(B, C_i, H_i, W_i)`` per stage.
            appearance: ``(B, C, H, W)`` appearance guidance input (pre-CVPR: the feature backbone's res4).
        Returns:
            logits ``(B, N, 4H, 4W)``; with ``return_info`` also a dict with ``class_scores`` (B, N)
            and ``selected`` (B, pad_len) class indices (None when no selection happened).
        """
        b = image_embed.shape[0]
        cost = cosine_cost_volume(image_embed, text_embed)  # (B, N, P, H, W)
        num_classes = cost.shape[1]
        text = F.normalize(text_embed, dim=-1)
        if text.dim() == 3:
            text = text.expand(b, *text.shape)
        selected = scores = None
        if self.pad_len > 0 and num_classes > self.pad_len:
            scores = class_scores(cost)  # (B, N)
            selected = scores.topk(self.pad_len, dim=-1).indices.sort(dim=-1).values  # (B, K), ascending
            cost = cost.gather(1, selected[:, :, None, None, None].expand(-1, -1, *cost.shape[2:]))
            text = text.gather(1, selected[:, :, None, None].expand(-1, -1, *text.shape[2:]))

        _, n, p, h, w = cost.shape
        chunk = self.inference_chunk_tokens(cost)
        classes = _chunk_length(chunk, b * h * w, n)
        x = _chunked(lambda i, j: self._embed(cost[:, i:j]), n, classes, dim=1)  # (B, N, H, W, C)

        g = None
        if self.appearance_proj is not None:
            appearance = image_embed if appearance is None else appearance
            g = F.relu(self.appearance_proj(appearance)).permute(0, 2, 3, 1)  # (B, H, W, Cg)
            if self.port_guidance_tiling and b > 1:  # with one image the tiling is the identity
                g = g[port_guidance_index(b, n, g.device)]  # (B, N, H, W, Cg)
        t = None
        if self.text_proj is not None:
            t = F.normalize(text.mean(dim=-2), dim=-1)
            t = F.relu(self.text_proj(t))  # (B, N, Ct)
        dec_guidance = [F.relu(proj(gi)) for proj, gi in zip(self.decoder_guidance_proj, decoder_guidance)]
        if self.port_guidance_tiling and b > 1:
            dec_guidance = [gi[port_guidance_index(b, n, gi.device)] for gi in dec_guidance]  # (B, N, g, H, W)
        dec_guidance += [None] * (len(self.decoder.stages) - len(dec_guidance))

        for layer in self.layers:
            x = layer(x, g, t, chunk)
        logits = _chunked(
            lambda i, j: self.decoder(x[:, i:j], [_class_slice(gi, i, j, 5) for gi in dec_guidance]), n, classes, dim=1
        )

        if selected is not None:
            full = logits.new_full((b, num_classes, *logits.shape[-2:]), self.fill_value)
            logits = full.scatter(1, selected[:, :, None, None].expand_as(logits), logits)
        if return_info:
            return logits, {"class_scores": scores, "selected": selected}
        return logits

    def _embed(self, cost: Tensor) -> Tensor:
        """``(B, n, P, H, W)`` cost volume -> ``(B, n, H, W, C)`` cost embedding."""
        b, n, p, h, w = cost.shape
        x = self.corr_embed(cost.reshape(b * n, p, h, w))
        return x.reshape(b, n, -1, h, w).permute(0, 1, 3, 4, 2)
