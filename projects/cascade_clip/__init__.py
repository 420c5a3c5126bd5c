"""Cascade-CLIP (HVision-NKU/Cascade-CLIP, ICML 2024) on the ovseg-d2 core.

Importing this package registers the ``CascadeCLIP`` meta-architecture in detectron2's
``META_ARCH_REGISTRY`` and the ``"cascade_clip"`` official-checkpoint converter.
"""

from .backbone import BackboneOutput, CascadeCLIPBackbone, CascadeVisionTower, DeepVisualPrompts
from .converter import convert_cascade_clip_checkpoint, map_official_key
from .head import CascadeHead, gaussian_stage_weights
from .loss import focal_dice_loss, pseudo_label_unseen
from .meta_arch import CascadeCLIP

__all__ = [
    "BackboneOutput",
    "CascadeCLIP",
    "CascadeCLIPBackbone",
    "CascadeHead",
    "CascadeVisionTower",
    "DeepVisualPrompts",
    "convert_cascade_clip_checkpoint",
    "focal_dice_loss",
    "gaussian_stage_weights",
    "map_official_key",
    "pseudo_label_unseen",
]
