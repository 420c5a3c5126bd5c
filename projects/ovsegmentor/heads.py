"""OVSegmentor's heads: the projection MLPs and the masked-entity-completion head."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from .group_vit import CrossAttentionBlock

__all__ = ["EntityCompletionHead", "ProjectionHead"]


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm1d -> ReLU -> Linear (the official 1x1-Conv1d `ProjectMLP`, 2 layers).

    Takes (B, C) or (B, L, C); batch statistics are over all B x L vectors, as the official
    channel-first BatchNorm. The official heads use SyncBatchNorm (global-batch statistics): the
    meta-architecture converts when `sync_batchnorm` is set.
    """

    def __init__(self, in_dim: int, inner_dim: int = 4096, out_dim: int = 256) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, inner_dim)
        self.norm = nn.BatchNorm1d(inner_dim)
        self.fc2 = nn.Linear(inner_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = self.fc2(torch.relu(self.norm(self.fc1(flat))))
        return out.reshape(*x.shape[:-1], out.shape[-1])


class EntityCompletionBlock(nn.Module):
    """Question tokens attend to the visual segment tokens (post-norm cross attention), then a
    self-attention block over the question; output = norm(self_attn(c) + c)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_tokens = nn.LayerNorm(dim)
        self.norm_x = nn.LayerNorm(dim)
        self.cross_attn = CrossAttentionBlock(dim, num_heads)
        self.self_attn = Block(dim, num_heads, qkv_bias=True)
        self.norm_new_x = nn.LayerNorm(dim)

    def forward(
        self, answer: torch.Tensor | None, visual: torch.Tensor, question: torch.Tensor, attn_mask: torch.Tensor | None
    ) -> torch.Tensor:
        cross = self.cross_attn(self.norm_tokens(question), self.norm_x(visual))
        x = cross if answer is None else answer + cross
        return self.norm_new_x(self.self_attn(x, attn_mask=attn_mask) + cross)


class EntityCompletionHead(nn.Module):
    """Masked entity completion: (B, L, C) question states + (B, S, C) visual segment tokens ->
    (B, C) the state at the question's first ([CLS]) position.

    `attend_padding=False` (default) keeps padded question tokens out of the self-attention keys;
    True reproduces the official head, which ignores the question mask (pads attend and are attended).
    """

    def __init__(self, dim: int, num_heads: int = 8, num_layers: int = 1, attend_padding: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(EntityCompletionBlock(dim, num_heads) for _ in range(num_layers))
        self.attend_padding = attend_padding

    def forward(self, visual: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor) -> torch.Tensor:
        attn_mask = None
        if not self.attend_padding:
            # additive (B, 1, 1, L) key mask for SDPA
            attn_mask = torch.zeros(question_mask.shape, dtype=question.dtype, device=question.device)
            attn_mask = attn_mask.masked_fill(question_mask == 0, float("-inf"))[:, None, None, :]
        answer = None
        for block in self.blocks:
            answer = block(answer, visual, question, attn_mask)
        return answer[:, 0]
