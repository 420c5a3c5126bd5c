"""Reusable replacements for a CLIP block's forward, for `ViTTokenRunner.run_blocks(block_overrides=...)`.

Dense-prediction methods change the last block so that every patch token keeps its own content
instead of mixing through attention. They operate on open_clip `ResidualAttentionBlock`s (ln_1, attn,
ls_1, ln_2, mlp, ls_2) with batch-first x, and read the value projection from either the fused
`in_proj_weight` or a split `v_proj_weight` (see `finetune.split_attention_projections`).
They receive the run's `attn_mask` like every override and do not use it: no token attends to another.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .visual import BlockOverride


def value_projection(attn: nn.MultiheadAttention, y: torch.Tensor) -> torch.Tensor:
    """out_proj(W_v y + b_v): the attention output when every token attends only to itself."""
    if not isinstance(attn, nn.MultiheadAttention):
        raise TypeError(f"Expected nn.MultiheadAttention, got {type(attn).__name__}")
    dim = attn.embed_dim
    weight = attn.in_proj_weight[2 * dim :] if attn._qkv_same_embed_dim else attn.v_proj_weight
    bias = attn.in_proj_bias[2 * dim :] if attn.in_proj_bias is not None else None
    return attn.out_proj(F.linear(y, weight, bias))


def value_path_block(residual: str = "cls") -> BlockOverride:
    """CAT-Seg's dense last block: t = out_proj(v(ln_1 x)) + r; out = t + mlp(ln_2 t).

    `residual="cls"` (official CVPR code) adds the block input's class token to every position;
    `residual="token"` (pre-CVPR code, mmseg port) adds each token's own input. q and k are not used.
    """
    if residual not in ("cls", "token"):
        raise ValueError(f"residual must be 'cls' or 'token', got {residual!r}")

    def forward(block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        v = block.ls_1(value_projection(block.attn, block.ln_1(x)))
        t = v + (x[:, :1] if residual == "cls" else x)
        return t + block.ls_2(block.mlp(block.ln_2(t)))

    return forward


def self_attention_only_block(
    block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """TCL's last block: attention restricted to the diagonal (each token attends to itself), with the
    residual and MLP kept: x + out_proj(v(ln_1 x)), then + mlp(ln_2 .)."""
    x = x + block.ls_1(value_projection(block.attn, block.ln_1(x)))
    return x + block.ls_2(block.mlp(block.ln_2(x)))
