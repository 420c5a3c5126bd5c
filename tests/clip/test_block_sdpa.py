"""`clip_block_sdpa`: the runner's SDPA forward of an open_clip `ResidualAttentionBlock`."""

import torch

from ovseg_d2.clip import CLIPVisionTower, split_attention_projections
from ovseg_d2.clip.visual import _clip_mlp, _linear, clip_block_sdpa, runs_with_sdpa


def test_sdpa_block_equals_block_forward_with_and_without_mask(fresh_tiny):
    block = fresh_tiny.visual.transformer.resblocks[3]
    torch.manual_seed(0)
    x = torch.randn(2, 17, 64)
    mask = torch.full((17, 17), float("-inf")).fill_diagonal_(0.0)
    mask[:, 0] = 0.0
    with torch.no_grad():
        for attn_mask in (None, mask):
            ours, ref = clip_block_sdpa(block, x, attn_mask), block(x, attn_mask=attn_mask)
            assert torch.allclose(ours, ref, atol=1e-6, rtol=0)
        # The mask is used: without it the result differs.
        assert not torch.allclose(clip_block_sdpa(block, x, mask), clip_block_sdpa(block, x, None), atol=1e-3)


def test_sdpa_block_gradients_match_block_forward(fresh_tiny):
    block = fresh_tiny.visual.transformer.resblocks[0].train()
    block.attn.dropout = 0.0  # deterministic comparison
    torch.manual_seed(0)
    x = torch.randn(2, 17, 64)
    grads = []
    for forward in (lambda y: clip_block_sdpa(block, y, None), lambda y: block(y)):
        block.zero_grad()
        y = x.clone().requires_grad_(True)
        (forward(y) ** 2).sum().backward()
        grads.append((y.grad, block.attn.in_proj_weight.grad.clone(), block.mlp.c_fc.weight.grad.clone()))
    for ours, ref in zip(*grads):
        assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-5)


def test_split_projections_fall_back_to_the_block(fresh_tiny):
    tower = CLIPVisionTower(fresh_tiny.visual)
    block = fresh_tiny.visual.transformer.resblocks[0]
    assert runs_with_sdpa(block)
    x = tower.embed(torch.randn(1, 3, 64, 64)).detach()
    with torch.no_grad():
        before = tower.run_blocks(x)[0]
        split_attention_projections(fresh_tiny.visual)
        assert not runs_with_sdpa(block)
        assert torch.allclose(tower.run_blocks(x)[0], before, atol=1e-5, rtol=0)


def test_inference_mlp_path_equals_the_module(fresh_tiny):
    mlp = fresh_tiny.visual.transformer.resblocks[2].mlp
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        assert torch.allclose(_clip_mlp(mlp, x), mlp(x), atol=1e-6, rtol=0)
        # The in-place QuickGELU is the module's own arithmetic, bit for bit.
        hidden = mlp.c_fc(x)
        assert torch.equal(hidden.clone().mul_(torch.mul(hidden, 1.702).sigmoid_()), mlp.gelu(hidden))
    # With gradients the module's own (out-of-place) QuickGELU runs, so backward works.
    y = x.clone().requires_grad_(True)
    _clip_mlp(mlp, y).sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_linear_matches_f_linear_with_and_without_autograd():
    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 200)
    x = torch.randn(3, 7, 96)
    with torch.no_grad():
        assert torch.allclose(_linear(x, lin.weight, lin.bias), lin(x), atol=1e-5, rtol=0)
        assert torch.allclose(_linear(x, lin.weight, None), x @ lin.weight.T, atol=1e-5, rtol=0)
    out = _linear(x, lin.weight, lin.bias)  # parameters require grad: the differentiable F.linear
    out.sum().backward()
    assert torch.equal(out, lin(x)) and torch.allclose(lin.bias.grad, torch.full((200,), 21.0))


def test_linear_flops_are_counted_when_traced():
    from ovseg_d2.engine.profiling import count_flops

    class Projection(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(96, 200)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _linear(x, self.lin.weight, self.lin.bias)

    with torch.no_grad():
        total, by_op = count_flops(Projection().eval(), (torch.randn(2, 5, 96),))
    assert total == 2 * 5 * 96 * 200 and set(by_op) == {"linear"}
