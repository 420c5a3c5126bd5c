"""The toy open-vocabulary world: 30 "colour shape" classes (24 seen / 6 unseen), generated offline
in the on-disk layouts of the real data, so every method can be trained and evaluated on 2 CPU cores.

`generate_toy_world(root, ToyWorldConfig(...))` writes it; `register_toy_world(root)` registers the
datasets (`toy_seen_train`, `toy_val`, `toy_captions_train`, ...); `evaluate_retrieval` scores a
CLIP's zero-shot image-to-text retrieval over the 30 class prompts.
"""
from .generate import SPLITS, ToyWorldConfig, ToyWorldLayout, generate_toy_world, read_meta, render_toy_image
from .register import (
    DEFAULT_ROOT,
    IMAGE_TEXT_DATASETS,
    PRETRAIN_ROOT,
    SEM_SEG_DATASETS,
    load_toy_dataset,
    register_toy_world,
)
from .world import (
    CLASS_NAMES,
    CLASSES,
    COLOURS,
    SEEN_CLASS_IDS,
    SEEN_CLASS_NAMES,
    SHAPES,
    UNSEEN_CLASS_IDS,
    UNSEEN_CLASS_NAMES,
)

__all__ = [
    "CLASSES", "CLASS_NAMES", "COLOURS", "SHAPES", "SEEN_CLASS_IDS", "SEEN_CLASS_NAMES",
    "UNSEEN_CLASS_IDS", "UNSEEN_CLASS_NAMES", "SPLITS", "ToyWorldConfig", "ToyWorldLayout",
    "generate_toy_world", "read_meta", "render_toy_image", "register_toy_world", "load_toy_dataset",
    "SEM_SEG_DATASETS", "IMAGE_TEXT_DATASETS", "DEFAULT_ROOT", "PRETRAIN_ROOT",
]

register_toy_world()  # default root $DETECTRON2_DATASETS/toy_world, like the builtin datasets
