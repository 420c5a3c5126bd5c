# AdamW over param groups (ovseg_d2.engine.build_optimizer). `model` is filled in by the trainer;
# `lr_multipliers` maps parameter-name prefixes to learning-rate factors; `no_decay_1d` turns weight
# decay off for every 1-D parameter and bias (timm's rule); `unfreeze_later` lists regexes of frozen
# parameters that a TrainableSchedule hook (train.hooks) unfreezes during training.
from detectron2.config import LazyCall as L

from ovseg_d2.engine import build_optimizer

AdamW = L(build_optimizer)(
    model=None,
    name="AdamW",
    lr=2e-4,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=1e-4,
    weight_decay_norm=0.0,
    weight_decay_embed=0.0,
    no_decay_1d=False,
    lr_multipliers={},
    unfreeze_later=[],
    clip_grad_norm=None,
)
