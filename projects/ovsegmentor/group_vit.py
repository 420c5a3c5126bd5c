"""OVSegmentor's image encoder: a GroupViT with one grouping stage, on the core ViT token runner.

A plain 12-block ViT (timm `VisionTransformer`, no class token, positional table on the patches
only) run by `TimmViTTower`: learnable group tokens are appended before the first block (the
runner's `pre_block` hook), blocks `0..grouping_after-1` attend over patches + group tokens, a
`GroupingBlock` hard-assigns every patch to one of `num_output_groups` segment tokens, and the
remaining blocks run on the segment tokens only. The final norm (timm's `norm`) is applied to them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ovseg_d2.clip.visual import TimmViTTower

__all__ = ["Assignment", "CrossAttentionBlock", "GroupViTEncoder", "GroupViTOutput", "GroupingBlock", "sample_gumbel"]

# gumbel sampler: (shape, like tensor) -> Gumbel(0, 1) noise of that shape (tests inject fixed noise)
GumbelSampler = Callable[[torch.Size, torch.Tensor], torch.Tensor]


def sample_gumbel(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Gumbel(0, 1) noise, -log(-log(U)), as `torch.distributions.Gumbel(0, 1).sample` draws it."""
    return torch.distributions.Gumbel(like.new_tensor(0.0), like.new_tensor(1.0)).sample(shape)


class MultiHeadCrossAttention(nn.Module):
    """Attention of `query` tokens over `key` tokens with separate q/k/v projections (with bias)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(self.q_proj(query)), self._heads(self.k_proj(key)), self._heads(self.v_proj(key))
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2))


class CrossAttentionBlock(nn.Module):
    """GroupViT's post-norm `CrossAttnBlock`: x = q + attn(q, k); x = x + mlp(norm2(x)); norm_post(x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.attn = MultiHeadCrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm_post = nn.LayerNorm(dim)

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        x = query + self.attn(query, key)
        return self.norm_post(x + self.mlp(self.norm2(x)))


@dataclass
class Assignment:
    """Patch -> group assignment of one `GroupingBlock` call (single head). S groups, N patches."""

    logits: torch.Tensor  # (B, S, N) (W_q p)(W_k x)^T / sqrt(C)
    soft: torch.Tensor  # (B, S, N) softmax over the groups, no noise (the segmentation map)
    hard: torch.Tensor  # (B, S, N) straight-through one-hot used in the forward
    q: torch.Tensor  # (B, S, C) projected group queries
    k: torch.Tensor  # (B, N, C) projected patch keys


