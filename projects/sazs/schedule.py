"""The official learning-rate policy: poly per *epoch* (lr_e = lr0 * (1 - e / E)^0.9, constant within
an epoch), as a multiplier of the base lr over training progress (fvcore ParamScheduler)."""
from __future__ import annotations

import math

from fvcore.common.param_scheduler import ParamScheduler

__all__ = ["EpochPolyParamScheduler"]


class EpochPolyParamScheduler(ParamScheduler):
    """`epochs` = E; `where` in [0, 1) is training progress (iteration / max_iter, with max_iter =
    E x iterations per epoch), so epoch e = floor(where * E)."""

    def __init__(self, epochs: int, power: float = 0.9) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        self.epochs = epochs
        self.power = power

    def __call__(self, where: float) -> float:
        epoch = min(math.floor(where * self.epochs), self.epochs - 1)
        return (1.0 - epoch / self.epochs) ** self.power
