# CAT-Seg pre-CVPR version (feature backbone) on the generated toy world: the code path of the R101 model
# with a tiny Detectron2 ResNet (stem 8, base 4: 16/32/64 channels) and the tiny toy CLIP.
#   python tools/train_net.py --config-file configs/catseg/catseg_fb_toy.py model.clip_weights=PATH train.device=cpu
# 96x96 toy images -> CLIP at 96 (24x24 grid); the backbone sees them at 384 (official resize), so its
# res4 / res3 / res2 are 24 / 48 / 96 px like the aggregator and decoder grids.
from detectron2.config import LazyCall as L

from ovseg_d2.projects.catseg import build_feature_resnet

from .catseg_toy import dataloader, lr_multiplier, model, optimizer, train

model.clip_finetune = "visual_attention"
model.templates = "imagenet80"
model.text_recipe = dict(synonyms="mean", template_reduce="normalize_then_mean")
model.last_block_residual = "token"
model.feature_backbone = L(build_feature_resnet)(depth=50, stem_channels=8, base_channels=4, norm="BN")
model.guidance_features = ("res4", "res3", "res2")
model.feature_backbone_resolution = (384, 384)
model.aggregator.pad_len = 0
optimizer.lr_multipliers = {"clip_image": 0.1, "feature_backbone": 1.0}
train.output_dir = "./output/toy/catseg_fb"

# The toy-world leaderboard row (tools/run_demo.py --methods all; contract in ovseg_d2/data/toy/leaderboard.py).
leaderboard = dict(
    name="CAT-Seg pre-CVPR, tiny ResNet feature backbone",
    trained_on="seen masks",
    overrides=["model.clip_weights={clip_weights}"],
)

__all__ = ["dataloader", "leaderboard", "lr_multiplier", "model", "optimizer", "train"]