class GroupingBlock(nn.Module):
    """Maps G group tokens to S segment tokens and hard-assigns the N patches to them.

    token MLP over the group axis (G -> dim/2 -> S) -> pre-assign cross attention over the patches ->
    one-head assignment attention: straight-through hard Gumbel-softmax over the S groups in training
    (tau 1), straight-through argmax in eval; each group averages its patches (`/ (count + 1)`), then
    a channel MLP. `gumbel_sampler` draws the noise (tests replace it with fixed noise).
    """

    def __init__(
        self, dim: int, num_heads: int, num_group_tokens: int, num_output_groups: int, *, hard: bool = True,
        gumbel_tau: float = 1.0, assign_eps: float = 1.0,
    ) -> None:
        super().__init__()
        self.hard = hard
        self.gumbel_tau = gumbel_tau
        self.assign_eps = assign_eps
        self.scale = dim**-0.5
        self.norm_tokens = nn.LayerNorm(dim)
        self.token_mlp = Mlp(num_group_tokens, dim // 2, num_output_groups)
        self.norm_post_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.pre_assign = CrossAttentionBlock(dim, num_heads)
        self.assign_q = nn.Linear(dim, dim)
        self.assign_k = nn.Linear(dim, dim)
        self.assign_v = nn.Linear(dim, dim)
        self.assign_proj = nn.Linear(dim, dim)
        self.norm_new_x = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, 4 * dim)
        self.gumbel_sampler: GumbelSampler = sample_gumbel

    def project_group_tokens(self, group_tokens: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """(B, G, C) group tokens, (B, N, C) normed patches -> (B, S, C) queries of the assignment."""
        tokens = self.token_mlp(self.norm_tokens(group_tokens).transpose(1, 2)).transpose(1, 2)
        return self.pre_assign(self.norm_post_tokens(tokens), patches)

    def assign(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, S, N) logits -> the assignment used in the forward (normalised over the S groups)."""
        if self.training and self.hard:
            logits = logits + self.gumbel_sampler(logits.shape, logits)
        soft = (logits / self.gumbel_tau if self.training and self.hard else logits).softmax(dim=1)
        if not self.hard:
            return soft
        one_hot = F.one_hot(soft.argmax(dim=1), soft.shape[1]).transpose(1, 2).to(soft.dtype)
        return one_hot - soft.detach() + soft  # straight-through

    def forward(self, patches: torch.Tensor, group_tokens: torch.Tensor) -> tuple[torch.Tensor, Assignment]:
        """(B, N, C) patches, (B, G, C) group tokens -> (B, S, C) segment tokens, the assignment."""
        patches = self.norm_x(patches)
        groups = self.project_group_tokens(group_tokens, patches)
        q, k = self.assign_q(groups), self.assign_k(patches)
        logits = q @ k.transpose(1, 2) * self.scale
        hard = self.assign(logits)
        weights = hard / (hard.sum(dim=-1, keepdim=True) + self.assign_eps)
        out = self.assign_proj(weights @ self.assign_v(patches)) + groups
        out = out + self.channel_mlp(self.norm_new_x(out))
        return out, Assignment(logits=logits, soft=logits.softmax(dim=1), hard=hard, q=q, k=k)


@dataclass
class GroupViTOutput:
    feat: torch.Tensor  # (B, S, C) segment tokens after the final norm
    assignment: Assignment
    grid: tuple[int, int]  # (h, w) patch grid

    @property
    def pooled(self) -> torch.Tensor:
        """(B, C) mean of the segment tokens (GroupViT's image feature before the projector)."""
        return self.feat.mean(dim=1)


class GroupViTEncoder(TimmViTTower):
    """GroupViT with one grouping stage over a timm ViT (`visual.*` keys are timm's).

    Args:
        embed_dim, depth, num_heads, patch_size, img_size, mlp_ratio: the ViT (OVSegmentor ViT-B/16:
            768, 12, 8 heads, 16, 224, 4; ViT-S: 384, 12, 6 heads).
        grouping_after: blocks run on patches + group tokens before the grouping block (6).
        num_group_tokens / num_output_groups: 64 / 8.
        drop_path_rate: stochastic depth, linear over the blocks (0.1).
        hard_assignment: straight-through hard assignment (Gumbel in training); False = soft.
    LayerNorms use torch's eps 1e-5 (not DINO's 1e-6), as the official model.
    """

    def __init__(
        self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 8, patch_size: int = 16,
        img_size: int = 224, mlp_ratio: float = 4.0, grouping_after: int = 6, num_group_tokens: int = 64,
        num_output_groups: int = 8, drop_path_rate: float = 0.1, hard_assignment: bool = True,
    ) -> None:
        if not 0 < grouping_after < depth:
            raise ValueError(f"grouping_after={grouping_after} must lie inside the {depth} blocks")
        vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, num_classes=0, global_pool="", embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, class_token=False,
            no_embed_class=True, drop_path_rate=drop_path_rate, norm_layer=partial(nn.LayerNorm, eps=1e-5),
        )
        super().__init__(vit, pos_interpolation="bicubic")
        self.grouping_after = grouping_after
        self.group_token = nn.Parameter(torch.zeros(1, num_group_tokens, embed_dim))
        nn.init.trunc_normal_(self.group_token, std=0.02)
        self.grouping = GroupingBlock(
            embed_dim, num_heads, num_group_tokens, num_output_groups, hard=hard_assignment
        )

    def load_vit_weights(self, path: str) -> None:
        """ViT weights in timm / DINO layout (`blocks.N.*`, `patch_embed.*`, `pos_embed`, `norm.*`; the
        class token and its positional row are dropped, as the official DINO initialisation does).
        Every key of the ViT must be present."""
        from ovseg_d2.checkpoint import load_checkpoint_file

        if not Path(path).is_file():
            raise FileNotFoundError(
                f"ViT weights not found: {path} (DINO ViT-B/16: dl.fbaipublicfiles.com/dino/"
                "dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth)"
            )
        state = dict(load_checkpoint_file(Path(path)))
        state = state.get("model", state.get("state_dict", state))
        pos = state.get("pos_embed")
        if pos is not None and pos.shape[-2] == self.visual.pos_embed.shape[-2] + 1:
            state["pos_embed"] = pos[..., 1:, :]  # drop the class token's row
        state.pop("cls_token", None)
        state = {k: v for k, v in state.items() if not k.startswith("head")}
        self.visual.load_state_dict(state, strict=True)

    @property
    def width(self) -> int:
        return self.group_token.shape[-1]

    def stage0(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised -> (B, N + G, C) output of the last block before grouping
        (patches first, then the group tokens)."""
        x = self.embed(images)
        groups = self.group_token.to(x.dtype).expand(x.shape[0], -1, -1)

        def append_group_tokens(i: int, tokens: torch.Tensor) -> torch.Tensor:
            return torch.cat([tokens, groups], dim=1) if i == 0 else tokens

        x, _ = self.run_blocks(x, pre_block=append_group_tokens, stop=self.grouping_after)
        return x

    def forward(self, images: torch.Tensor) -> GroupViTOutput:  # type: ignore[override]
        grid = self.grid_for(images.shape[-2:])
        x = self.stage0(images)
        num_groups = self.group_token.shape[1]
        segments, assignment = self.grouping(x[:, :-num_groups], x[:, -num_groups:])
        segments, _ = self.run_blocks(segments, start=self.grouping_after)
        return GroupViTOutput(feat=self.project(segments), assignment=assignment, grid=grid)
