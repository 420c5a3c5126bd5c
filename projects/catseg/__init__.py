"""CAT-Seg (cvlab-kaist/CAT-Seg, CVPR 2024 version, and the pre-CVPR feature-backbone version that
mmsegmentation ported) on the ovseg-d2 core.

Importing this package registers the ``CATSeg`` meta-architecture in detectron2's
``META_ARCH_REGISTRY`` and the checkpoint converters ``"catseg"`` (official CVPR release),
``"catseg_mmseg"`` (mmseg ``projects/CAT-Seg``) and ``"catseg_d2_legacy"`` (official pre-CVPR release).
"""

from .aggregator import CATSegAggregator
from .backbones import build_feature_resnet, build_feature_swin
from .converter import convert_catseg_checkpoint, map_official_key
from .converter_feature_backbone import convert_catseg_d2_legacy_checkpoint, convert_catseg_mmseg_checkpoint
from .decoder import CATSegDecoder
from .loss import catseg_bce_loss, catseg_cross_entropy_loss
from .meta_arch import CATSeg, CLIP_PRESETS

__all__ = [
    "CATSeg",
    "CATSegAggregator",
    "CATSegDecoder",
    "CLIP_PRESETS",
    "build_feature_resnet",
    "build_feature_swin",
    "catseg_bce_loss",
    "catseg_cross_entropy_loss",
    "convert_catseg_checkpoint",
    "convert_catseg_d2_legacy_checkpoint",
    "convert_catseg_mmseg_checkpoint",
    "map_official_key",
]
