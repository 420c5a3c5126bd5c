# CAT-Seg pre-CVPR version (feature backbone), R101 + CLIP ViT-B/16 at 384, trained on COCO-Stuff-171
# (official tree before the CVPR release, af4fa0b: configs/vitb_r101_384.yaml). Official test pipeline:
# 640x640 squash, 384 crops at stride 256 + a global view, probabilities averaged.
#   train:     python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff.py --num-gpus 4 \
#                  model.clip_weights=/path/to/ViT-B-16.pt train.init_checkpoint=/path/to/R-101-converted.pth
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff.py --eval-only \
#                  train.init_checkpoint=/path/to/converted.pth
#              (tools/convert_checkpoint.py --method catseg_d2_legacy for the official pre-CVPR release)
from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.projects.catseg import CATSeg, build_feature_resnet

from ..common.data import dataloader
from ..common.optim import AdamW as optimizer
from ..common.schedule import cosine as lr_multiplier
from ..common.train import train

model = L(CATSeg)(
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    clip_model="ViT-B-16-quickgelu",
    clip_weights=None,
    clip_resolution=(384, 384),
    clip_finetune="visual_attention",  # visual tower: every attention parameter + positional table
    templates="imagenet80",  # 80 ImageNet templates, all synonyms averaged, frozen text tower
    text_recipe=dict(synonyms="mean", template_reduce="normalize_then_mean"),
    last_block_residual="token",
    # Detectron2 R101 (STRIDE_IN_1X1 False, FREEZE_AT 0, Detectron2's default FrozenBN), res2-res4
    feature_backbone=L(build_feature_resnet)(depth=101, norm="FrozenBN", stride_in_1x1=False, freeze_at=0),
    guidance_features=("res4", "res3", "res2"),  # appearance (1024 ch), decoder (512, 256)
    feature_backbone_resolution=(384, 384),
    size_divisibility=32,
    ignore_value=255,
    train_pooling_size=(2, 2),
    test_pooling_size=(1, 1),
    sliding_window=True,
    window=384,
    stride=256,
    sliding_resize=(640, 640),
    global_view=True,
    aggregator=dict(
        hidden_dim=128,
        text_proj_dim=128,
        appearance_proj_dim=128,
        decoder_dims=(64, 32),
        decoder_guidance_proj_dims=(32, 16),
        num_layers=2,
        num_heads=4,
        window_size=12,
        pad_len=0,  # no class padding / top-k before the CVPR release
    ),
)

dataloader.train.dataset_names = "ovseg_coco_stuff171_train"
dataloader.train.total_batch_size = 4
dataloader.test_datasets = [
    "ovseg_ade847_val",
    "ovseg_pc459_val",
    "ovseg_ade150_val",
    "ovseg_pc59_val",
    "ovseg_voc20_val",
    "ovseg_voc20b_val",
]

# AdamW 2e-4, wd 1e-4 (0 on norms), CLIP x0.01, backbone x0.01 (BACKBONE_MULTIPLIER), grad-norm clip 0.01.
optimizer.lr = 2e-4
optimizer.weight_decay = 1e-4
optimizer.weight_decay_norm = 0.0
optimizer.weight_decay_embed = 0.0
optimizer.lr_multipliers = {"clip_image": 0.01, "clip_text": 0.01, "feature_backbone": 0.01}
optimizer.clip_grad_norm = 0.01

train.max_iter = 80000
# q/k of the last CLIP block are trainable (official rule) but unused by the dense value path.
train.ddp = dict(broadcast_buffers=False, find_unused_parameters=True, fp16_compression=False)
train.eval_period = 5000
train.checkpointer = dict(period=5000, max_to_keep=3)
train.output_dir = "./output/catseg/fb_r101_vitb16_384_coco_stuff"
