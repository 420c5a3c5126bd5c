# CAT-Seg (CVPR 2024 version), CLIP ViT-L/14@336, trained on COCO-Stuff-171 (official configs/vitl_336.yaml).
# The 384 training crops (and the 384 test windows) are resized to 336 for CLIP: a 24x24 patch grid.
#   train:     python tools/train_net.py --config-file configs/catseg/catseg_vitl14_336_coco_stuff.py --num-gpus 4 \
#                  model.clip_weights=/path/to/ViT-L-14-336px.pt
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_vitl14_336_coco_stuff.py --eval-only \
#                  train.init_checkpoint=/path/to/catseg_large_converted.pth
from .catseg_vitb16_384_coco_stuff import dataloader, lr_multiplier, model, optimizer, train

model.clip_model = "ViT-L-14-336-quickgelu"
model.clip_resolution = (336, 336)
model.tap_blocks = (7, 15)
train.output_dir = "./output/catseg/vitl14_336_coco_stuff"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
