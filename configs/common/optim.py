# AdamW over per-parameter groups (ovseg_d2.engine.build_optimizer). `model` is filled in by the
# trainer; `lr_multipliers` maps parameter-name prefixes to learning-rate factors.
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
    lr_multipliers={},
    clip_grad_norm=None,
)
