"""Feature backbones of the pre-CVPR CAT-Seg (guidance for the aggregator), built from Detectron2's own
modules so that the official pre-CVPR checkpoints (Detectron2 layouts) load by name.

- :func:`build_feature_resnet`: Detectron2 ``ResNet`` (``BasicStem`` + bottleneck stages) truncated after
  the last requested stage. The official R101 uses ``STRIDE_IN_1X1 False`` (torchvision layout, as the
  mmseg port's "pytorch" style), ``FREEZE_AT 0`` and Detectron2's default ``FrozenBN``; the mmseg port
  trains its BatchNorms (``SyncBN``). Widths are parameters so that tests can build a tiny one.
- :func:`build_feature_swin`: Detectron2's ``SwinTransformer`` (the Microsoft Swin code the official
  ``D2SwinTransformer`` wraps; same parameter names). Outputs ``p0, p1, p2`` (1/4, 1/8, 1/16).
"""

from __future__ import annotations

from typing import Sequence

from detectron2.modeling.backbone import ResNet
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock
from detectron2.modeling.backbone.swin import SwinTransformer

__all__ = ["build_feature_resnet", "build_feature_swin", "RESNET_BLOCKS"]

RESNET_BLOCKS: dict[int, tuple[int, ...]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
_STAGE_INDEX = {"res2": 0, "res3": 1, "res4": 2, "res5": 3}


def build_feature_resnet(
    depth: int = 101,
    *,
    stem_channels: int = 64,
    base_channels: int = 64,
    out_features: Sequence[str] = ("res2", "res3", "res4"),
    norm: str = "FrozenBN",
    stride_in_1x1: bool = False,
    freeze_at: int = 0,
) -> ResNet:
    """A Detectron2 bottleneck ResNet with stages up to the deepest of ``out_features``.

    Stage i (res{i+2}) has ``base_channels * 2**i`` bottleneck channels and 4x as many outputs
    (R101: 256 / 512 / 1024 at 1/4, 1/8, 1/16); ``norm`` is a Detectron2 norm name ("FrozenBN", "BN",
    "SyncBN")."""
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    unknown = [f for f in out_features if f not in _STAGE_INDEX]
    if unknown:
        raise ValueError(f"unknown ResNet outputs {unknown}; known: {sorted(_STAGE_INDEX)}")
    num_stages = max(_STAGE_INDEX[f] for f in out_features) + 1
    stem = BasicStem(in_channels=3, out_channels=stem_channels, norm=norm)
    stages, in_channels = [], stem_channels
    for i, num_blocks in enumerate(RESNET_BLOCKS[depth][:num_stages]):
        bottleneck = base_channels * 2**i
        stages.append(
            ResNet.make_stage(
                block_class=BottleneckBlock,
                num_blocks=num_blocks,
                stride_per_block=[1 if i == 0 else 2] + [1] * (num_blocks - 1),
                in_channels=in_channels,
                bottleneck_channels=bottleneck,
                out_channels=4 * bottleneck,
                norm=norm,
                stride_in_1x1=stride_in_1x1,
            )
        )
        in_channels = 4 * bottleneck
    return ResNet(stem, stages, out_features=list(out_features), freeze_at=freeze_at)


def build_feature_swin(
    *,
    embed_dim: int = 128,
    depths: Sequence[int] = (2, 2, 18),
    num_heads: Sequence[int] = (4, 8, 16),
    window_size: int = 12,
    pretrain_img_size: int = 384,
    drop_path_rate: float = 0.3,
) -> SwinTransformer:
    """Swin with one output per stage (``p0..p{S-1}``); the official pre-CVPR Swin-B keeps 3 stages."""
    return SwinTransformer(
        pretrain_img_size=pretrain_img_size,
        embed_dim=embed_dim,
        depths=tuple(depths),
        num_heads=tuple(num_heads),
        window_size=window_size,
        drop_path_rate=drop_path_rate,
        out_indices=tuple(range(len(depths))),
    )
