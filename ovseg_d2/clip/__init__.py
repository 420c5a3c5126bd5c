"""CLIP towers on open_clip: building and weight loading, the dense any-resolution ViT token runner
(open_clip and timm ViTs), the text tower, prompt templates and selective fine-tuning (vocabulary
embeddings built on the text tower: `ovseg_d2.modeling.text_classifiers`)."""

from .build import build_clip, get_model_config, get_tokenizer, load_clip_weights, read_state_dict
from .constants import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, clip_pixel_stats
from .dense import self_attention_only_block, value_path_block, value_projection
from .finetune import (
    CATSEG_ATTENTION_RULES,
    apply_trainable_rules,
    fuse_qkv_state_dict,
    split_attention_projections,
    split_qkv_state_dict,
)
from .templates import available_templates, get_templates
from .text import CLIPTextTower
from .visual import (
    BlockOverride,
    CLIPVisionTower,
    PreBlockHook,
    TimmViTTower,
    ViTTokenRunner,
    VisualFeatures,
    interpolate_positional_embedding,
    tokens_to_map,
)

__all__ = [
    "build_clip",
    "get_model_config",
    "get_tokenizer",
    "load_clip_weights",
    "read_state_dict",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "clip_pixel_stats",
    "self_attention_only_block",
    "value_path_block",
    "value_projection",
    "CATSEG_ATTENTION_RULES",
    "apply_trainable_rules",
    "fuse_qkv_state_dict",
    "split_attention_projections",
    "split_qkv_state_dict",
    "available_templates",
    "get_templates",
    "CLIPTextTower",
    "BlockOverride",
    "CLIPVisionTower",
    "PreBlockHook",
    "TimmViTTower",
    "ViTTokenRunner",
    "VisualFeatures",
    "interpolate_positional_embedding",
    "tokens_to_map",
]
