import pytest
import torch
import torch.nn.functional as F

from ovseg_d2.clip import (
    CLIPVisionTower,
    build_clip,
    interpolate_positional_embedding,
    self_attention_only_block,
    split_attention_projections,
    value_path_block,
)
from tests.clip.tower_checks import assert_run_blocks_applies_mask_and_override


@pytest.fixture(scope="module")
def vitb_tower():
    """The real ViT-B/16 architecture on the meta device: every op runs shape inference only, which
    keeps four resolutions of a 86M-parameter tower well under a second on a shared 2-core machine
    (numerics are tested on the tiny config)."""
    with torch.device("meta"):
        clip = build_clip("ViT-B-16")
    clip.visual.positional_embedding.requires_grad_(False)  # frozen, as in CAT-Seg: exercises the cache path
    return CLIPVisionTower(clip.visual.eval())


@pytest.mark.parametrize("size,grid", [(224, 14), (384, 24), (448, 28), (512, 32)])
def test_vitb16_dense_shapes(vitb_tower, size, grid):
    f = vitb_tower(
        torch.empty(1, 3, size, size, device="meta"), taps=(3, 7, -1), block_overrides={-1: value_path_block("cls")}
    )
    assert f.grid == (grid, grid)
    assert f.tokens.shape == (1, 1 + grid * grid, 512)
    assert f.dense().shape == (1, 512, grid, grid)
    assert set(f.taps) == {3, 7, -1}
    assert all(t.shape == (1, 1 + grid * grid, 768) for t in f.taps.values())
    assert f.tap_map(7).shape == (1, 768, grid, grid)


def test_non_square_and_divisibility(tiny_clip):
    tower = CLIPVisionTower(tiny_clip.visual)
    x = torch.randn(2, 3, 160, 320)
    with torch.no_grad():
        f = tower(x)
    assert f.grid == (10, 20) and f.dense().shape == (2, 32, 10, 20)
    # Row-major patch order: the dense map equals projecting the tokens one by one.
    assert torch.equal(f.dense()[1, :, 3, 17], f.tokens[1, 1 + 3 * 20 + 17])
    with pytest.raises(ValueError, match="divisible"):
        tower.embed(torch.randn(1, 3, 224, 230))


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_positional_resize_is_plain_interpolate_and_cached(fresh_tiny, mode):
    tower = CLIPVisionTower(fresh_tiny.visual, pos_interpolation=mode)
    table = fresh_tiny.visual.positional_embedding
    table.requires_grad_(False)
    grid = table[1:].reshape(1, 14, 14, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(24, 20), mode=mode, align_corners=False).permute(0, 2, 3, 1).reshape(480, 64)
    out = tower.resized_positional_embedding((24, 20))
    assert torch.allclose(out[1:], expected, atol=0, rtol=0)
    assert torch.equal(out[0], table[0])
    assert not torch.allclose(
        out[1:],
        interpolate_positional_embedding(table, (14, 14), (24, 20), "bicubic" if mode == "bilinear" else "bilinear")[
            1:
        ],
    )
    assert tower.resized_positional_embedding((14, 14)) is table  # identity at the native grid
    misses = tower.pos_cache_misses
    with torch.no_grad():
        tower.embed(torch.randn(1, 3, 384, 320))
        tower.embed(torch.randn(2, 3, 384, 320))
    assert tower.pos_cache_misses == misses  # computed once per grid
    with torch.no_grad():
        table.mul_(2.0)  # in-place update bumps _version: the cache must not serve the stale table
    assert torch.allclose(tower.resized_positional_embedding((24, 20))[1:], 2 * expected, atol=1e-5)
    assert tower.pos_cache_misses == misses + 1


def test_trainable_table_gets_gradients(fresh_tiny):
    tower = CLIPVisionTower(fresh_tiny.visual)
    table = fresh_tiny.visual.positional_embedding
    assert table.requires_grad
    tower(torch.randn(1, 3, 256, 256)).tokens.sum().backward()
    assert table.grad is not None and table.grad[1:].abs().sum() > 0
    assert tower.pos_cache_misses == 0


def test_encode_image_and_embed_match_open_clip(tiny_clip):
    tower = CLIPVisionTower(tiny_clip.visual)
    assert list(tower.state_dict()) == ["visual." + k for k in tiny_clip.visual.state_dict()]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(tower.embed(x), tiny_clip.visual._embeds(x), atol=1e-6)
        assert torch.allclose(tower.encode_image(x), tiny_clip.encode_image(x), atol=1e-5)
        f = tower(x)
        assert torch.allclose(f.tokens[:, 0], tiny_clip.encode_image(x), atol=1e-5)


def test_taps_and_overrides(tiny_clip):
    tower = CLIPVisionTower(tiny_clip.visual)
    x = tower.embed(torch.randn(1, 3, 224, 224)).detach()
    blocks = tiny_clip.visual.transformer.resblocks
    # The runner computes open_clip blocks with SDPA (`clip_block_sdpa`): equal to the blocks' own
    # forward up to float summation order.
    close = lambda a, b: torch.allclose(a, b, atol=1e-5, rtol=0)  # noqa: E731
    with torch.no_grad():
        ref, outs = x, []
        for b in blocks:
            ref = b(ref)
            outs.append(ref)
        out, taps = tower.run_blocks(x, taps=(0, 4, -1))
        assert close(out, ref) and close(taps[4], outs[4]) and torch.equal(taps[-1], out)
        calls = []
        out2, _ = tower.run_blocks(x, block_overrides={-1: lambda blk, y, mask: calls.append((blk, mask)) or y})
        assert calls == [(blocks[8], None)] and close(out2, outs[7])
        # A partial run (start/stop) continues exactly where the first one stopped.
        head, head_taps = tower.run_blocks(x, taps=(4,), stop=5)
        tail, _ = tower.run_blocks(head, start=5)
        assert torch.equal(head, taps[4]) and torch.equal(head_taps[4], taps[4]) and torch.equal(tail, out)
    with pytest.raises(IndexError):
        tower.run_blocks(x, taps=(9,))
    with pytest.raises(ValueError, match="outside the blocks run"):
        tower.run_blocks(x, taps=(6,), stop=5)


