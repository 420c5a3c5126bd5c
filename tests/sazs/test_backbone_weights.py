"""Backbone initialisation from the official pretrained files (timm ViT, fyu/drn DRN-D), on tiny
checkpoints written here in those files' layouts."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ovseg_d2.projects.sazs import DPTPixelEmbedder, DRNPixelEmbedder
from ovseg_d2.projects.sazs.drn import DRND

TINY_DRN = dict(channels=(4, 4, 8, 8, 8, 8, 8, 8), layers=(1, 1, 1, 1, 1, 1, 1, 1))


def test_vit_weights_load_the_blocks_up_to_the_tap(tmp_path: Path) -> None:
    torch.manual_seed(0)
    # A whole pretrained ViT (more blocks than the tap needs, final norm, classifier head), as timm saves it.
    pretrained = VisionTransformer(img_size=32, patch_size=16, embed_dim=64, depth=4, num_heads=4, num_classes=10,
                                   norm_layer=partial(nn.LayerNorm, eps=1e-6))
    path = tmp_path / "vit.pth"
    torch.save(pretrained.state_dict(), path)
    embedder = DPTPixelEmbedder(embed_dim=64, num_heads=4, tap_block=1, img_size=32, out_channels=16, vit_weights=str(path))
    loaded = embedder.vit.visual.state_dict()
    for key in ("pos_embed", "cls_token", "patch_embed.proj.weight", "blocks.1.mlp.fc2.weight"):
        assert torch.equal(loaded[key], pretrained.state_dict()[key]), key
    assert "blocks.2.norm1.weight" not in loaded  # blocks after the tap are not built

    torch.save({"state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(KeyError, match="not a timm ViT checkpoint"):
        DPTPixelEmbedder(embed_dim=64, num_heads=4, tap_block=1, img_size=32, out_channels=16,
                         vit_weights=str(tmp_path / "other.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        DPTPixelEmbedder(embed_dim=64, num_heads=4, tap_block=1, img_size=32, vit_weights=str(tmp_path / "missing.pth"))


def test_drn_weights_in_the_fyu_layout_load_without_the_classifier(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = DRND(**TINY_DRN).state_dict()
    # fyu/drn names its stages layer0 .. layer8 and has a classifier `fc`.
    official = {f"layer{k}": v for k, v in ours.items()}
    official["fc.weight"], official["fc.bias"] = torch.randn(1000, 8, 1, 1), torch.randn(1000)
    assert "layer0.0.weight" in official and "layer8.1.running_var" in official
    path = tmp_path / "drn_d_tiny.pth"
    torch.save(official, path)
    embedder = DRNPixelEmbedder(**TINY_DRN, out_channels=16, drn_weights=str(path))
    for key, value in ours.items():
        assert torch.equal(embedder.base.state_dict()[key], value), key
