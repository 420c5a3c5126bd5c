"""Cascade-CLIP image encoder: a CLIP ViT with deep visual prompts and six projected intermediate taps.

Runs on the core `ViTTokenRunner` (`CLIPVisionTower`): `embed` (with the official doubled class
embedding when asked), `run_blocks` with a `pre_block` hook that inserts the prompt tokens before
block 0 and replaces them before every later block, taps at the requested blocks, then
`prompt_norm` -> (`ln_post` + `proj`) for the final map and the global embedding, or
(`tap_norms[k]` + `tap_proj[k]`) for tap k. Every map is L2-normalised per pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ovseg_d2.clip import CLIPVisionTower, tokens_to_map

__all__ = ["CascadeCLIPBackbone", "CascadeVisionTower", "DeepVisualPrompts", "BackboneOutput"]


class CascadeVisionTower(CLIPVisionTower):
    """`CLIPVisionTower` whose class token can carry `class_embedding` twice.

    Official quirk (inherited from ZegCLIP, `double_class_embedding=True`): the class token is
    `class_embedding` and its positional row is `pos[0] + class_embedding`, so the token entering
    `ln_pre` is 2 * class_embedding + pos[0]. Official checkpoints were trained that way.
    """

    def __init__(self, visual: nn.Module, *, double_class_embedding: bool = False):
        self.double_class_embedding = double_class_embedding
        super().__init__(visual, pos_interpolation="bilinear")

    def prefix_tokens(self) -> Tensor:
        token = super().prefix_tokens()
        return 2 * token if self.double_class_embedding else token


class DeepVisualPrompts(nn.Module):
    """Deep VPT: `num_tokens` prompt tokens after the class token, fresh ones before every block.

    Before block 0 the projected `prompt_embeddings` are inserted after the class token; before
    block i >= 1 tokens 1..T are replaced by the projection of `deep_prompt_embeddings[i - 1]` (the
    previous block's prompt outputs are discarded). One projection shared by all blocks, dropout in
    training. `norm` (eps 1e-6) is the official `prompt_norm`, applied to taps and to the last block.
    """

    def __init__(self, width: int, num_tokens: int, num_blocks: int, patch_size: int, dropout: float = 0.1):
        super().__init__()
        self.num_tokens = num_tokens
        # Official init (VPT): uniform(-v, v) with v from a Xavier-style fan of the patch embedding.
        bound = math.sqrt(6.0 / float(3 * patch_size * patch_size + width))
        self.prompt_embeddings = nn.Parameter(torch.empty(1, num_tokens, width).uniform_(-bound, bound))
        self.deep_prompt_embeddings = nn.Parameter(
            torch.empty(num_blocks - 1, num_tokens, width).uniform_(-bound, bound)
        )
        self.proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    def tokens(self, block: int, batch: int) -> Tensor:
        """(B, T, W) prompt tokens fed to `block`."""
        table = self.prompt_embeddings[0] if block == 0 else self.deep_prompt_embeddings[block - 1]
        return self.dropout(self.proj(table).expand(batch, -1, -1))

    def pre_block(self, block: int, x: Tensor) -> Tensor:
        """The runner's `pre_block` hook: insert (block 0) or replace (later blocks) the prompts."""
        prompts = self.tokens(block, x.shape[0]).to(x.dtype)
        rest = x[:, 1:] if block == 0 else x[:, 1 + self.num_tokens :]
        return torch.cat([x[:, :1], prompts, rest], dim=1)


@dataclass
class BackboneOutput:
    taps: list[Tensor]  # (B, E, h, w) per tapped block, unit norm per pixel
    dense: Tensor  # (B, E, h, w) final map, unit norm per pixel
    global_embedding: Tensor  # (B, E), unit norm


class CascadeCLIPBackbone(nn.Module):
    """The CLIP tower, its deep prompts and the projections of the tapped blocks.

    `tap_norms` / `tap_proj` (official `ln_layers` / `proj_layers`) are new parameters; the official
    recipe freezes everything but the prompts, so they keep their random init (LayerNorm identity,
    N(0, 1/width) matrices) through training (`freeze_tap_projections=True`, the official setting).
    """

    def __init__(
        self,
        visual: nn.Module,
        *,
        num_prompt_tokens: int,
        tap_blocks: Sequence[int] = (5, 6, 7, 8, 9, 10),
        prompt_dropout: float = 0.1,
        double_class_embedding: bool = False,
    ):
        super().__init__()
        self.tower = CascadeVisionTower(visual, double_class_embedding=double_class_embedding)
        width = visual.conv1.out_channels
        embed_dim = visual.proj.shape[1]
        num_blocks = self.tower.num_blocks
        self.tap_blocks = tuple(self.tower.block_index(i) for i in tap_blocks)
        if self.tap_blocks and max(self.tap_blocks) >= num_blocks - 1:
            raise ValueError(f"tap_blocks {tuple(tap_blocks)} must precede the last of the {num_blocks} blocks")
        self.prompts = DeepVisualPrompts(width, num_prompt_tokens, num_blocks, self.tower.patch_size[0], prompt_dropout)
        self.tap_norms = nn.ModuleList([nn.LayerNorm(width) for _ in self.tap_blocks])
        self.tap_proj = nn.Parameter(width**-0.5 * torch.randn(len(self.tap_blocks), width, embed_dim))

    def forward(self, images: Tensor) -> BackboneOutput:
        """(B, 3, H, W) normalised images -> unit-norm tap maps, final map and global embedding."""
        tower = self.tower
        grid = tower.grid_for(images.shape[-2:])
        hw = grid[0] * grid[1]
        x, tapped = tower.run_blocks(tower.embed(images), taps=self.tap_blocks, pre_block=self.prompts.pre_block)
        taps = []
        for k, block in enumerate(self.tap_blocks):
            # Every step is token-wise: only the patch tokens are normalised and projected.
            patches = self.tap_norms[k](self.prompts.norm(tapped[block][:, -hw:])) @ self.tap_proj[k]
            taps.append(F.normalize(tokens_to_map(patches, grid), dim=1))
        tokens = torch.cat([x[:, :1], x[:, -hw:]], dim=1)
        tokens = tower.project(self.prompts.norm(tokens))
        dense = F.normalize(tokens_to_map(tokens, grid), dim=1)
        return BackboneOutput(taps=taps, dense=dense, global_embedding=F.normalize(tokens[:, 0], dim=-1))
