# CAT-Seg pre-CVPR version, Swin-B (384, 22k) + CLIP ViT-L/14@336, COCO-Stuff-171 (official
# configs/vitl_swinb_384.yaml at af4fa0b): the Swin-B is frozen (BACKBONE_MULTIPLIER 0), 3 stages.
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_fb_swinb_vitl14_336_coco_stuff.py --eval-only \
#                  train.init_checkpoint=/path/to/converted.pth   (--method catseg_d2_legacy)
from detectron2.config import LazyCall as L

from ovseg_d2.projects.catseg import build_feature_swin

from .catseg_fb_r101_vitb16_384_coco_stuff import dataloader, lr_multiplier, model, optimizer, train

model.clip_model = "ViT-L-14-336-quickgelu"
model.clip_resolution = (336, 336)
model.feature_backbone = L(build_feature_swin)(
    embed_dim=128, depths=(2, 2, 18), num_heads=(4, 8, 16), window_size=12, pretrain_img_size=384, drop_path_rate=0.3
)
model.guidance_features = ("p2", "p1", "p0")  # appearance 512 ch at 1/16, decoder 256 / 128
model.freeze_feature_backbone = True
optimizer.lr_multipliers = {"clip_image": 0.01, "clip_text": 0.01}
train.output_dir = "./output/catseg/fb_swinb_vitl14_336_coco_stuff"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
