"""FLOPs of nn.MultiheadAttention's inference fast path (aten::_native_multi_head_attention) are counted."""

import torch
from torch import nn

from ovseg_d2.engine.profiling import count_flops


class _SelfAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_fused_multi_head_attention_is_counted():
    batch, length, width = 2, 10, 16
    module = _SelfAttention(width, heads=4).eval()
    with torch.no_grad():
        total, by_op = count_flops(module, (torch.randn(batch, length, width),))
    # q, k, v and out projections (4 L E^2) + QK^T and AV (2 L^2 E), per image, multiply-add = 1 flop
    assert total == batch * (4 * length * width * width + 2 * length * length * width)
    assert set(by_op) == {"_native_multi_head_attention"}
