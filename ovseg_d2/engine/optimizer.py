"""Optimizer construction: per-parameter groups with learning-rate multipliers by name prefix,
no weight decay for normalisation and embedding parameters, optional full-model gradient clipping.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from detectron2.solver.build import get_default_optimizer_params
from torch import nn


def lr_factor_by_prefix(multipliers: Mapping[str, float]) -> Callable[[str], float]:
    """A `lr_factor_func` for detectron2's param groups: the multiplier of the longest matching
    name prefix (e.g. {"sem_seg_head.clip": 0.01}), 1.0 when none matches."""
    ordered = sorted(multipliers.items(), key=lambda kv: -len(kv[0]))

    def factor(name: str) -> float:
        for prefix, value in ordered:
            if name.startswith(prefix):
                return value
        return 1.0

    return factor


def build_param_groups(
    model: nn.Module,
    *,
    base_lr: float,
    weight_decay: float,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    lr_multipliers: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Param groups of the trainable parameters (requires_grad), one group per tensor as detectron2
    does, so multipliers and decay rules can differ per parameter."""
    overrides: dict[str, dict[str, float]] = {}
    embed_names = {
        f"{module_name}.{param_name}" if module_name else param_name
        for module_name, module in model.named_modules()
        if isinstance(module, nn.Embedding)
        for param_name, _ in module.named_parameters(recurse=False)
    }
    groups = get_default_optimizer_params(
        model,
        base_lr=base_lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        lr_factor_func=lr_factor_by_prefix(lr_multipliers or {}),
        overrides=overrides,
    )
    name_of = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        if any(name_of.get(id(p)) in embed_names for p in group["params"]):
            group["weight_decay"] = weight_decay_embed
    return groups


def build_optimizer(
    model: nn.Module,
    *,
    name: str = "AdamW",
    lr: float,
    weight_decay: float = 0.0,
    weight_decay_norm: float = 0.0,
    weight_decay_embed: float = 0.0,
    lr_multipliers: Mapping[str, float] | None = None,
    clip_grad_norm: float | None = None,
    **optimizer_kwargs: Any,
) -> torch.optim.Optimizer:
    """Instantiate `torch.optim.<name>` on the model's param groups.

    `clip_grad_norm` clips the L2 norm of the gradients of ALL parameters jointly before each step
    (Mask2Former / CAT-Seg "full_model" clipping), not per group.
    """
    groups = build_param_groups(
        model,
        base_lr=lr,
        weight_decay=weight_decay,
        weight_decay_norm=weight_decay_norm,
        weight_decay_embed=weight_decay_embed,
        lr_multipliers=lr_multipliers,
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
