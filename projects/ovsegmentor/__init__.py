"""OVSegmentor (Xu et al., CVPR 2023; Jazzcharles/OVSegmentor) on the ovseg-d2 core.

Importing this package registers the ``OVSegmentor`` meta-architecture in detectron2's
``META_ARCH_REGISTRY`` and the ``"ovsegmentor"`` official-checkpoint converter.
"""

from .converter import convert_ovsegmentor_checkpoint
from .group_vit import GroupingBlock, GroupViTEncoder, GroupViTOutput
from .heads import EntityCompletionHead, ProjectionHead
from .mask_consistency import MaskConsistency
from .meta_arch import OVSegmentor
from .zero_shot import ZeroShotClassificationHook, zero_shot_accuracy

__all__ = [
    "EntityCompletionHead",
    "GroupViTEncoder",
    "GroupViTOutput",
    "GroupingBlock",
    "MaskConsistency",
    "OVSegmentor",
    "ProjectionHead",
    "ZeroShotClassificationHook",
    "convert_ovsegmentor_checkpoint",
    "zero_shot_accuracy",
]
