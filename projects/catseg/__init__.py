"""CAT-Seg (cvlab-kaist/CAT-Seg, CVPR 2024 version) on the ovseg-d2 core.

Importing this package registers the ``CATSeg`` meta-architecture in detectron2's
``META_ARCH_REGISTRY`` and the ``"catseg"`` official-checkpoint converter.
"""

from .aggregator import CATSegAggregator
from .converter import convert_catseg_checkpoint, map_official_key
from .decoder import CATSegDecoder
from .loss import catseg_bce_loss
from .meta_arch import CATSeg, CLIP_PRESETS

__all__ = [
    "CATSeg",
    "CATSegAggregator",
    "CATSegDecoder",
    "CLIP_PRESETS",
    "catseg_bce_loss",
    "convert_catseg_checkpoint",
    "map_official_key",
]
