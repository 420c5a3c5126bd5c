import torch
import pytest

from ovseg_d2.clip import (
    CATSEG_ATTENTION_RULES,
    CLIPVisionTower,
    apply_trainable_rules,
    build_clip,
    fuse_qkv_state_dict,
    split_attention_projections,
    split_qkv_state_dict,
)


def test_split_keeps_outputs_identical(fresh_tiny, tokenizer):
    image = torch.randn(2, 3, 224, 224)
    tokens = tokenizer(["a photo of a dog.", "sky"])
    with torch.no_grad():
        ref_img, ref_txt = fresh_tiny.encode_image(image), fresh_tiny.encode_text(tokens)
    before = fresh_tiny.state_dict()
    converted = split_attention_projections(fresh_tiny)
    assert len(converted) == 9 + 2
    with torch.no_grad():
        img, txt = fresh_tiny.encode_image(image), fresh_tiny.encode_text(tokens)
    assert (img - ref_img).abs().max() < 1e-6 and (txt - ref_txt).abs().max() < 1e-6
    after = fresh_tiny.state_dict()
    assert not any(k.endswith("in_proj_weight") for k in after)
    assert torch.equal(
        after["visual.transformer.resblocks.0.attn.k_proj_weight"],
        before["visual.transformer.resblocks.0.attn.in_proj_weight"][64:128],
    )
    assert fuse_qkv_state_dict(after).keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in fuse_qkv_state_dict(after).items())
    assert split_qkv_state_dict(before).keys() == after.keys()


def test_catseg_rule_selects_q_and_v_weights_only(fresh_tiny):
    with pytest.raises(ValueError, match="matched nothing"):  # fused weights: nothing is named q_proj yet
        apply_trainable_rules(fresh_tiny, CATSEG_ATTENTION_RULES)
    split_attention_projections(fresh_tiny)
    names = apply_trainable_rules(fresh_tiny, CATSEG_ATTENTION_RULES)
    assert len(names) == 2 * (9 + 2)
    assert all(n.endswith(("attn.q_proj_weight", "attn.v_proj_weight")) for n in names)
    assert sorted(n for n, p in fresh_tiny.named_parameters() if p.requires_grad) == sorted(names)


def test_qv_only_training_leaves_k_and_biases_untouched(fresh_tiny):
    split_attention_projections(fresh_tiny)
    apply_trainable_rules(fresh_tiny, CATSEG_ATTENTION_RULES)
    attn = fresh_tiny.visual.transformer.resblocks[0].attn
    k0, q0, b0 = attn.k_proj_weight.clone(), attn.q_proj_weight.clone(), attn.in_proj_bias.clone()
    opt = torch.optim.AdamW([p for p in fresh_tiny.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    CLIPVisionTower(fresh_tiny.visual)(torch.randn(1, 3, 224, 224)).tokens.sum().backward()
    opt.step()
    assert torch.equal(attn.k_proj_weight, k0) and torch.equal(attn.in_proj_bias, b0)
    assert not torch.equal(attn.q_proj_weight, q0)


def test_split_checkpoint_round_trip(tmp_path, fresh_tiny):
    split_attention_projections(fresh_tiny)
    path = tmp_path / "split.pt"
    torch.save(fresh_tiny.state_dict(), path)
    fused = build_clip("tiny-vit-p16-w64", path)
    assert torch.equal(
        fused.visual.transformer.resblocks[3].attn.in_proj_weight[128:],
        fresh_tiny.visual.transformer.resblocks[3].attn.v_proj_weight,
    )
