"""TCL (kakaobrain/tcl, CVPR 2023: "Learning to Generate Text-grounded Mask for Open-world Semantic
Segmentation from Only Image-Text Pairs") on the ovseg-d2 core.

Importing this package registers the ``TCL`` meta-architecture in detectron2's
``META_ARCH_REGISTRY`` and the ``"tcl"`` official-checkpoint converter.
"""

from .converter import convert_tcl_checkpoint, map_official_key
from .losses import masked_average_pool, text_grounded_info_nce
from .masker import GatedUpsampleDecoder, Sim2Mask, gumbel_sigmoid_hard, total_variation
from .meta_arch import DEFAULT_LOSS_WEIGHTS, TCL

__all__ = [
    "DEFAULT_LOSS_WEIGHTS",
    "GatedUpsampleDecoder",
    "Sim2Mask",
    "TCL",
    "convert_tcl_checkpoint",
    "gumbel_sigmoid_hard",
    "map_official_key",
    "masked_average_pool",
    "text_grounded_info_nce",
    "total_variation",
]
