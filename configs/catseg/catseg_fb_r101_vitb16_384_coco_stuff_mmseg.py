# The mmsegmentation port of the pre-CVPR CAT-Seg (projects/CAT-Seg,
# catseg_vitb-r101_4xb2-warmcoslr2e-4-adamw-80k_coco-stuff164k-384x384.py), for its model-zoo checkpoints
# (tools/convert_checkpoint.py --method catseg_mmseg). Its three bugs are switched ON because its
# checkpoints were trained with them (projects/catseg/README.md); test pipeline: mmseg keep-ratio
# Resize(2048, 512) then slide 384/384, one crop per forward, logits averaged.
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py \
#                  --eval-only train.init_checkpoint=/path/to/converted.pth
from detectron2.config import LazyCall as L

from ovseg_d2.inference import InferencePolicy

from .catseg_fb_r101_vitb16_384_coco_stuff import dataloader, lr_multiplier, model, optimizer, train

model.feature_backbone.norm = "SyncBN"  # mmseg ResNet-101 (torchvision weights), BN trained
model.feature_backbone_resolution = None  # the port feeds the backbone at the input resolution
model.loss = "cross_entropy"  # softmax CE averaged over non-ignored pixels
model.score_activation = "none"
model.train_pooling_size = (6, 6)  # neck default, not overridden in the COCO config
model.test_pooling_size = (1, 1)  # the port's zero-shot test configs
model.inference = L(InferencePolicy)(resize="keep_ratio", size=(2048, 512), window=384, stride=384, batch_size=1)
model.aggregator.port_guidance_tiling = True
model.aggregator.port_class_mlp_identity = True
model.aggregator.decoder_dropout = 0.1

dataloader.train.total_batch_size = 8  # 4 GPUs x 2 images
# The model resizes (keep-ratio to 2048x512) from the original image: no resize in the test mapper.
dataloader.test.mapper.augmentations.min_size = None
dataloader.evaluator = dict(metric_convention="mmseg")  # mmseg's IoUMetric reporting rule
optimizer.lr_multipliers = {"clip_image": 0.01, "feature_backbone": 0.01}
optimizer.clip_grad_norm = None  # the port does not clip gradients
# LinearLR warmup over 500 iterations from 0.01, then cosine (Detectron2's warmup wraps the cosine of the
# whole run: the first 500 iterations differ from mmseg's by < 0.01 % of the cosine).
lr_multiplier.warmup_length = 500 / 80000
lr_multiplier.warmup_factor = 0.01
train.output_dir = "./output/catseg/fb_r101_vitb16_384_coco_stuff_mmseg"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
