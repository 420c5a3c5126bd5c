"""SAZS (Liu et al., "Delving into Shape-aware Zero-shot Semantic Segmentation", CVPR 2023,
Liuxinyv/SAZS) on the ovseg-d2 core.

Importing this package registers the ``SAZS`` meta-architecture in detectron2's ``META_ARCH_REGISTRY``
and the checkpoint converter ``"sazs"`` (official ViT-L/16 DPT and DRN-D-105 checkpoints).
"""

from .backbones import DPTPixelEmbedder, DRNPixelEmbedder
from .converter import convert_sazs_checkpoint, official_arch
from .drn import DRND
from .fusion import mask_iou, snap_to_eigen_segment
from .loss import boundary_map, downsample_nearest, edge_attention_loss, edge_bce_loss, seg_nll_loss
from .meta_arch import DRN_CITYSCAPES_MEAN, DRN_CITYSCAPES_STD, EVAL_MODES, SAZS, build_text_tower

__all__ = [
    "DPTPixelEmbedder",
    "DRND",
    "DRNPixelEmbedder",
    "DRN_CITYSCAPES_MEAN",
    "DRN_CITYSCAPES_STD",
    "EVAL_MODES",
    "SAZS",
    "boundary_map",
    "build_text_tower",
    "convert_sazs_checkpoint",
    "downsample_nearest",
    "edge_attention_loss",
    "edge_bce_loss",
    "mask_iou",
    "official_arch",
    "seg_nll_loss",
    "snap_to_eigen_segment",
]
