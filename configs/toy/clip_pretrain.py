# Contrastive pretraining of the toy world's tiny CLIP (ovseg_d2.modeling.ContrastiveCLIP, symmetric
# InfoNCE + shape-swapped hard negatives) on toy captions, streamed from a world's webdataset shards
# (the same loader as TCL's CC3M+CC12M). tools/pretrain_toy_clip.py --pretrain runs it on a
# 40,000-image pretraining world, exports the open_clip checkpoint and reports zero-shot retrieval.
# 6,000 iterations take ~25 min on one core, so the demo uses the shipped weights of seeds 0-2 made
# by `tools/pretrain_toy_clip.py --pretrain --ship --clip-seed N` (ovseg_d2/data/toy/README.md).
#   python tools/make_toy_world.py --output output/toy/clip_world --num-train 40000
#   python tools/train_net.py --config-file configs/toy/clip_pretrain.py --num-gpus 1 \
#       dataloader.train.shards=$PWD/output/toy/clip_world/shards train.output_dir=output/toy/clip_pretrain
# `shards` relative paths resolve against $DETECTRON2_DATASETS (default: the default toy world's).
# The captions name all 30 classes, unseen ones included: this is the "web-scale" pretraining of the
# open-vocabulary premise; only the segmentation masks (toy_seen_train) are restricted to seen classes.
from pathlib import Path

from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from ovseg_d2.data.image_text import ImageTextMapper, build_image_text_train_loader
from ovseg_d2.data.toy.captions import AttributeSwap
from ovseg_d2.data.toy.world import SHAPES
from ovseg_d2.modeling.contrastive_clip import ContrastiveCLIP

from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

# The CLIP config is named relative to this file, so the config works from any working directory.
model = L(ContrastiveCLIP)(
    clip_model=str(Path(__file__).with_name("tiny_clip.json")),
    clip_weights=None,
    # Hard negatives: each image must also prefer its caption over copies with one shape word swapped.
    # Colour, counts and sizes separate nearly every pair of a batch, so without them shape earns
    # almost no gradient (ovseg_d2/data/toy/README.md).
    text_negatives=L(AttributeSwap)(words=SHAPES, count=4),
)

dataloader = OmegaConf.create()
dataloader.train = L(build_image_text_train_loader)(
    shards="toy_world/shards",
    # image_size = vision_cfg.image_size of tiny_clip.json; a mild crop keeps every captioned object.
    mapper=L(ImageTextMapper)(image_size=48, is_train=True, scale=(0.8, 1.0), hflip=False),
    total_batch_size=32,
    shuffle_buffer=5000,  # raw JPEG bytes (~8 KB each), ~40 MB
    num_workers=0,
)
dataloader.test_datasets = []  # retrieval is evaluated on the exported CLIP (tools/pretrain_toy_clip.py)

# Seed 0 on 40,000 images, retrieval shape accuracy: lr 1e-3 65 %; lr 5e-4 60 % (35 % after 3,000 its)
optimizer.lr = 1e-3
optimizer.weight_decay = 0.05
lr_multiplier.warmup_length = 0.05
lr_multiplier.warmup_factor = 0.01

train.max_iter = 6000  # 4.8 passes over 40,000 images
train.seed = 0
train.eval_period = 0
train.log_period = 50
train.checkpointer = dict(period=5000, max_to_keep=1)  # model_final.pth is what gets exported
train.output_dir = "./output/toy/clip_pretrain"
