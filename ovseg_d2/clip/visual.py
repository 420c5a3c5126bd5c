"""Dense, any-resolution token runner for ViT backbones (open_clip CLIP towers and timm ViTs).

The backbones only expose pooled or fixed-resolution outputs. The methods need: any input size (the
positional table resized without antialiasing, as the official code bases do), a batch-first block
loop with taps, per-block replacements (dense last blocks), a hook before every block (prompt tokens),
an attention mask passed through, and the final norm (+ projection) on every token.

`ViTTokenRunner` holds that machinery once; a subclass per backbone family says where the parts are
(patch embedding, prefix tokens, positional table, blocks, norms). The wrapped backbone stays a
submodule named `visual`, so its state-dict keys keep their names under `visual.` (open_clip's
`visual.*` for CLIP towers).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn


class BlockOverride(Protocol):
    """Replacement for one block's forward: receives the block, batch-first x (B, L, W) and the
    run's additive attention mask (or None); returns the new x."""

    def __call__(self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor: ...


# pre_block(i, x) -> x, called before block i (non-negative index) on batch-first x; may change L.
PreBlockHook = Callable[[int, torch.Tensor], torch.Tensor]

_POS_MODES = ("bicubic", "bilinear")


def interpolate_positional_embedding(
    table: torch.Tensor,
    src_grid: tuple[int, int],
    dst_grid: tuple[int, int],
    mode: str = "bicubic",
    prefix_rows: int = 1,
) -> torch.Tensor:
    """Resize a (prefix_rows + h*w, W) table (prefix rows first, grid row-major) to another grid.

    The prefix rows (class / register tokens; none for tables without a class row) are kept; the grid
    part is reshaped to (1, W, h, w), resized with `F.interpolate` (align_corners=False,
    antialias=False: CAT-Seg, TCL, Cascade-CLIP, SAZS and OVSegmentor all use this exact call, unlike
    open_clip's and timm's antialiased resamplers) and flattened back row-major.
    """
    if mode not in _POS_MODES:
        raise ValueError(f"pos_interpolation must be one of {_POS_MODES}, got {mode!r}")
    (sh, sw), (dh, dw) = src_grid, dst_grid
    if table.ndim != 2 or table.shape[0] != prefix_rows + sh * sw:
        raise ValueError(
            f"Positional table of shape {tuple(table.shape)} is not ({prefix_rows} + {sh}*{sw}, width)"
        )
    if (sh, sw) == (dh, dw):
        return table
    width = table.shape[1]
    grid = table[prefix_rows:].reshape(1, sh, sw, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dh, dw), mode=mode, align_corners=False, antialias=False)
    return torch.cat([table[:prefix_rows], grid.permute(0, 2, 3, 1).reshape(dh * dw, width)], dim=0)


