"""mmcv's `poly` learning-rate policy with its linear warmup, as one fvcore ParamScheduler.

mmcv (`PolyLrUpdaterHook`): lr = (base - min_lr) * (1 - t)^power + min_lr, t = iter / max_iter; during
the first `warmup_iters` the regular lr is multiplied by 1 - (1 - iter / warmup_iters) * (1 - ratio).
Detectron2's `WarmupParamScheduler` interpolates towards the value at the end of the warmup instead,
so mmseg recipes (Cascade-CLIP, ZegCLIP) use this one. With `epochs` the poly steps once per epoch
(mmcv's `by_epoch=True`: t = epoch / max_epochs, constant within an epoch), the policy SAZS trains with.
Values are multipliers of the base lr.
"""

from __future__ import annotations

import math

from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["MmcvPolyParamScheduler"]


class MmcvPolyParamScheduler(ParamScheduler):
    """Multiplier at progress `where` in [0, 1).

    Args:
        power: poly exponent (0.9).
        end_value: min_lr / base lr (mmcv's absolute `min_lr` divided by the base lr).
        warmup_length: warmup iterations / max_iter (0: no warmup).
        warmup_ratio: the warmup's starting factor (mmcv `warmup_ratio`, e.g. 1e-6).
        epochs: None: the poly follows every iteration. E: it follows epochs, t = floor(where * E) / E
            (the training's max_iter must be E x iterations per epoch); the warmup still follows iterations.
    """

    def __init__(
        self,
        power: float = 0.9,
        end_value: float = 0.0,
        warmup_length: float = 0.0,
        warmup_ratio: float = 1.0,
        epochs: int | None = None,
    ) -> None:
        if not 0.0 <= warmup_length < 1.0:
            raise ValueError(f"warmup_length must be in [0, 1), got {warmup_length}")
        if epochs is not None and epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.power = power
        self.end_value = end_value
        self.warmup_length = warmup_length
        self.warmup_ratio = warmup_ratio
        self.epochs = epochs

    def __call__(self, where: float) -> float:
        progress = where
        if self.epochs is not None:  # the epoch `where` falls in (the last one at where = 1)
            progress = min(math.floor(where * self.epochs), self.epochs - 1) / self.epochs
        value = (1.0 - self.end_value) * (1.0 - progress) ** self.power + self.end_value
        if where < self.warmup_length:
            value *= 1.0 - (1.0 - where / self.warmup_length) * (1.0 - self.warmup_ratio)
        return value
