"""Param groups of ovseg_d2.engine.build_param_groups / build_optimizer: weight-decay rules, learning-rate
multipliers, frozen parameters that join later."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from ovseg_d2.engine import build_optimizer, build_param_groups


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.pos = nn.Parameter(torch.zeros(1, 3, 4))
        self.scale = nn.Parameter(torch.ones(()))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)


def _by_name(model: nn.Module, groups: list[dict], key: str) -> dict[str, float]:
    name_of = {id(p): n for n, p in model.named_parameters()}
    return {name_of[id(p)]: group[key] for group in groups for p in group["params"]}


def test_no_decay_for_1d_parameters_and_biases() -> None:
    model = Small()
    # norm and embedding decay like the rest, so only the 1-D / bias rule makes a difference
    groups = build_param_groups(
        model, base_lr=1.0, weight_decay=0.05, weight_decay_norm=0.05, weight_decay_embed=0.05, no_decay_1d=True
    )
    assert _by_name(model, groups, "weight_decay") == {
        "embed.weight": 0.05,
        "proj.weight": 0.05,
        "proj.bias": 0.0,
        "norm.weight": 0.0,
        "norm.bias": 0.0,
        "conv.weight": 0.05,
        "pos": 0.05,
        "scale": 0.0,
    }
    off = build_param_groups(
        model, base_lr=1.0, weight_decay=0.05, weight_decay_norm=0.05, weight_decay_embed=0.05, no_decay_1d=False
    )
    assert set(_by_name(model, off, "weight_decay").values()) == {0.05}


def test_embedding_rule_does_not_leak_to_other_parameters() -> None:
    # Parameters with equal settings share a group; the embedding's decay must stay its own.
    model = Small()
    groups = build_param_groups(model, base_lr=1.0, weight_decay=0.1, weight_decay_norm=0.0, weight_decay_embed=0.0)
    decay = _by_name(model, groups, "weight_decay")
    assert decay["embed.weight"] == 0.0 and decay["norm.weight"] == 0.0
    assert decay["proj.weight"] == 0.1 and decay["conv.weight"] == 0.1 and decay["pos"] == 0.1


def test_lr_multiplier_by_longest_prefix_including_top_level_parameters() -> None:
    model = Small()
    groups = build_param_groups(
        model, base_lr=2.0, weight_decay=0.0, lr_multipliers={"proj": 0.5, "proj.bias": 0.25, "scale": 3.0}
    )
    lr = _by_name(model, groups, "lr")
    assert lr["proj.weight"] == 1.0 and lr["proj.bias"] == 0.5 and lr["scale"] == 6.0 and lr["norm.weight"] == 2.0


def test_frozen_parameters_join_only_when_listed_and_wait_for_unfreezing() -> None:
    model = Small()
    assert "frozen.weight" not in _by_name(model, build_param_groups(model, base_lr=1.0, weight_decay=0.0), "lr")
    optimizer = build_optimizer(
        model, name="SGD", lr=0.5, weight_decay=0.1, lr_multipliers={"frozen": 0.1}, unfreeze_later=[r"^frozen\."]
    )
    assert _by_name(model, optimizer.param_groups, "lr")["frozen.weight"] == pytest.approx(0.05)
    before = model.frozen.weight.detach().clone()
    x = torch.randn(2, 4)
    model.frozen(model.proj(x)).sum().backward()
    optimizer.step()  # frozen: no gradient, so no update and no weight decay either
    assert torch.equal(model.frozen.weight, before)

    model.frozen.requires_grad_(True)
    optimizer.zero_grad()
    model.frozen(x).sum().backward()
    grad = model.frozen.weight.grad.clone()
    optimizer.step()
    torch.testing.assert_close(model.frozen.weight, before - 0.05 * (grad + 0.1 * before))


def test_unfreeze_pattern_matching_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"matched no parameter of Small: \['\^frozn'\]"):
        build_param_groups(Small(), base_lr=1.0, weight_decay=0.0, unfreeze_later=["^frozn"])