@dataclass
class VisualFeatures:
    """Output of `ViTTokenRunner.forward`. Patch tokens are the LAST h*w tokens of every sequence
    (class / register tokens, and prompt tokens where a method inserts them, come first)."""

    tokens: torch.Tensor  # (B, L, E): final norm (+ projection) on every token
    taps: dict[int, torch.Tensor] = field(default_factory=dict)  # block outputs (B, L, W), raw residual stream
    grid: tuple[int, int] = (0, 0)  # (h, w) patch grid

    def dense(self) -> torch.Tensor:
        """(B, E, h, w) projected patch embeddings (not normalised)."""
        return tokens_to_map(self.tokens, self.grid)

    def tap_map(self, index: int) -> torch.Tensor:
        """(B, W, h, w) patch part of tap `index` (keyed as requested in `taps`)."""
        return tokens_to_map(self.taps[index], self.grid)


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, L, C) with the patch tokens last, row-major -> (B, C, h, w)."""
    h, w = grid
    return tokens[:, -h * w :].transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


class ViTTokenRunner(nn.Module, ABC):
    """embed -> run_blocks -> project over a ViT kept as `self.visual`; subclasses locate the parts.

    Token layout: [prefix tokens (class, registers), patches]. The positional table is 2-D
    (`table_prefix_rows` + h*w, W): with prefix rows (CLIP, original timm) it is added after the prefix
    tokens are prepended; without (timm `no_embed_class`, GroupViT-style tables) it is added to the
    patches only.
    """

    def __init__(self, visual: nn.Module, pos_interpolation: str = "bicubic"):
        super().__init__()
        if pos_interpolation not in _POS_MODES:
            raise ValueError(f"pos_interpolation must be one of {_POS_MODES}, got {pos_interpolation!r}")
        self.visual = visual
        self.pos_interpolation = pos_interpolation
        # Frozen-table resizes, keyed by everything that changes the result (see resized_positional_embedding).
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.pos_cache_misses = 0  # number of resizes actually computed for a frozen table (tests, profiling)
        prefix = self.prefix_tokens()
        n_prefix = 0 if prefix is None else prefix.shape[0]
        if self.table_prefix_rows not in (0, n_prefix):
            raise ValueError(
                f"{type(visual).__name__}: the positional table has {self.table_prefix_rows} prefix rows but the "
                f"model has {n_prefix} prefix tokens (expected 0 or {n_prefix})"
            )
        _ = self.table_grid  # raises now, not at the first forward, if the table's rows fit no grid

    # ---------------------------------------------------------------- family interface
    @property
    @abstractmethod
    def patch_size(self) -> tuple[int, int]: ...

    @property
    @abstractmethod
    def blocks(self) -> Sequence[nn.Module]: ...

    @property
    @abstractmethod
    def positional_parameter(self) -> torch.Tensor:
        """The stored positional parameter (rows x width, leading singleton dims allowed)."""

    @property
    @abstractmethod
    def table_prefix_rows(self) -> int:
        """Rows of the positional table that belong to prefix tokens (0 or the number of prefix tokens)."""

    @abstractmethod
    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, h*w, W) patch tokens, row-major."""

    @abstractmethod
    def prefix_tokens(self) -> torch.Tensor | None:
        """(P, W) learned tokens put before the patches (class token first), or None."""

    @abstractmethod
    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        """What runs between the positional embedding and the first block."""

    @abstractmethod
    def call_block(self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor: ...

    @abstractmethod
    def post_norm(self, x: torch.Tensor) -> torch.Tensor: ...

    @property
    def projection(self) -> torch.Tensor | None:
        """(W, E) matrix applied after `post_norm`, or None."""
        return None

    def native_grid(self) -> tuple[int, int] | None:
        """The grid the backbone was built for, when it records one (disambiguates non-square tables)."""
        return None

    # ---------------------------------------------------------------- geometry
    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def positional_table(self) -> torch.Tensor:
        """The stored table as a 2-D (rows, W) view (gradients reach the parameter)."""
        param = self.positional_parameter
        return param if param.ndim == 2 else param.reshape(-1, param.shape[-1])

    @property
    def table_grid(self) -> tuple[int, int]:
        """Grid of the stored positional table (the pretraining / build resolution)."""
        n = self.positional_table.shape[0] - self.table_prefix_rows
        grid = self.native_grid()
        if grid is not None and len(grid) == 2 and grid[0] * grid[1] == n:
            return tuple(grid)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f"Cannot infer the grid of a positional table with {n} patch rows")
        return side, side

    def grid_for(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        (h, w), (ph, pw) = image_hw, self.patch_size
        if h % ph or w % pw:
            raise ValueError(f"Input size {h}x{w} is not divisible by the patch size {ph}x{pw}")
        return h // ph, w // pw

    # ---------------------------------------------------------------- embedding
    def resized_positional_embedding(self, grid_hw: tuple[int, int]) -> torch.Tensor:
        """(prefix rows + h*w, W) positional table for `grid_hw`.

        A frozen table is resized once per grid and served from a cache keyed by (grid, mode, device,
        dtype, parameter identity and `_version`): in-place updates (load_state_dict, optimizer steps)
        bump `_version` and invalidate it. A trainable table is resized on every call so gradients flow.
        """
        param, table = self.positional_parameter, self.positional_table
        grid_hw = tuple(grid_hw)
        if grid_hw == self.table_grid:
            return table
        resize = (self.table_grid, grid_hw, self.pos_interpolation, self.table_prefix_rows)
        if param.requires_grad:
            return interpolate_positional_embedding(table, *resize)
        weights_key = (id(param), param._version, param.data_ptr())
        key = (grid_hw, self.pos_interpolation, param.device, param.dtype, weights_key)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = interpolate_positional_embedding(table, *resize)
            self._pos_cache = {k: v for k, v in self._pos_cache.items() if k[4] == weights_key}
            self._pos_cache[key] = cached
            self.pos_cache_misses += 1
        return cached

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, P + h*w, W) tokens after `pre_norm` (prefix tokens first)."""
        grid = self.grid_for(images.shape[-2:])
        x = self.patchify(images)
        pos = self.resized_positional_embedding(grid).to(x.dtype)
        prefix = self.prefix_tokens()
        if prefix is not None:
            prefix = prefix.to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        if self.table_prefix_rows == 0:
            x = x + pos
            x = x if prefix is None else torch.cat([prefix, x], dim=1)
        else:
            x = torch.cat([prefix, x], dim=1) + pos
        return self.pre_norm(x)

    # ---------------------------------------------------------------- blocks
    def block_index(self, i: int) -> int:
        """Non-negative index of block `i` (negative counts from the end)."""
        n = self.num_blocks
        if not -n <= i < n:
            raise IndexError(f"Block index {i} out of range for {n} blocks")
        return i % n

    def run_blocks(
        self,
        x: torch.Tensor,
        *,
        taps: Iterable[int] = (),
        block_overrides: Mapping[int, BlockOverride] | None = None,
        pre_block: PreBlockHook | None = None,
        attn_mask: torch.Tensor | None = None,
        start: int = 0,
        stop: int | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run blocks `start..stop-1` (default: all) on batch-first `x` (B, L, W).

        `taps`: absolute block indices (negative allowed) whose output is returned, keyed as requested.
        `block_overrides[i](block, x, attn_mask)` replaces the call of block i.
        `pre_block(i, x)` runs before every block i (and its override), e.g. to insert or replace prompt
        tokens; taps see the block outputs.
        `attn_mask`: additive float (L, L) mask (0 = attend, -inf = blocked) given to every block and
        override. Boolean masks are refused: nn.MultiheadAttention and SDPA read True oppositely.
        """
        run = range(self.num_blocks)[start:stop]
        tap_at = {i: self.block_index(i) for i in taps}
        overrides = {self.block_index(i): fn for i, fn in (block_overrides or {}).items()}
        outside = sorted({i for i in (*tap_at.values(), *overrides) if i not in run})
        if outside:
            raise ValueError(f"Taps/overrides at blocks {outside} lie outside the blocks run {list(run)}")
        out: dict[int, torch.Tensor] = {}
        for idx in run:
            block = self.blocks[idx]
            if pre_block is not None:
                x = pre_block(idx, x)
            _check_attn_mask(attn_mask, x.shape[1])
            x = overrides[idx](block, x, attn_mask) if idx in overrides else self.call_block(block, x, attn_mask)
            for requested, normalized in tap_at.items():
                if normalized == idx:
                    out[requested] = x
        return x, out

    # ---------------------------------------------------------------- heads
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm then the projection (if any) on every token: (B, L, W) -> (B, L, E)."""
        x = self.post_norm(x)
        return x if self.projection is None else x @ self.projection

    def forward(
        self,
        images: torch.Tensor,
        *,
        taps: Iterable[int] = (),
        block_overrides: Mapping[int, BlockOverride] | None = None,
        pre_block: PreBlockHook | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> VisualFeatures:
        grid = self.grid_for(images.shape[-2:])
        x, tapped = self.run_blocks(
            self.embed(images), taps=taps, block_overrides=block_overrides, pre_block=pre_block, attn_mask=attn_mask
        )
        return VisualFeatures(tokens=self.project(x), taps=tapped, grid=grid)


def _check_attn_mask(attn_mask: torch.Tensor | None, length: int) -> None:
    if attn_mask is None:
        return
    if not attn_mask.is_floating_point():
        raise ValueError(
            f"attn_mask must be an additive float mask (0 = attend, -inf = blocked), got dtype {attn_mask.dtype}"
        )
    if tuple(attn_mask.shape) != (length, length):
        raise ValueError(f"attn_mask has shape {tuple(attn_mask.shape)}, expected ({length}, {length}) here")


def runs_with_sdpa(block: nn.Module) -> bool:
    """True for an open_clip `ResidualAttentionBlock` (self-attention, fused qkv) that `clip_block_sdpa`
    computes; other blocks (cross-attention, split q/k/v after `split_attention_projections`) run as built."""
    attn = getattr(block, "attn", None)
    return (
        isinstance(block, ResidualAttentionBlock)
        and not hasattr(block, "ln_1_kv")
        and isinstance(attn, nn.MultiheadAttention)
        and attn._qkv_same_embed_dim
        and attn.in_proj_weight is not None
    )


def clip_block_sdpa(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """open_clip `ResidualAttentionBlock.forward` on batch-first x, attention by `F.scaled_dot_product_attention`.

    Same parameters and arithmetic as the block's own forward. Why: in inference nn.MultiheadAttention
    takes its fast path (`_native_multi_head_attention`), which on CPU computes attention with bmm +
    softmax, about twice the time of SDPA's fused kernel on a ViT-B/16 at 512 (1075 tokens).
    """
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = _linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    mask = None if attn_mask is None else attn_mask.to(x.dtype)  # as open_clip's block: masks are additive
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn.dropout if block.training else 0.0)
    out = _linear(out.transpose(1, 2).reshape(batch, length, width), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    return x + block.ls_2(_clip_mlp(block.mlp, block.ln_2(x)))


def _clip_mlp(mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """open_clip's c_fc -> act -> c_proj; QuickGELU x * sigmoid(1.702 x) is computed with one temporary
    instead of three when no gradient is recorded (same operations and bits; the (B, L, 4W) activations
    are the block's largest tensors, and fresh CPU buffers of that size cost page faults)."""
    if not isinstance(getattr(mlp, "ln", nn.Identity()), nn.Identity):  # open_clip's scale_fc variant
        return mlp(x)
    hidden = _linear(x, mlp.c_fc.weight, mlp.c_fc.bias)
    if isinstance(mlp.gelu, QuickGELU) and not (torch.is_grad_enabled() and hidden.requires_grad):
        hidden = hidden.mul_(torch.mul(hidden, 1.702).sigmoid_())
    else:
        hidden = mlp.gelu(hidden)
    return _linear(hidden, mlp.c_proj.weight, mlp.c_proj.bias)


# A private PyTorch op: used only where this build has it, F.linear otherwise (same results).
_ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear; on CPU in float32 without autograd it runs oneDNN's GEMM (`mkldnn._linear_pointwise`, the
    kernel torch.compile's CPU backend emits for linear layers), measured 1.1-1.3x faster than the default
    MKL sgemm at ViT-B/16 shapes on the project's AMD EPYC machines; results agree to float rounding.
    Not while tracing: the JIT tracer (fvcore FLOP counts) cannot record that op."""
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    fast = x.device.type == "cpu" and x.dtype == torch.float32 and _ONEDNN_LINEAR
    if fast and not needs_grad and not torch.jit.is_tracing():
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def _require(visual: nn.Module, attrs: Iterable[str], family: str) -> None:
    for attr in attrs:
        if not hasattr(visual, attr):
            raise TypeError(f"{family} expected; {type(visual).__name__} lacks {attr!r}")


def _refuse_token_dropout(module: nn.Module | None, what: str) -> None:
    """Token dropout (active in training only) drops patches, so no grid remains; not supported."""
    if module is not None and not isinstance(module, nn.Identity) and module.training:
        raise NotImplementedError(f"{what} is active in training; build the backbone without it")


class CLIPVisionTower(ViTTokenRunner):
    """Runner over an open_clip `VisionTransformer` (kept as `self.visual`: keys stay `visual.*`)."""

    def __init__(self, visual: nn.Module, pos_interpolation: str = "bicubic"):
        _require(
            visual,
            ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post"),
            "an open_clip VisionTransformer",
        )
        super().__init__(visual, pos_interpolation)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.conv1.kernel_size)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.visual.transformer.resblocks

    @property
    def positional_parameter(self) -> torch.Tensor:
        return self.visual.positional_embedding

    @property
    def table_prefix_rows(self) -> int:
        return 1

    def native_grid(self) -> tuple[int, int] | None:
        grid = getattr(self.visual, "grid_size", None)
        return tuple(grid) if grid is not None else None

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual.conv1(images).flatten(2).transpose(1, 2)

    def prefix_tokens(self) -> torch.Tensor:
        return self.visual.class_embedding.view(1, -1)

    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_token_dropout(getattr(self.visual, "patch_dropout", None), "open_clip patch_dropout")
        return self.visual.ln_pre(x)

    def call_block(self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        if runs_with_sdpa(block):
            return clip_block_sdpa(block, x, attn_mask)
        if getattr(self.visual.transformer, "batch_first", False):
            return block(x, attn_mask=attn_mask)
        return block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)

    def post_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.ln_post(x)

    @property
    def projection(self) -> torch.Tensor | None:
        return self.visual.proj

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled CLIP image embedding (B, E), not normalised; equals open_clip `encode_image` at the
        native size and uses the resized table elsewhere."""
        v = self.visual
        if getattr(v, "attn_pool", None) is not None or getattr(v, "pool_type", "tok") != "tok":
            raise NotImplementedError("encode_image supports class-token pooling only")
        x, _ = self.run_blocks(self.embed(images))
        return self.project(x[:, :1])[:, 0]


class TimmViTTower(ViTTokenRunner):
    """Runner over a timm `VisionTransformer` (kept as `self.visual`: keys stay timm's under `visual.`).

    Supports class token on/off, register tokens and `no_embed_class` tables. `project` is timm's final
    `norm` (no projection), so `forward(images).tokens` equals timm's `forward_features` at the native
    size. Dynamic-size options of the timm model are not used: the table is resized here
    (`pos_interpolation`, no antialias).
    """

    def __init__(self, visual: nn.Module, pos_interpolation: str = "bicubic"):
        _require(
            visual,
            ("patch_embed", "pos_embed", "cls_token", "num_prefix_tokens", "no_embed_class", "blocks", "norm"),
            "a timm VisionTransformer",
        )
        if visual.pos_embed is None:
            raise NotImplementedError(f"{type(visual).__name__} has no absolute positional table (pos_embed=None)")
        super().__init__(visual, pos_interpolation)

    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.patch_embed.proj.kernel_size)

    @property
    def blocks(self) -> Sequence[nn.Module]:
        return self.visual.blocks

    @property
    def positional_parameter(self) -> torch.Tensor:
        return self.visual.pos_embed

    @property
    def table_prefix_rows(self) -> int:
        return 0 if self.visual.no_embed_class else self.visual.num_prefix_tokens

    def native_grid(self) -> tuple[int, int] | None:
        grid = getattr(self.visual.patch_embed, "grid_size", None)
        return tuple(grid) if grid is not None else None

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        embed = self.visual.patch_embed
        return embed.norm(embed.proj(images).flatten(2).transpose(1, 2))

    def prefix_tokens(self) -> torch.Tensor | None:
        v = self.visual
        parts = [t.reshape(-1, t.shape[-1]) for t in (v.cls_token, getattr(v, "reg_token", None)) if t is not None]
        return torch.cat(parts, dim=0) if parts else None

    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        _refuse_token_dropout(getattr(self.visual, "patch_drop", None), "timm patch_drop")
        return self.visual.norm_pre(self.visual.pos_drop(x))

    def call_block(self, block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        return block(x) if attn_mask is None else block(x, attn_mask=attn_mask)

    def post_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual.norm(x)
