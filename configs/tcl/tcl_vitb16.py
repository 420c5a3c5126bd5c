# TCL (CVPR'23), OpenAI CLIP ViT-B/16, trained on CC3M + CC12M captions only (official configs/tcl.yml),
# evaluated on the eight benchmarks of the paper's unified protocol (configs/eval.yml) in one run.
#   train:     python tools/train_net.py --config-file configs/tcl/tcl_vitb16.py --num-gpus 16 \
#                  model.clip_weights=/path/to/ViT-B-16.pt
#              (shards under $DETECTRON2_DATASETS/cc3m and cc12m, img2dataset webdataset layout, datasets/README.md)
#   evaluate:  python tools/train_net.py --config-file configs/tcl/tcl_vitb16.py --eval-only \
#                  train.init_checkpoint=/path/to/tcl_converted.pth
#              (tools/convert_checkpoint.py --method tcl --input tcl.pth --clip-weights ViT-B-16.pt --output ...)
# PAMR on, background threshold 0.4 (paper Table 2); configs/tcl/tcl_vitb16_nopamr.py: PAMR off, 0.5.
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import CosineParamScheduler
from omegaconf import OmegaConf

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD
from ovseg_d2.data.image_text import ImageTextMapper, build_image_text_train_loader
from ovseg_d2.data.mappers import MmsegResize, SemSegDatasetMapper, build_sem_seg_test_loader
from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.engine.hooks import TrainableSchedule
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.tcl import TCL

from ..common.optim import AdamW as optimizer
from ..common.train import train

# With background: a pixel is background iff every class mask is below the threshold.
WITH_BACKGROUND = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val"]
WITHOUT_BACKGROUND = [
    "ovseg_voc20_val",
    "ovseg_pc59_val",
    "ovseg_coco_stuff171_val",
    "ovseg_cityscapes19_val",
    "ovseg_ade150_val",
]
BACKGROUND_THRESHOLD = 0.4  # with PAMR; 0.5 without
UNFREEZE_AT = 30000  # official `ust_steps`: the masker block trains from here on
MASKER_BLOCK = [r"^masker_block\."]

model = L(TCL)(
    clip_model="ViT-B-16-quickgelu",  # OpenAI ViT-B/16 (QuickGELU)
    clip_weights=None,  # OpenAI ViT-B-16.pt to train; a converted checkpoint holds CLIP too
    train_class_names=L(prompt_classes)(dataset_name="ovseg_voc20_val"),  # unused: TCL trains on captions
    templates="tcl_custom",  # the 9 official templates
    pamr=True,
    prior_weight=0.3,
    freeze_masker_block=True,
    inference=L(InferencePolicy)(
        window=448,
        stride=224,
        batch_size=1,  # crops one at a time, as the official code: half the decoder intermediates, no loss on CPU
        background_threshold={name: BACKGROUND_THRESHOLD for name in WITH_BACKGROUND},
    ),
    # mmseg-0.27 class names verbatim (spec tcl.md 4.1): PASCAL-Context says "table".
    vocabulary_overrides={"ovseg_pc59_val": {"diningtable": "table"}, "ovseg_pc60_val": {"diningtable": "table"}},
)

dataloader = OmegaConf.create()
dataloader.train = L(build_image_text_train_loader)(
    shards=["cc3m/gcc-train-{000000..000347}.tar", "cc12m/cc-{000000..001175}.tar"],
    # timm create_transform(224, is_training=True, auto_augment='rand-m9-mstd0.5-inc1', re_prob=0.25)
    mapper=L(ImageTextMapper)(
        image_size=224,
        is_train=True,
        scale=(0.08, 1.0),
        hflip=True,
        auto_augment="rand-m9-mstd0.5-inc1",
        random_erasing=0.25,
        pixel_mean=list(IMAGENET_MEAN),  # the model's (0-255 units): RandAugment fill, erasing noise
        pixel_std=list(IMAGENET_STD),
    ),
    total_batch_size=1024,  # 64 per GPU x 16 GPUs
    shuffle_buffer=40000,
    num_workers=6,
)
dataloader.test = L(build_sem_seg_test_loader)(
    dataset_name=None,  # filled in per entry of test_datasets
    # mmcv keep-ratio Resize with img_scale (2048, 448) on uint8 (cv2 bilinear): short side 448.
    mapper=L(SemSegDatasetMapper)(is_train=False, augmentations=[L(MmsegResize)(scale=(2048, 448))]),
    num_workers=2,
)
dataloader.test_datasets = WITH_BACKGROUND + WITHOUT_BACKGROUND
dataloader.evaluator = dict(metric_convention="mmseg")

# AdamW, lr already linearly scaled to the global batch (3e-4 x 1024 / 4096), eps 1e-6, wd 0.05
# without decay on 1-D parameters and biases; global grad-norm clipping at 5.
optimizer.lr = 7.5e-5
optimizer.eps = 1e-6
optimizer.weight_decay = 0.05
optimizer.weight_decay_norm = 0.05
optimizer.no_decay_1d = True
optimizer.clip_grad_norm = 5.0
optimizer.unfreeze_later = MASKER_BLOCK

# Linear warmup from 1e-4 x lr over 15k steps, then cosine to 1e-5 over the remaining 35k.
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(CosineParamScheduler)(start_value=1.0, end_value=1e-5 / 7.5e-5),
    warmup_length=15000 / 50000,
    warmup_factor=1e-4,
    rescale_interval=True,
)

train.max_iter = 50000
train.amp = dict(enabled=True)
train.eval_period = 5000
train.checkpointer = dict(period=5000, max_to_keep=2)
train.hooks = [L(TrainableSchedule)(iteration=UNFREEZE_AT, trainable=MASKER_BLOCK)]
train.output_dir = "./output/tcl/vitb16"
