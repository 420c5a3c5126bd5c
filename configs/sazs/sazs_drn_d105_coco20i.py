# SAZS with DRN-D-105 on COCO-20i fold 0: lr 1e-3 (train.sh), one SGD group, channel dropout 0.9, 10 epochs,
# test resized to 512 (coco_drn.py).
from detectron2.config import LazyCall as L

from ovseg_d2.projects.sazs import DRNPixelEmbedder

from .sazs_vitl16_384_coco20i import dataloader, lr_multiplier, model, optimizer, train

EPOCHS = 10
model.pixel_embedder = L(DRNPixelEmbedder)(out_channels=512, drop_rate=0.9, drn_weights=None)
optimizer.lr = 1e-3
lr_multiplier.epochs = EPOCHS
train.max_iter = EPOCHS * 10340
train.output_dir = "./output/sazs/drn_d105_coco20i_fold0"
