"""Image-caption data for contrastive pretraining (toy CLIP, TCL on CC3M+CC12M, OVSegmentor on CC12M).

* `sources`: webdataset shards and JSON-lines meta files -> records; dataset registration.
* `stream`: `ImageTextStream` / `build_image_text_train_loader`, the streaming train loader
  (rank and worker split, resampling, shuffle buffer, cross-image pairing hook).
* `mapper`: `ImageTextMapper`, record -> `{"image", "caption", ...}` with the configurable
  augmentations (random resized crop, flip, RandAugment, RandomErasing).
* `entities`: caption entities, masked questions / answers and the cross-image class lists
  (OVSegmentor).
"""
from .entities import (
    ClassListPairing,
    EntityQuestionMapper,
    EntityVocabulary,
    build_cross_image_lists,
    masked_question,
    write_cross_image_lists,
)
from .mapper import ImageTextMapper
from .sources import (
    DATASET_TYPE,
    CorruptSampleError,
    JsonLinesIndex,
    expand_shards,
    load_jsonl_records,
    read_record_image,
    register_image_text_dataset,
)
from .stream import ImageTextStream, PairingFn, build_image_text_train_loader

__all__ = [
    "ClassListPairing", "EntityQuestionMapper", "EntityVocabulary", "build_cross_image_lists", "masked_question",
    "write_cross_image_lists",
    "DATASET_TYPE", "CorruptSampleError", "ImageTextMapper", "ImageTextStream", "JsonLinesIndex", "PairingFn",
    "build_image_text_train_loader", "expand_shards", "load_jsonl_records", "read_record_image",
    "register_image_text_dataset",
]
