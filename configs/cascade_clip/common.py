# Shared pieces of the Cascade-CLIP recipes (official configs/_base_ of HVision-NKU/Cascade-CLIP):
# CLIP ViT-B/16 at 512 with deep visual prompts, mmseg's 512x512 training pipeline, slide inference
# (short side 512, windows 512 / stride 426), AdamW 2e-4 / wd 0.01 on every trainable parameter,
# poly 0.9 to 1e-6 with a 1500-iteration linear warmup, mmseg's metric convention.
# The published settings (coco171 / pc59 / voc20, inductive and transductive `_st`, cross-dataset)
# import from here and set the dataset, the prompt count, the text embeddings and the schedule.
from detectron2.config import LazyCall as L
from detectron2.data import transforms as T

from ovseg_d2.data.mappers import MmsegResize, PhotometricDistortion, SemSegDatasetMapper
from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.engine.poly_schedule import MmcvPolyParamScheduler
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.cascade_clip import CascadeCLIP

from ..common.data import dataloader
from ..common.optim import AdamW as optimizer
from ..common.train import train

# Official text files (configs/_base_/datasets/text_embedding/*.npy of the official repository, fp16,
# rows in dataset order) are read by ovseg_d2.modeling.PrecomputedTextClassifier; set
# `model.text_classifier.path` to where they are (or regenerate them: README, "Text embeddings").
TEXT_EMBEDDINGS_DIR = "datasets/cascade_clip_text"

model = L(CascadeCLIP)(
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    clip_model="ViT-B-16-quickgelu",
    clip_weights=None,  # OpenAI ViT-B-16.pt to train; not needed with a converted checkpoint
    image_size=512,
    num_prompt_tokens=50,
    prompt_dropout=0.1,
    tap_blocks=(5, 6, 7, 8, 9, 10),
    stage_taps=((0, 1, 2), (3, 4, 5)),
    decoder_layers=3,
    decoder_heads=8,
    decoder_dropout=0.1,
    text_classifier=None,  # each setting sets its fixed embedding file; None = live text encoding
    templates="cascade_clip_multi",
    seen_bias=0.1,
    unseen_train_classes=None,
    focal_weight=100.0,
    dice_weight=1.0,
    train_crop_size=(512, 512),
    double_class_embedding=True,  # official quirk, checkpoints depend on it
    freeze_tap_projections=True,  # official: the tap projections stay at their random init
    inference=L(InferencePolicy)(window=512, stride=426),
)

# Train: Resize (2048, 512) x [0.5, 2] keep ratio -> RandomCrop 512 (cat_max_ratio 0.75) -> photometric
# distortion -> flip; the model pads to 512 (image 0 after normalisation, label 255).
dataloader.train.num_workers = 4
dataloader.train.mapper = L(SemSegDatasetMapper)(
    is_train=True,
    augmentations=[
        L(MmsegResize)(scale=(2048, 512), ratio_range=(0.5, 2.0)),
        L(T.RandomCrop_CategoryAreaConstraint)(crop_type="absolute", crop_size=(512, 512), single_category_max_area=0.75, ignored_category=255),
        L(PhotometricDistortion)(),
        L(T.RandomFlip)(prob=0.5, horizontal=True, vertical=False),
    ],
)
# Test: short side exactly 512 (mmseg's min_size branch, OpenCV bilinear), then slide inference.
dataloader.test.mapper = L(SemSegDatasetMapper)(is_train=False, augmentations=[L(MmsegResize)(scale=(2048, 512), min_size=512)])
dataloader.evaluator = dict(metric_convention="mmseg")

optimizer.lr = 2e-4  # official base 2e-5 x10 for `backbone` and `head` (every trainable parameter)
optimizer.weight_decay = 0.01
optimizer.weight_decay_norm = 0.01  # mmcv's norm/ln decay rules never reach a trainable parameter
optimizer.weight_decay_embed = 0.01

WARMUP_ITERS = 1500


def poly_schedule(max_iter: int, warmup_iters: int = WARMUP_ITERS):
    """mmcv poly 0.9 to min_lr 1e-6 with a linear warmup (official: 1500 iterations) from ratio 1e-6."""
    return L(MmcvPolyParamScheduler)(
        power=0.9, end_value=1e-6 / optimizer.lr, warmup_length=warmup_iters / max_iter, warmup_ratio=1e-6
    )


train.ddp = dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False)
train.eval_period = 0  # official: no in-training evaluation
train.log_period = 50
