"""Dense CLIP vision tower on top of an open_clip `VisionTransformer`.

open_clip only exposes the pooled embedding (or ln_post'ed, unprojected tokens) at the pretraining
resolution. The methods need: any input size (positional table resized without antialiasing, as the
official code bases do), a batch-first block loop with taps and per-block replacements (dense last
blocks, prompt tokens), and ln_post + proj on every token. The wrapped module stays a submodule named
`visual`, so state-dict keys are open_clip's `visual.*`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

BlockOverride = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def interpolate_positional_embedding(
    table: torch.Tensor, src_grid: tuple[int, int], dst_grid: tuple[int, int], mode: str = "bicubic"
) -> torch.Tensor:
    """Resize a (1+h*w, W) table (class row first, grid row-major) to another grid.

    The class row is kept; the grid part is reshaped to (1, W, h, w), resized with `F.interpolate`
    (align_corners=False, antialias=False: CAT-Seg, TCL and Cascade-CLIP all use this exact call, unlike
    open_clip's antialiased `resize_pos_embed`) and flattened back row-major.
    """
    if mode not in ("bicubic", "bilinear"):
        raise ValueError(f"pos_interpolation must be 'bicubic' or 'bilinear', got {mode!r}")
    (sh, sw), (dh, dw) = src_grid, dst_grid
    if table.shape[0] != 1 + sh * sw:
        raise ValueError(f"Positional table has {table.shape[0]} rows, expected 1 + {sh}*{sw}")
    if (sh, sw) == (dh, dw):
        return table
    width = table.shape[1]
    grid = table[1:].reshape(1, sh, sw, width).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dh, dw), mode=mode, align_corners=False, antialias=False)
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(dh * dw, width)], dim=0)


@dataclass
class VisualFeatures:
    """Output of `CLIPVisionTower.forward`. Patch tokens are the LAST h*w tokens of every sequence
    (class token, and prompt tokens where a method inserts them, come first)."""

    tokens: torch.Tensor  # (B, L, E): ln_post + proj on every token
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


class CLIPVisionTower(nn.Module):
    """Any-resolution, batch-first access to an open_clip `VisionTransformer` (kept as `self.visual`)."""

    def __init__(self, visual: nn.Module, pos_interpolation: str = "bicubic"):
        super().__init__()
        for attr in ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "ln_post"):
            if not hasattr(visual, attr):
                raise TypeError(
                    f"CLIPVisionTower needs an open_clip VisionTransformer; {type(visual).__name__} lacks {attr!r}"
                )
        if pos_interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"pos_interpolation must be 'bicubic' or 'bilinear', got {pos_interpolation!r}")
        self.visual = visual
        self.pos_interpolation = pos_interpolation
        # Frozen-table resizes, keyed by everything that changes the result (see resized_positional_embedding).
        self._pos_cache: dict[tuple, torch.Tensor] = {}
        self.pos_cache_misses = 0  # number of resizes actually computed for a frozen table (tests, profiling)

    # ---------------------------------------------------------------- geometry
    @property
    def patch_size(self) -> tuple[int, int]:
        return tuple(self.visual.conv1.kernel_size)

    @property
    def num_blocks(self) -> int:
        return len(self.visual.transformer.resblocks)

    @property
    def table_grid(self) -> tuple[int, int]:
        """Grid of the stored positional table (the pretraining / build resolution)."""
        n = self.visual.positional_embedding.shape[0] - 1
        grid = tuple(getattr(self.visual, "grid_size", ()))
        if len(grid) == 2 and grid[0] * grid[1] == n:
            return grid
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
        """(1 + h*w, W) positional table for `grid_hw`.

        A frozen table is resized once per grid and served from a cache keyed by (grid, mode, device,
        dtype, parameter identity and `_version`): in-place updates (load_state_dict, optimizer steps)
        bump `_version` and invalidate it. A trainable table is resized on every call so gradients flow.
        """
        table = self.visual.positional_embedding
        grid_hw = tuple(grid_hw)
        if grid_hw == self.table_grid:
            return table
        if table.requires_grad:
            return interpolate_positional_embedding(table, self.table_grid, grid_hw, self.pos_interpolation)
        weights_key = (id(table), table._version, table.data_ptr())
        key = (grid_hw, self.pos_interpolation, table.device, table.dtype, weights_key)
        cached = self._pos_cache.get(key)
        if cached is None:
            with torch.no_grad():
                cached = interpolate_positional_embedding(table, self.table_grid, grid_hw, self.pos_interpolation)
            self._pos_cache = {k: v for k, v in self._pos_cache.items() if k[4] == weights_key}
            self._pos_cache[key] = cached
            self.pos_cache_misses += 1
        return cached

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 1 + h*w, W) tokens after ln_pre (class token first)."""
        grid = self.grid_for(images.shape[-2:])
        x = self.visual.conv1(images)
        x = x.flatten(2).transpose(1, 2)
        cls = self.visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.resized_positional_embedding(grid).to(x.dtype)
        return self.visual.ln_pre(x)

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
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run every block on batch-first `x` (B, L, W).

        `taps`: block indices (negative allowed) whose output is returned, keyed as requested.
        `block_overrides[i](block, x)` replaces the call of block i (it receives and returns batch-first x).
        """
        tap_at = {i: self.block_index(i) for i in taps}
        overrides = {self.block_index(i): fn for i, fn in (block_overrides or {}).items()}
        seq_first = not getattr(self.visual.transformer, "batch_first", False)
        out: dict[int, torch.Tensor] = {}
        for idx, block in enumerate(self.visual.transformer.resblocks):
            if idx in overrides:
                x = overrides[idx](block, x)
            elif seq_first:
                x = block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
            else:
                x = block(x, attn_mask=attn_mask)
            for requested, normalized in tap_at.items():
                if normalized == idx:
                    out[requested] = x
        return x, out

    # ---------------------------------------------------------------- heads
    def project(self, x: torch.Tensor) -> torch.Tensor:
        """ln_post then `@ proj` on every token: (B, L, W) -> (B, L, E)."""
        x = self.visual.ln_post(x)
        return x @ self.visual.proj if self.visual.proj is not None else x

    def forward(
        self,
        images: torch.Tensor,
        *,
        taps: Iterable[int] = (),
        block_overrides: Mapping[int, BlockOverride] | None = None,
    ) -> VisualFeatures:
        grid = self.grid_for(images.shape[-2:])
        x, tapped = self.run_blocks(self.embed(images), taps=taps, block_overrides=block_overrides)
        return VisualFeatures(tokens=self.project(x), taps=tapped, grid=grid)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled CLIP image embedding (B, E), not normalised; equals open_clip `encode_image` at the
        native size and uses the resized table elsewhere."""
        v = self.visual
        if getattr(v, "attn_pool", None) is not None or getattr(v, "pool_type", "tok") != "tok":
            raise NotImplementedError("encode_image supports class-token pooling only")
        x, _ = self.run_blocks(self.embed(images))
        return self.project(x[:, :1])[:, 0]
