"""Optimizer construction: param groups with learning-rate multipliers by name prefix and weight-decay
rules (normalisation layers, embeddings, timm-style "no decay for 1-D parameters and biases"),
frozen parameters that a `TrainableSchedule` hook unfreezes later, optional full-model gradient
clipping.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence

import torch
from detectron2.solver.build import reduce_param_groups
from torch import nn

# The normalisation layers whose parameters take `weight_decay_norm` (detectron2's list; _NormBase
# covers BatchNorm*, SyncBatchNorm and InstanceNorm*).
_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def lr_factor_by_prefix(multipliers: Mapping[str, float]) -> Callable[[str], float]:
    """The multiplier of the longest parameter-name prefix in `multipliers` that matches
    (e.g. {"sem_seg_head.clip": 0.01}), 1.0 when none matches."""
    ordered = sorted(multipliers.items(), key=lambda kv: -len(kv[0]))

    def factor(name: str) -> float:
        for prefix, value in ordered:
            if name.startswith(prefix):
                return value
        return 1.0

    return factor


def parameters_matching(model: nn.Module, patterns: Sequence[str]) -> dict[str, nn.Parameter]:
    """Parameters whose name matches any regex of `patterns` (re.search, the rule of
    `ovseg_d2.clip.finetune.apply_trainable_rules`). A pattern matching nothing is an error: it
    usually means a renamed module."""
    compiled = [re.compile(p) for p in patterns]
    hits = {p.pattern: 0 for p in compiled}
    selected: dict[str, nn.Parameter] = {}
    for name, param in model.named_parameters():
        for pattern in compiled:
            if pattern.search(name):
                hits[pattern.pattern] += 1
                selected[name] = param
    unmatched = [p for p, n in hits.items() if n == 0]
    if unmatched:
        raise ValueError(f"Parameter-name patterns matched no parameter of {type(model).__name__}: {unmatched}")
    return selected


def build_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    no_decay_1d: bool = False,
    lr_multipliers: Mapping[str, float] | None = None,
    unfreeze_later: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Param groups of the trainable parameters (requires_grad) and of the frozen parameters matching
    `unfreeze_later` (regexes), so that a `TrainableSchedule` hook can unfreeze those mid-training
    with their learning rate, weight decay and LR schedule decided here (a frozen parameter has no
    gradient, so the optimizer skips it until then).

    Weight decay per parameter, later rules winning: `weight_decay`; `weight_decay_norm` in
    normalisation layers; `weight_decay_embed` in `nn.Embedding`; 0 with `no_decay_1d` for every
    parameter with at most one dimension and every `*.bias` (timm's rule). Learning rate:
    `base_lr` times the `lr_multipliers` factor of the longest matching name prefix. Parameters with
    equal settings share a group.
    """
    later = {id(p) for p in parameters_matching(model, unfreeze_later).values()} if unfreeze_later else set()
    lr_factor = lr_factor_by_prefix(lr_multipliers or {})
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not (param.requires_grad or id(param) in later):
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            decay = weight_decay
            if isinstance(module, _NORM_TYPES):
                decay = weight_decay_norm
            if isinstance(module, nn.Embedding):
                decay = weight_decay_embed
            if no_decay_1d and (param.ndim <= 1 or param_name == "bias"):
                decay = 0.0
            groups.append({"params": [param], "lr": base_lr * lr_factor(name), "weight_decay": decay})
    return reduce_param_groups(groups)


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "AdamW",
    lr: float,
    weight_decay: float = 0.0,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    no_decay_1d: bool = False,
    lr_multipliers: Mapping[str, float] | None = None,
    unfreeze_later: Sequence[str] = (),
    clip_grad_norm: float | None = None,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """Instantiate `torch.optim.<name>` on `build_param_groups(model, ...)`.

    `clip_grad_norm` clips the L2 norm of the gradients of ALL parameters jointly before each step
    (Mask2Former / CAT-Seg "full_model" clipping), not per group.
    """
    groups = build_param_groups(
        model,
        base_lr=lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_embed=weight_decay_embed,
        no_decay_1d=no_decay_1d,
        lr_multipliers=lr_multipliers,
        unfreeze_later=unfreeze_later,
    )
    optimizer_cls = getattr(torch.optim, name)
    if clip_grad_norm is not None:
        optimizer_cls = _with_full_model_clipping(optimizer_cls, clip_grad_norm)
    return optimizer_cls(groups, lr=lr, weight_decay=weight_decay, **optimizer_kwargs)


def _with_full_model_clipping(optimizer_cls: type, max_norm: float) -> type:
    def step(self: torch.optim.Optimizer, closure: Callable | None = None) -> Any:
        params: Sequence[torch.Tensor] = [p for g in self.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return optimizer_cls.step(self, closure)

    return type(optimizer_cls.__name__ + "WithFullModelGradClip", (optimizer_cls,), {"step": step})
