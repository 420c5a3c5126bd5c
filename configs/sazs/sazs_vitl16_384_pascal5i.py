# SAZS, ViT-L/16 @384 (timm) DPT pixel embedder + CLIP ViT-B/32 text, PASCAL-5i fold 0 (official recipe:
# SGD momentum 0.9, weight decay 1e-4, lr 1e-3 with poly per epoch over 20 epochs, batch 6, crop 512).
# Other folds: dataloader.train.dataset_names=ovseg_pascal5i_fold{f}_train, test_datasets likewise, and
# train.max_iter = 20 x ceil(pairs / 6): 37980 / 34200 / 26000 / 38660 for folds 0-3.
#   python tools/train_net.py --config-file configs/sazs/sazs_vitl16_384_pascal5i.py \
#       model.text_tower.weights=ViT-B-32.pt model.pixel_embedder.vit_weights=jx_vit_large_p16_384-b3be5167.pth
from detectron2.config import LazyCall as L

from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.engine import build_optimizer
from ovseg_d2.engine.poly_schedule import MmcvPolyParamScheduler
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.sazs import SAZS, DPTPixelEmbedder, build_text_tower

from ..common.train import train
from .data import dataloader

model = L(SAZS)(
    pixel_embedder=L(DPTPixelEmbedder)(embed_dim=1024, num_heads=16, tap_block=11, img_size=384, out_channels=512, vit_weights=None),
    text_tower=L(build_text_tower)(clip_model="ViT-B-32-quickgelu", weights=None),
    train_class_names=L(prompt_classes)(dataset_name="${dataloader.train.dataset_names}"),
    background_prompt="others",
    seg_weight=1.0,
    edge_weight=0.3,
    att_weight=0.1,
    att_threshold=0.8,
    edge_radius=2,
    void_as_background=False,  # True: the official targets (void -> "others"; a bug, see README)
    eval_mode="model",  # "fused" (zero-shot, eigen-segments) / "paper_oracle" (GT selection, not zero-shot)
    eigen_segments=None,  # L(EigenSegmentCache)(root=...) built by tools/build_eigen_cache.py
    fusion_min_iou=0.5,
    inference=L(InferencePolicy)(resize="squash", size=(512, 512)),
)

optimizer = L(build_optimizer)(model=None, name="SGD", lr=1e-3, momentum=0.9, weight_decay=1e-4, weight_decay_norm=1e-4)
EPOCHS = 20
lr_multiplier = L(MmcvPolyParamScheduler)(power=0.9, epochs=EPOCHS)  # official: lr0 (1 - epoch / EPOCHS)^0.9

dataloader.train.total_batch_size = 6
train.max_iter = EPOCHS * 1899  # fold 0: 11394 training pairs / batch 6
train.eval_period = 1899  # the official code validates after every epoch
train.checkpointer = dict(period=1899, max_to_keep=3)
train.best_metric = dict(name="ovseg_pascal5i_fold0_val/sem_seg/mIoU", mode="max")
train.output_dir = "./output/sazs/vitl16_384_pascal5i_fold0"
