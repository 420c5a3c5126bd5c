"""Training hooks of the LazyConfig trainer (`do_train`) beyond detectron2's own.

How a hook gets what it needs: `train.hooks` holds `L(SomeHook)(...)` entries whose constructors take
config values only. They are instantiated when training starts, and from `before_train` on a hook
reaches everything else through `self.trainer`: `model` (DDP-wrapped when several processes run;
`ovseg_d2.engine.unwrap(self.trainer.model)` is the model itself), `optimizer`, `data_loader`,
`storage`, `iter`, `start_iter`, `max_iter`, plus `cfg` (the whole config) and `checkpointer`
(the run's DetectionCheckpointer), which `do_train` attaches. An entry may also be any callable
returning a `HookBase`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Sequence

import torch
from detectron2.engine import hooks
from detectron2.engine.train_loop import HookBase
from torch import nn

from .ddp import create_ddp_model, unwrap
from .optimizer import parameters_matching

logger = logging.getLogger(__name__)


class ModelStepHook(HookBase):
    """Calls `model.before_step()` before and `model.after_step(iteration)` after every optimizer
    step, on the unwrapped model, when the model defines them (momentum encoders, queues)."""

    def before_step(self) -> None:
        callback = getattr(unwrap(self.trainer.model), "before_step", None)
        if callback is not None:
            callback()

    def after_step(self) -> None:
        callback = getattr(unwrap(self.trainer.model), "after_step", None)
        if callback is not None:
            callback(self.trainer.iter)


class ModelEMA:
    """Exponential moving average of a model's trainable parameters and floating-point buffers:
    `ema = decay * ema + (1 - decay) * value` after every optimizer step. Frozen parameters do not
    change, so they are not copied; one that becomes trainable joins with its current value.

    A checkpointable: its `state_dict()` is `{"weights": {state-dict key: tensor}}`, saved as
    `model_ema` in every checkpoint of the run (see `load_ema_weights`).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"train.ema.decay must be in [0, 1), got {decay}")
        self.model = model
        self.decay = decay
        self.weights: dict[str, torch.Tensor] = {}

    @staticmethod
    def _changing(live: Mapping[str, torch.Tensor]) -> set[str]:
        """State-dict keys of the trainable parameters and floating-point buffers."""
        return {
            key
            for key, value in live.items()
            if value.is_floating_point() and (not isinstance(value, nn.Parameter) or value.requires_grad)
        }

    @torch.no_grad()
    def reset(self) -> None:
        """Start the average from the model's current weights."""
        live = self.model.state_dict(keep_vars=True)
        self.weights = {key: live[key].detach().clone() for key in self._changing(live)}

    @torch.no_grad()
    def update(self) -> None:
        live = self.model.state_dict(keep_vars=True)
        for key in self._changing(live) - self.weights.keys():  # unfrozen since the last step
            self.weights[key] = live[key].detach().clone()
        for key, average in self.weights.items():
            average.lerp_(live[key].detach(), 1.0 - self.decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own weights again after it."""
        live = self.model.state_dict(keep_vars=True)
        backup = {key: live[key].detach().clone() for key in self.weights}
        load_ema_weights(self.model, self.state_dict())
        try:
            yield
        finally:
            load_ema_weights(self.model, {"weights": backup})

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        live = self.model.state_dict(keep_vars=True)
        _check_known_keys(state["weights"], live)
        self.weights = {key: value.to(live[key].device, live[key].dtype) for key, value in state["weights"].items()}


def _check_known_keys(weights: Mapping[str, torch.Tensor], live: Mapping[str, torch.Tensor]) -> None:
    unknown = sorted(set(weights) - set(live))
    if unknown:
        raise KeyError(f"EMA weights for keys the model does not have: {unknown[:10]} ({len(unknown)} in all)")


@torch.no_grad()
def load_ema_weights(model: nn.Module, ema_state: Mapping[str, Any]) -> None:
    """Copy the averaged weights of a `model_ema` checkpoint entry into `model`."""
    live = model.state_dict(keep_vars=True)
    _check_known_keys(ema_state["weights"], live)
    for key, value in ema_state["weights"].items():
        live[key].data.copy_(value)


class EMAHook(HookBase):
    """Updates a `ModelEMA` after every step; starts it from the model's weights when the checkpoint
    loaded before training (resume) did not hold one."""

    def __init__(self, ema: ModelEMA) -> None:
        self.ema = ema

    def before_train(self) -> None:
        if not self.ema.weights:
            self.ema.reset()

    def after_step(self) -> None:
        self.ema.update()


class TrainableSchedule(HookBase):
    """From iteration `iteration` on, parameters matching `trainable` (regexes searched in the names
    of the unwrapped model) are trained.

    They must already be in the optimizer, frozen: list the same patterns in the optimizer's
    `unfreeze_later` so that their learning rate, weight decay and LR schedule are set when the
    optimizer is built. At the switch every process unfreezes the same parameters and wraps the
    model in a new DDP, whose reducer then all-reduces their gradients too (the old wrapper only
    knew the parameters that were trainable when it was built: without the re-wrap every process
    would update the new parameters with its own gradients, and the copies would drift apart).
    A run resumed past `iteration` switches before its first step.
    """

    def __init__(self, iteration: int, trainable: Sequence[str]) -> None:
        self.iteration = iteration
        self.trainable = list(trainable)
        self._switched = False

    def before_train(self) -> None:
        params = parameters_matching(unwrap(self.trainer.model), self.trainable)
        in_optimizer = {id(p) for group in self.trainer.optimizer.param_groups for p in group["params"]}
        missing = sorted(name for name, p in params.items() if id(p) not in in_optimizer)
        if missing:
            raise ValueError(
                f"TrainableSchedule(trainable={self.trainable}): parameters not in the optimizer: "
                f"{missing[:10]} ({len(missing)} in all); add the patterns to optimizer.unfreeze_later"
            )
        if self.trainer.iter >= self.iteration:
            self._switch()

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration and not self._switched:
            self._switch()

    def _switch(self) -> None:
        model = unwrap(self.trainer.model)
        names = parameters_matching(model, self.trainable)
        for param in names.values():
            param.requires_grad_(True)
        if self.trainer.model is not model:
            # Built on every process (the hook runs everywhere): DDP's constructor is collective.
            self.trainer.model = create_ddp_model(model, **self.trainer.cfg.train.ddp)
        self._switched = True
        logger.info(f"Iteration {self.trainer.iter}: training {len(names)} more parameters ({self.trainable})")


class BestMetricCheckpointer(hooks.BestCheckpointer):
    """detectron2's BestCheckpointer (`model_best.pth` after each evaluation that improves
    `val_metric`), which fails on a metric the evaluation did not produce, naming those it did,
    instead of warning, and keeps its best value across a resume."""

    def _best_checking(self) -> None:
        available = self.trainer.storage.latest()
        if self._val_metric not in available:
            raise KeyError(
                f"train.best_metric.name={self._val_metric!r} is not a reported metric; "
                f"available: {sorted(available)}"
            )
        super()._best_checking()

    def state_dict(self) -> dict[str, Any]:
        return {"best_metric": self.best_metric, "best_iter": self.best_iter}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_metric = state["best_metric"]
        self.best_iter = state["best_iter"]
