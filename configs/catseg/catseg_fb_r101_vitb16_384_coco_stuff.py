# CAT-Seg pre-CVPR version (feature backbone), R101 + CLIP ViT-B/16 at 384, trained on COCO-Stuff-171
# (official tree before the CVPR release, af4fa0b: configs/vitb_r101_384.yaml). Data, test pipeline
# (640x640 squash, 384 crops at stride 256 + a global view, probabilities averaged), optimizer and schedule
# are the CVPR config's; the guidance comes from a ResNet-101 instead of CLIP taps, with the text and
# fine-tuning recipe of that version (projects/catseg/README.md).
#   train:     python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff.py --num-gpus 4 \
#                  model.clip_weights=/path/to/ViT-B-16.pt train.init_checkpoint=/path/to/R-101-converted.pth
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff.py --eval-only \
#                  train.init_checkpoint=/path/to/converted.pth
#              (tools/convert_checkpoint.py --method catseg_d2_legacy for the official pre-CVPR release)
from detectron2.config import LazyCall as L

from ovseg_d2.projects.catseg import build_feature_resnet

from .catseg_vitb16_384_coco_stuff import dataloader, lr_multiplier, model, optimizer, train

del model.tap_blocks, model.tap_upsample_dims  # no CLIP taps: the feature backbone gives the guidance
model.clip_finetune = "visual_attention"  # visual tower: every attention parameter + positional table
model.templates = "imagenet80"  # 80 ImageNet templates, all synonyms averaged, frozen text tower
model.text_recipe = dict(synonyms="mean", template_reduce="normalize_then_mean")
model.last_block_residual = "token"
# Detectron2 R101 (STRIDE_IN_1X1 False, FREEZE_AT 0, Detectron2's default FrozenBN), res2-res4
model.feature_backbone = L(build_feature_resnet)(depth=101, norm="FrozenBN", stride_in_1x1=False, freeze_at=0)
model.guidance_features = ("res4", "res3", "res2")  # appearance (1024 ch), decoder (512, 256)
model.feature_backbone_resolution = (384, 384)
model.aggregator.pad_len = 0  # no class padding / top-k before the CVPR release

optimizer.lr_multipliers = {"clip_image": 0.01, "clip_text": 0.01, "feature_backbone": 0.01}  # BACKBONE_MULTIPLIER

train.output_dir = "./output/catseg/fb_r101_vitb16_384_coco_stuff"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
