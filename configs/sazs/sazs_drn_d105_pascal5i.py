# SAZS with DRN-D-105 (+ pyramid pooling head, channel dropout 0.95) on PASCAL-5i fold 0: lr 1e-3 (train.sh),
# head at 10x lr (pascal_drn.py's two SGD groups), poly per epoch, 40 epochs, batch 6, crop 512.
# The PASCAL-DRN test runs at the original resolution (no 512 resize).
from detectron2.config import LazyCall as L

from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.sazs import DRNPixelEmbedder

from .sazs_vitl16_384_pascal5i import dataloader, lr_multiplier, model, optimizer, train

EPOCHS = 40
model.pixel_embedder = L(DRNPixelEmbedder)(out_channels=512, drop_rate=0.95, drn_weights=None)
model.inference = L(InferencePolicy)(resize="none")
optimizer.lr_multipliers = {"pixel_embedder.pyramid": 10.0, "pixel_embedder.fuse": 10.0, "pixel_embedder.edge_head": 10.0}
lr_multiplier.epochs = EPOCHS
train.max_iter = EPOCHS * 1899
train.output_dir = "./output/sazs/drn_d105_pascal5i_fold0"
