"""The pre-CVPR converters: the official detectron2 layout (written here from the official key names of
cvlab-kaist/CAT-Seg@af4fa0b) loads back into the model, and both converters reach the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import convert_checkpoint
from ovseg_d2.clip import fuse_qkv_state_dict
from ovseg_d2.projects.catseg import CATSeg, build_feature_resnet

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "golden" / "catseg_mmseg"
P = "sem_seg_head.predictor."

# our aggregator names -> the official pre-CVPR ones (cat_seg/modeling/transformer/model.py @ af4fa0b)
OFFICIAL_AGG = (
    (r"^layers\.(\d)\.spatial\.blocks\.0\.", r"layers.\1.swin_block.block_1."),
    (r"^layers\.(\d)\.spatial\.blocks\.1\.", r"layers.\1.swin_block.block_2."),
    (r"^layers\.(\d)\.spatial\.guidance_norm\.", r"layers.\1.swin_block.guidance_norm."),
    (r"^layers\.(\d)\.classes\.attn\.", r"layers.\1.attention.attention."),
    (r"^layers\.(\d)\.classes\.mlp\.fc1\.", r"layers.\1.attention.MLP.0."),
    (r"^layers\.(\d)\.classes\.mlp\.fc2\.", r"layers.\1.attention.MLP.2."),
    (r"^layers\.(\d)\.classes\.norm(\d)\.", r"layers.\1.attention.norm\2."),
    (r"^corr_embed\.", "conv1."),
    (r"^appearance_proj\.", "guidance_projection.0."),
    (r"^text_proj\.", "text_guidance_projection.0."),
    (r"^decoder_guidance_proj\.(\d)\.", r"decoder_guidance_projection.\1.0."),
    (r"^decoder\.stages\.0\.up\.", "decoder1.up."),
    (r"^decoder\.stages\.1\.up\.", "decoder2.up."),
    (r"^decoder\.stages\.(\d)\.conv1\.", lambda m: f"decoder{int(m.group(1)) + 1}.conv.double_conv.0."),
    (r"^decoder\.stages\.(\d)\.norm1\.", lambda m: f"decoder{int(m.group(1)) + 1}.conv.double_conv.1."),
    (r"^decoder\.stages\.(\d)\.conv2\.", lambda m: f"decoder{int(m.group(1)) + 1}.conv.double_conv.3."),
    (r"^decoder\.stages\.(\d)\.norm2\.", lambda m: f"decoder{int(m.group(1)) + 1}.conv.double_conv.4."),
    (r"^decoder\.predictor\.", "head."),
)


def tiny_model() -> CATSeg:
    torch.manual_seed(0)
    return CATSeg(
        train_class_names=["cat", "dog"],
        clip_model="tiny-vit-p16-w64-l3",
        templates="imagenet80",
        text_recipe=dict(synonyms="mean", template_reduce="normalize_then_mean"),
        last_block_residual="token",
        clip_finetune="visual_attention",
        feature_backbone=build_feature_resnet(50, stem_channels=16, base_channels=8, norm="FrozenBN"),
        aggregator=dict(pad_len=0),
    )


def official_layout(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in fuse_qkv_state_dict(ours).items():
        if key.startswith("feature_backbone."):
            out["backbone." + key[len("feature_backbone.") :]] = value
        elif key.startswith("clip_image."):
            out[P + "clip_model." + key[len("clip_image.") :]] = value
        elif key.startswith("clip_text."):
            out[P + "clip_model." + key[len("clip_text.") :]] = value
        else:
            rest = key[len("aggregator.") :]
            pattern, repl = next((p, r) for p, r in OFFICIAL_AGG if re.match(p, rest))
            out[P + "transformer." + re.sub(pattern, repl, rest)] = value
    out[P + "clip_model.logit_scale"] = torch.tensor(4.6)
    return out


def test_d2_legacy_round_trip():
    model = tiny_model()
    ours = model.state_dict()
    official = official_layout({k: v.clone() for k, v in ours.items()})
    assert any(k.endswith("attn.in_proj_weight") for k in official)
    converted = convert_checkpoint("catseg_d2_legacy", {"model": official})
    assert converted.keys() == ours.keys()
    for k, v in ours.items():
        assert torch.equal(converted[k], v), k
    # the model's load hook converts an official state dict given to load_state_dict
    fresh = tiny_model()
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(official, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in ours.items())


def test_d2_legacy_missing_key_is_named():
    official = official_layout(tiny_model().state_dict())
    del official[P + "transformer.layers.1.attention.norm2.bias"]
    with pytest.raises(ValueError, match=r"layers\.1\.attention\.norm2\.bias"):
        convert_checkpoint("catseg_d2_legacy", official)


def test_mmseg_missing_key_is_named():
    state = torch.load(GOLDEN / "mmseg_port_tiny.pth", weights_only=True)
    del state["state_dict"]["neck.layers.0.spatial_agg.block_2.attn.w_msa.qk.bias"]
    with pytest.raises(ValueError, match=r"block_2\.attn\.w_msa\.qk\.bias"):
        convert_checkpoint("catseg_mmseg", state)


def test_cli_converts_the_mmseg_checkpoint(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import convert_checkpoint as cli
    finally:
        sys.path.pop(0)
    out = tmp_path / "converted.pth"
    assert (
        cli.main(["--method", "catseg_mmseg", "--input", str(GOLDEN / "mmseg_port_tiny.pth"), "--output", str(out)])
        == 0
    )
    model = torch.load(out, weights_only=True)["model"]
    assert "aggregator.layers.0.spatial.blocks.0.attn.q.weight" in model
    assert "feature_backbone.res4.5.conv3.norm.running_var" in model


def test_mmseg_unknown_backbone_is_refused_by_name():
    """Only the port's ResNet and SwinTransformer layouts convert (tests/catseg/test_converter_mmseg_swin.py)."""
    from ovseg_d2.projects.catseg.converter_feature_backbone import map_mmseg_key

    key = "backbone.feature_extractor.downsample_layers.0.0.weight"  # e.g. an mmseg ConvNeXt
    with pytest.raises(NotImplementedError, match=re.escape(key)):
        map_mmseg_key(key)