def test_attn_mask_reaches_blocks_and_overrides(tiny_clip):
    tower = CLIPVisionTower(tiny_clip.visual)
    x = tower.embed(torch.randn(1, 3, 64, 64)).detach()  # 1 + 16 tokens
    mask = torch.full((17, 17), float("-inf")).fill_diagonal_(0.0)
    mask[:, 0] = 0.0  # every token sees itself and the class token
    assert_run_blocks_applies_mask_and_override(
        tower, tiny_clip.visual.transformer.resblocks, x, mask, override_index=-1
    )
    with torch.no_grad():
        with pytest.raises(ValueError, match="additive float"):
            tower.run_blocks(x, attn_mask=mask == 0)  # True means "attend" for SDPA but "blocked" for MHA
        with pytest.raises(ValueError, match=r"\(17, 17\)"):
            tower.run_blocks(x, attn_mask=mask[:5, :5])


def test_pre_block_hook_replaces_deep_prompts(fresh_tiny):
    """Cascade-CLIP's deep prompts: T prompt tokens inserted after the class token before block 0 and
    replaced (not appended) by block i's own prompts before every block i."""
    tower = CLIPVisionTower(fresh_tiny.visual)
    blocks = fresh_tiny.visual.transformer.resblocks
    n, t = len(blocks), 3
    prompts = torch.randn(n, t, 64)
    images = torch.randn(2, 3, 64, 96)
    seen = []

    def deep_prompts(i, x):
        seen.append(i)
        p = prompts[i].expand(x.shape[0], -1, -1)
        return torch.cat([x[:, :1], p, x[:, 1 if i == 0 else 1 + t :]], dim=1)

    with torch.no_grad():
        x = tower.embed(images)
        expected = torch.cat([x[:, :1], prompts[0].expand(2, -1, -1), x[:, 1:]], dim=1)
        taps = {}
        for i, block in enumerate(blocks):
            expected = expected.clone()
            expected[:, 1 : 1 + t] = prompts[i]
            expected = block(expected)
            taps[i] = expected
        out, tapped = tower.run_blocks(x, taps=(2, -1), pre_block=deep_prompts)
        assert seen == list(range(n))
        assert out.shape == (2, 1 + t + 4 * 6, 64)
        assert torch.allclose(out, expected, atol=1e-5) and torch.allclose(tapped[2], taps[2], atol=1e-5)
        # Without replacement the prompts inserted before block 0 flow on: a different result.
        appended, _ = tower.run_blocks(x, pre_block=lambda i, y: deep_prompts(i, y) if i == 0 else y)
        assert not torch.allclose(appended, expected, atol=1e-3)
        # forward(): the patch tokens stay last, so the dense map skips class and prompt tokens.
        f = tower(images, pre_block=deep_prompts)
        assert f.dense().shape == (2, 32, 4, 6)
        assert torch.allclose(f.dense()[1, :, 2, 5], tower.project(expected)[1, 1 + t + 2 * 6 + 5], atol=1e-5)
        seen.clear()
        tower.run_blocks(x, pre_block=lambda i, y: seen.append(i) or y, start=2, stop=5)
        assert seen == [2, 3, 4]


def _quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def _ln(m, x):
    return F.layer_norm(x, (x.shape[-1],), m.weight, m.bias, m.eps)


@pytest.mark.parametrize("residual", ["cls", "token"])
def test_value_path_block_formula(fresh_tiny, residual):
    block = fresh_tiny.visual.transformer.resblocks[8]
    x = torch.randn(2, 5, 64)
    w_v = block.attn.in_proj_weight[128:]
    b_v = block.attn.in_proj_bias[128:]
    v = (_ln(block.ln_1, x) @ w_v.T + b_v) @ block.attn.out_proj.weight.T + block.attn.out_proj.bias
    t = v + (x[:, :1].expand_as(x) if residual == "cls" else x)
    h = _quick_gelu(_ln(block.ln_2, t) @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias)
    expected = t + h @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias
    fn = value_path_block(residual)
    with torch.no_grad():
        assert torch.allclose(fn(block, x), expected, atol=1e-5)
        split_attention_projections(block)
        assert torch.allclose(fn(block, x), expected, atol=1e-5)


def test_self_attention_only_block_equals_diagonal_mask(fresh_tiny):
    block = fresh_tiny.visual.transformer.resblocks[3]
    x = torch.randn(2, 7, 64)
    mask = torch.full((7, 7), float("-inf")).fill_diagonal_(0.0)
    with torch.no_grad():
        expected = block(x, attn_mask=mask)
        assert torch.allclose(self_attention_only_block(block, x), expected, atol=1e-5)
        assert not torch.allclose(block(x), expected, atol=1e-3)
