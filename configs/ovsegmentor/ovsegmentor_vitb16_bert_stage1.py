# OVSegmentor stage 1 (paper: ViT-B/16 DINO + BERT-base, 8 groups; CC4M, 30 epochs, 8 x 256 images):
# image-caption InfoNCE + masked entity completion.
#   python tools/train_net.py --config-file configs/ovsegmentor/ovsegmentor_vitb16_bert_stage1.py --num-gpus 8
# Files (relative paths resolve against $DETECTRON2_DATASETS / the working directory):
#   cc4m/cc4m.jsonl + cc4m/images/   JSON lines {"filename", "caption"} (CC12M filtered to captions naming
#                                    one of the 100 entities, spec 9.1)
#   pretrained/dino_vitbase16_pretrain.pth, pretrained/bert-base-uncased/ (HF folder),
#   pretrained/distilbert-base-uncased/ (tokenizer files)
# Evaluation every epoch on VOC / PASCAL Context / COCO-Object (+ ADE20K), the best VOC mIoU kept
# (model_best.pth; stage 2 starts from it, as officially).
from detectron2.config import LazyCall as L

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD
from ovseg_d2.data.image_text import EntityQuestionMapper, ImageTextMapper, build_image_text_train_loader
from ovseg_d2.data.mappers import MmsegResize
from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.ovsegmentor import OVSegmentor, ZeroShotClassificationHook

from ..common.data import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

ITERS_PER_EPOCH = 1950  # ~4.0M CC4M pairs / 2048 (the exact count is not published)

model = L(OVSegmentor)(
    train_class_names=L(prompt_classes)(dataset_name="ovseg_voc21_val"),  # captions train; this is the eval default
    image_encoder=dict(
        embed_dim=768, depth=12, num_heads=8, patch_size=16, img_size=224, grouping_after=6,
        num_group_tokens=64, num_output_groups=8, drop_path_rate=0.1, hard_assignment=True,
    ),
    image_weights="pretrained/dino_vitbase16_pretrain.pth",
    text_model="pretrained/bert-base-uncased",
    tokenizer="pretrained/distilbert-base-uncased",
    context_length=77,
    output_dim=256,
    projector_inner_dim=4096,
    entity_loss_weight=1.0,
    mask_loss_weight=0.0,
    freeze_text=False,
    sync_batchnorm=True,
    templates="simple",
    top_k_classes=5,
    pixel_mean=IMAGENET_MEAN,
    pixel_std=IMAGENET_STD,
    inference=L(InferencePolicy)(
        window=448, stride=224,
        background_threshold={"ovseg_voc21_val": 0.95, "ovseg_pc60_val": 0.35, "ovseg_coco_object_val": 0.90},
    ),
    # the official prompt names (segmentation/datasets/pascal_{voc,context}.py CLASSES)
    vocabulary_overrides={
        "ovseg_voc21_val": {"diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"},
        "ovseg_pc60_val": {"aeroplane": "airplane", "diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"},
    },
)

dataloader.train = L(build_image_text_train_loader)(
    meta_file="cc4m/cc4m.jsonl",
    image_root="cc4m/images",
    # timm's DeiT train transform (spec 10): RandomResizedCrop 0.08-1, flip, RandAugment, erasing 0.25
    mapper=L(EntityQuestionMapper)(
        mapper=L(ImageTextMapper)(
            image_size=224, is_train=True, scale=(0.08, 1.0), hflip=True, auto_augment="rand-m9-mstd0.5-inc1",
            random_erasing=0.25, pixel_mean=IMAGENET_MEAN, pixel_std=IMAGENET_STD,
        ),
        vocabulary="cc4m_entities",
    ),
    total_batch_size=2048,
    shuffle_buffer=10000,
    num_workers=8,
)
# mmseg's test Resize(2048, 448) keep-ratio (short side 448): OpenCV bilinear on the uint8 image
dataloader.test.mapper.augmentations = [L(MmsegResize)(scale=(2048, 448))]
dataloader.test_datasets = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val", "ovseg_ade150_val"]
dataloader.evaluator = dict(metric_convention="mmseg")

# AdamW, lr 6.4e-4 x 2048 / 4096; cosine to 1.6e-4 x 0.5 after 2 warmup epochs from 1.6e-5 x 0.5.
optimizer.lr = 3.2e-4
optimizer.weight_decay = 0.05
optimizer.no_decay_1d = True
optimizer.clip_grad_norm = 5.0
lr_multiplier.scheduler.end_value = 0.25
lr_multiplier.warmup_length = 2 / 30
lr_multiplier.warmup_factor = 0.025

train.max_iter = 30 * ITERS_PER_EPOCH
train.eval_period = ITERS_PER_EPOCH
train.checkpointer = dict(period=ITERS_PER_EPOCH, max_to_keep=3)
train.best_metric = dict(name="ovseg_voc21_val/sem_seg/mIoU", mode="max")
train.seed = 0
# ImageNet zero-shot top-1/top-5 every epoch (7 GroupViT templates), as the official loop logs it; needs
# imagenet/val.jsonl ({"filename", "caption", "label"}) and a JSON list of the 1000 class names.
train.hooks = [
    L(ZeroShotClassificationHook)(
        meta_file="imagenet/val.jsonl", class_names="imagenet/class_names.json", image_root="imagenet/val",
        period=ITERS_PER_EPOCH, templates="groupvit_subset",
    )
]
train.output_dir = "./output/ovsegmentor/vitb16_bert_stage1"
