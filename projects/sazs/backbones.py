"""SAZS pixel embedders: (B, 3, H, W) normalised images -> 1/8-resolution pixel embeddings and
boundary logits. Both return `(features (B, C, H/8, W/8), edge_logits (B, 1, H/8, W/8))`.

- `DPTPixelEmbedder`: what the official `DPTSegmentationModel(backbone="vitl16_384")` actually
  computes: a timm ViT run up to the tap block (the official model runs all 24 blocks and reads the
  output of block 11 through a forward hook; blocks 12-23 and the DPT fusion decoder never influence
  the output, so they are not built), DPT's second "reassemble" branch (readout projection of
  [patch; CLS], 1x1 conv, 2x2 transposed conv) and the 1x1 edge head.
- `DRNPixelEmbedder`: DRN-D-105 (`drn.DRND`) + PSP-style pyramid pooling head + edge head.
"""
from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ovseg_d2.checkpoint import load_checkpoint_file
from ovseg_d2.clip import TimmViTTower

from .drn import DRND

__all__ = ["DPTPixelEmbedder", "DRNPixelEmbedder"]


class DPTPixelEmbedder(nn.Module):
    """timm ViT (blocks 0..tap_block) -> DPT reassemble branch 2 (stride 8) -> edge head.

    The positional table is the pretraining grid's (`img_size // patch_size`), resized bilinearly
    (align_corners False, no antialias) to each input's grid, as the official `forward_flex`.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 1024,
        num_heads: int = 16,
        tap_block: int = 11,
        img_size: int = 384,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        out_channels: int = 512,
        vit_weights: str | None = None,
    ) -> None:
        """`vit_weights`: a timm ViT checkpoint (e.g. `jx_vit_large_p16_384-b3be5167.pth`, the official
        init) whose patch embedding, tables and blocks 0..tap_block are loaded strictly."""
        super().__init__()
        vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=tap_block + 1,
            num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, num_classes=0,
            norm_layer=partial(nn.LayerNorm, eps=1e-6),
        )
        vit.norm = nn.Identity()  # the final norm's output is discarded by the official model
        self.vit = TimmViTTower(vit, pos_interpolation="bilinear")
        self.readout = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU())
        self.proj = nn.Conv2d(embed_dim, out_channels, kernel_size=1)
        self.up = nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2, stride=2)
        self.edge_head = nn.Conv2d(out_channels, 1, kernel_size=1)
        self.out_channels = out_channels
        self.stride = patch_size // 2  # the transposed conv doubles the patch grid: 8 for patch 16
        if vit_weights is not None:
            self.load_vit_weights(vit_weights)

    def load_vit_weights(self, path: str) -> None:
        state = _read_weights(path)
        own = self.vit.visual.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise KeyError(f"{path}: not a timm ViT checkpoint for this model, missing {missing[:4]} ({len(missing)} keys)")
        self.vit.visual.load_state_dict({k: state[k] for k in own}, strict=True)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1 + h*w, W): the tokens after the tap block (before any final norm)."""
        x, _ = self.vit.run_blocks(self.vit.embed(images))
        return x

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = self.vit.grid_for(images.shape[-2:])
        tokens = self.tokens(images)
        patches = tokens[:, 1:]
        cls = tokens[:, :1].expand_as(patches)
        x = self.readout(torch.cat([patches, cls], dim=-1))  # DPT "project" readout
        x = x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)
        features = self.up(self.proj(x))
        return features, self.edge_head(features)


def _read_weights(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"backbone weights not found: {path}")
    state = load_checkpoint_file(path)
    state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
    return {k.removeprefix("module."): v for k, v in state.items()}


class _PoolBranch(nn.Module):
    def __init__(self, channels: int, out_channels: int, bins: int) -> None:
        super().__init__()
        self.bins = bins
        self.conv = nn.Conv2d(channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(F.adaptive_avg_pool2d(x, self.bins))))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


class DRNPixelEmbedder(nn.Module):
    """DRN-D (output stride 8) -> pyramid pooling (1, 2, 3, 6 bins) -> 3x3 fuse conv + BN + ReLU ->
    channel dropout (`drop_rate`: 0.95 PASCAL / 0.9 COCO in the official scripts) -> features; edge
    head on the dropped-out features, as the official `DRNSeg`."""

    def __init__(
        self,
        *,
        channels: Sequence[int] = (16, 32, 64, 128, 256, 512, 512, 512),
        layers: Sequence[int] = (1, 1, 3, 4, 23, 3, 1, 1),
        out_channels: int = 512,
        bins: Sequence[int] = (1, 2, 3, 6),
        drop_rate: float = 0.9,
        drn_weights: str | None = None,
    ) -> None:
        """`drn_weights`: fyu/drn ImageNet weights (`drn_d_105-12b40979.pth`, the official init); the
        classifier `fc` is not loaded."""
        super().__init__()
        self.base = DRND(channels=channels, layers=layers)
        if drn_weights is not None:
            state = {re.sub(r"^layer(\d)\.", r"\1.", k): v for k, v in _read_weights(drn_weights).items() if not k.startswith("fc.")}
            self.base.load_state_dict(state, strict=True)
        c = self.base.out_channels
        self.pyramid = nn.ModuleList(_PoolBranch(c, out_channels, b) for b in bins)
        self.fuse = nn.Conv2d(c + len(bins) * out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.fuse_bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout2d(drop_rate)
        self.edge_head = nn.Conv2d(out_channels, 1, kernel_size=1)
        self.out_channels = out_channels
        self.stride = 8

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.base(images)
        x = torch.cat([x, *(branch(x) for branch in self.pyramid)], dim=1)
        features = self.drop(F.relu(self.fuse_bn(self.fuse(x))))
        return features, self.edge_head(features)
