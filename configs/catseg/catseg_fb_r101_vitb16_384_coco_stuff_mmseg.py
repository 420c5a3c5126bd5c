# The mmsegmentation port of the pre-CVPR CAT-Seg (projects/CAT-Seg,
# catseg_vitb-r101_4xb2-warmcoslr2e-4-adamw-80k_coco-stuff164k-384x384.py), for its model-zoo checkpoints
# (tools/convert_checkpoint.py --method catseg_mmseg). Its three bugs are switched ON because its
# checkpoints were trained with them (projects/catseg/README.md); test pipeline: mmseg keep-ratio
# Resize(2048, 512) then slide 384/384, one crop per forward, logits averaged.
#   evaluate:  python tools/train_net.py --config-file configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py \
#                  --eval-only train.init_checkpoint=/path/to/converted.pth
from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import CompositeParamScheduler, CosineParamScheduler, LinearParamScheduler

from ovseg_d2.data.mappers import MmsegResize
from ovseg_d2.inference import InferencePolicy

from .catseg_fb_r101_vitb16_384_coco_stuff import dataloader, model, optimizer, train

model.feature_backbone.norm = "SyncBN"  # mmseg ResNet-101 (torchvision weights), BN trained
model.feature_backbone_resolution = None  # the port feeds the backbone at the input resolution
model.loss = "cross_entropy"  # softmax CE averaged over non-ignored pixels
model.score_activation = "none"
model.train_pooling_size = (6, 6)  # neck default, not overridden in the COCO config
model.test_pooling_size = (1, 1)  # the port's zero-shot test configs
model.inference = L(InferencePolicy)(window=384, stride=384, batch_size=1)  # one crop per forward
model.aggregator.port_guidance_tiling = True
model.aggregator.port_class_mlp_identity = True
model.aggregator.decoder_dropout = 0.1

dataloader.train.total_batch_size = 8  # 4 GPUs x 2 images
# mmseg's test Resize(2048, 512) keep-ratio: OpenCV bilinear on the uint8 image, as its pipeline does
dataloader.test.mapper.augmentations = [L(MmsegResize)(scale=(2048, 512))]
dataloader.evaluator = dict(metric_convention="mmseg")  # mmseg's IoUMetric reporting rule
optimizer.lr_multipliers = {"clip_image": 0.01, "feature_backbone": 0.01}
optimizer.clip_grad_norm = None  # the port does not clip gradients
# The port's schedule, exactly: mmengine LinearLR(start_factor=0.01, begin=0, end=500) reaches 1 after 499
# steps (factor 0.01 + 0.99 * t / 499), then CosineAnnealingLR(T_max=79500, begin=500) from 1 to 0.
lr_multiplier = L(CompositeParamScheduler)(
    schedulers=[
        L(LinearParamScheduler)(start_value=0.01, end_value=0.01 + 0.99 * 500 / 499),
        L(CosineParamScheduler)(start_value=1.0, end_value=0.0),
    ],
    lengths=[500 / 80000, 79500 / 80000],
    interval_scaling=["rescaled", "rescaled"],
)
train.output_dir = "./output/catseg/fb_r101_vitb16_384_coco_stuff_mmseg"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
