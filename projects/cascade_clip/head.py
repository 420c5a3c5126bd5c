"""Cascade-CLIP decoder head: NGA stage fusion, relationship-descriptor queries, cascade decoders.

Per stage s: memory M_s (NGA-weighted sum of projected taps, or the final map), queries
q_s = query_projs[s]([g * t_c, t_c]) from the text embeddings t_c and the global image embedding g,
then an ATM-style decoder: (num_layers - 1) cross-attention + FFN layers (no self-attention) and a
last layer of which only the head-averaged pre-softmax attention logits are used (official: the
last layer's updated queries are never read, so only its q/k projections are built here). The
stage logits (B, N, h, w) are summed by the caller.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import BackboneOutput

__all__ = ["CascadeHead", "CrossAttentionLayer", "AttentionLogits", "gaussian_stage_weights"]


def gaussian_stage_weights(num_taps: int, sigma: float = 1.0) -> Tensor:
    """NGA init: a Gaussian of the distance to the stage's last tap, exp(-d^2 / (2 sigma^2)), d = n-1 .. 0."""
    distance = torch.arange(num_taps - 1, -1, -1, dtype=torch.float32)
    return torch.exp(-0.5 * (distance / sigma) ** 2)


def _split_heads(x: Tensor, heads: int) -> Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


class CrossAttentionLayer(nn.Module):
    """Post-norm decoder layer without self-attention: q <- norm2(q + attn(q, M)); q <- norm3(q + FFN(q))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float = 0.1, attn_dropout: float = 0.1):
        super().__init__()
        if dim % heads:
            raise ValueError(f"decoder width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.attn_dropout = attn_dropout
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)  # FFN hidden, after attention and after the FFN (official: 3 x 0.1)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        q, k, v = (_split_heads(lin(x), self.heads) for lin, x in ((self.q, queries), (self.k, memory), (self.v, memory)))
        attn = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_dropout if self.training else 0.0)
        attn = self.proj(attn.transpose(1, 2).flatten(2))
        queries = self.norm2(queries + self.dropout(attn))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(queries))))
        return self.norm3(queries + self.dropout(ffn))


class AttentionLogits(nn.Module):
    """The last decoder layer's output: pre-softmax cross-attention logits averaged over heads.

    mean_h(q_h k_h^T / sqrt(d)) = (q k^T) / (sqrt(d) * heads): one matmul over all channels.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = 1.0 / (math.sqrt(dim // heads) * heads)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        return (self.q(queries) * self.scale) @ self.k(memory).transpose(1, 2)  # (B, N, L)


class CascadeDecoder(nn.Module):
    def __init__(self, dim: int, heads: int, num_layers: int, ffn_dim: int, dropout: float = 0.1):
        super().__init__()
        self.layers = nn.ModuleList(
            [CrossAttentionLayer(dim, heads, ffn_dim, dropout, dropout) for _ in range(num_layers - 1)]
        )
        self.logits = AttentionLogits(dim, heads)

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        for layer in self.layers:
            queries = layer(queries, memory)
        return self.logits(queries, memory)


class CascadeHead(nn.Module):
    """Three (in general: len(stage_taps) + 1) stages; the last one reads the final map.

    stage_taps: per NGA stage, the indices (into the backbone's taps) fused by learnable weights
    initialised with `gaussian_stage_weights` (official: taps of blocks 5-7 and 8-10).
    """

    def __init__(
        self,
        embed_dim: int,
        *,
        stage_taps: Sequence[Sequence[int]] = ((0, 1, 2), (3, 4, 5)),
        num_layers: int = 3,
        num_heads: int = 8,
        ffn_ratio: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        if num_layers < 1:
            raise ValueError("each cascade decoder needs at least one layer")
        self.stage_taps = tuple(tuple(int(i) for i in group) for group in stage_taps)
        self.nga_weights = nn.ParameterList([nn.Parameter(gaussian_stage_weights(len(g))) for g in self.stage_taps])
        num_stages = len(self.stage_taps) + 1
        self.query_projs = nn.ModuleList([nn.Linear(2 * embed_dim, embed_dim) for _ in range(num_stages)])
        self.decoders = nn.ModuleList(
            [CascadeDecoder(embed_dim, num_heads, num_layers, ffn_ratio * embed_dim, dropout) for _ in range(num_stages)]
        )

    def memories(self, features: BackboneOutput) -> list[Tensor]:
        """(B, h*w, E) memory of every stage (row-major tokens)."""
        maps = [sum(w * features.taps[i] for w, i in zip(weights, group)) for weights, group in zip(self.nga_weights, self.stage_taps)]
        maps.append(features.dense)
        return [m.flatten(2).transpose(1, 2) for m in maps]

    @staticmethod
    def descriptor(text: Tensor, global_embedding: Tensor) -> Tensor:
        """Relationship descriptor [g * t_c, t_c]: (N, E) text, (B, E) image -> (B, N, 2E)."""
        text = text.unsqueeze(0).expand(global_embedding.shape[0], -1, -1)
        return torch.cat([global_embedding.unsqueeze(1) * text, text], dim=-1)

    def forward(self, features: BackboneOutput, text: Tensor) -> list[Tensor]:
        """-> per-stage attention logits (B, N, h, w)."""
        h, w = features.dense.shape[-2:]
        relation = self.descriptor(text.to(features.dense.dtype), features.global_embedding)
        stage_logits = []
        for proj, decoder, memory in zip(self.query_projs, self.decoders, self.memories(features)):
            logits = decoder(proj(relation), memory)
            stage_logits.append(logits.view(logits.shape[0], logits.shape[1], h, w))
        return stage_logits
