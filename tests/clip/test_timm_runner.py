"""The ViT token runner over timm VisionTransformers (SAZS's ViT-L/16 DPT taps, OVSegmentor's DINO
ViT): equal to timm's own forward, at the native size and at resized grids, for every prefix layout."""

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from ovseg_d2.clip import TimmViTTower, interpolate_positional_embedding
from tests.clip.tower_checks import assert_run_blocks_applies_mask_and_override

# (class_token, reg_tokens, no_embed_class, global_pool, pre_norm): original ViT/DINO, registers with a
# class-less table (DeiT-3 / big_vision), registers inside the table, no class token, CLIP-style norm_pre.
LAYOUTS = {
    "cls": dict(class_token=True, reg_tokens=0, no_embed_class=False),
    "cls+reg,no_embed_class": dict(class_token=True, reg_tokens=2, no_embed_class=True),
    "cls+reg,table_rows": dict(class_token=True, reg_tokens=2, no_embed_class=False),
    "no_cls": dict(class_token=False, reg_tokens=0, no_embed_class=False, global_pool="avg"),
    "norm_pre": dict(class_token=True, reg_tokens=0, no_embed_class=False, pre_norm=True),
}


def _tiny_vit(img_size=32, **layout) -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(
        img_size=img_size, patch_size=8, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0, num_classes=0, **layout
    ).eval()
    with torch.no_grad():  # timm draws cls/reg near 0 and pos at std .02: make each one matter
        for name in ("pos_embed", "cls_token", "reg_token"):
            if getattr(vit, name, None) is not None:
                getattr(vit, name).normal_(0.0, 0.5)
    return vit


def _prefix_count(vit: VisionTransformer) -> int:
    return vit.num_prefix_tokens


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_equals_timm_forward_features_and_hooks(layout):
    vit = _tiny_vit(**layout)
    tower = TimmViTTower(vit)
    images = torch.randn(2, 3, 32, 32)
    hooked = {}
    handles = [vit.blocks[i].register_forward_hook(lambda m, a, out, i=i: hooked.__setitem__(i, out)) for i in (0, 2)]
    with torch.no_grad():
        expected = vit.forward_features(images)
        f = tower(images, taps=(0, -1))
    for h in handles:
        h.remove()
    assert f.tokens.shape == (2, _prefix_count(vit) + 16, 32)
    assert (f.tokens - expected).abs().max() < 1e-5
    assert torch.equal(f.taps[0], hooked[0]) and torch.equal(f.taps[-1], hooked[2])
    assert f.dense().shape == (2, 32, 4, 4)


@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_resized_grid_equals_timm_built_at_that_size(layout, mode):
    """At 48x64 the runner must equal a timm model built for 48x64 whose table is the 4x4 grid resized
    by plain F.interpolate, with the prefix rows (if the table has them) kept as they are."""
    vit = _tiny_vit(**layout)
    big = _tiny_vit(img_size=(48, 64), **layout)
    table = vit.pos_embed[0]
    rows = 0 if vit.no_embed_class else vit.num_prefix_tokens
    grid = table[rows:].reshape(1, 4, 4, 32).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(6, 8), mode=mode, align_corners=False).permute(0, 2, 3, 1).reshape(48, 32)
    state = {k: v for k, v in vit.state_dict().items() if k != "pos_embed"}
    state["pos_embed"] = torch.cat([table[:rows], grid])[None]
    big.load_state_dict(state)
    images = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        out = TimmViTTower(vit, pos_interpolation=mode)(images)
        assert (out.tokens - big.forward_features(images)).abs().max() < 1e-5
    assert out.grid == (6, 8)


def test_state_dict_keys_and_trainable_table():
    vit = _tiny_vit(**LAYOUTS["cls+reg,no_embed_class"])
    tower = TimmViTTower(vit)
    assert list(tower.state_dict()) == ["visual." + k for k in vit.state_dict()]
    tower(torch.randn(1, 3, 40, 24)).tokens.sum().backward()  # resized table (5x3): gradients reach pos_embed
    assert vit.pos_embed.grad is not None and vit.pos_embed.grad.abs().sum() > 0
    assert tower.pos_cache_misses == 0
    vit.pos_embed.requires_grad_(False)  # frozen (1, N, W) parameter: resized once per grid
    with torch.no_grad():
        first = tower.resized_positional_embedding((5, 3))
        assert tower.resized_positional_embedding((5, 3)) is first and tower.pos_cache_misses == 1
        vit.pos_embed.add_(1.0)
        assert torch.allclose(tower.resized_positional_embedding((5, 3))[2:], first[2:] + 1.0, atol=1e-5)


def test_attn_mask_and_overrides_on_timm_blocks():
    vit = _tiny_vit(**LAYOUTS["cls"])
    tower = TimmViTTower(vit)
    x = tower.embed(torch.randn(1, 3, 32, 32)).detach()
    mask = torch.zeros(17, 17)
    mask[1:, 0] = float("-inf")  # patches may not read the class token
    assert_run_blocks_applies_mask_and_override(tower, vit.blocks, x, mask, override_index=2)
    with torch.no_grad(), pytest.raises(ValueError, match="additive float"):
        tower.run_blocks(x, attn_mask=mask == 0)


def test_unsupported_backbones_fail_clearly():
    with pytest.raises(TypeError, match="timm VisionTransformer"):
        TimmViTTower(torch.nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="pos_embed=None"):
        TimmViTTower(VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, pos_embed="none"))
    dropping = TimmViTTower(
        VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, patch_drop_rate=0.5)
    )
    dropping.eval()(torch.randn(1, 3, 32, 32))  # inactive at eval: fine
    with pytest.raises(NotImplementedError, match="patch_drop"):
        dropping.train()(torch.randn(1, 3, 32, 32))


def test_interpolate_without_class_row_matches_grid_resize():
    table = torch.randn(16, 8)  # GroupViT/OVSegmentor-style table: patches only
    out = interpolate_positional_embedding(table, (4, 4), (2, 3), "bicubic", prefix_rows=0)
    expected = F.interpolate(table.T.reshape(1, 8, 4, 4), size=(2, 3), mode="bicubic", align_corners=False)
    assert torch.equal(out, expected.reshape(8, 6).T)
    with pytest.raises(ValueError, match=r"\(1 \+ 4\*4, width\)"):
        interpolate_positional_embedding(table, (4, 4), (2, 3))
