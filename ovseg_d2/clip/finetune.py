"""Selective fine-tuning of CLIP: split fused attention projections and pick trainable parameters.

CAT-Seg trains only the q and v projection weights of every attention block. open_clip stores q, k, v
as one fused `in_proj_weight`; masking gradient rows of that tensor would still apply AdamW weight
decay (and per-tensor state) to the k rows, so the tensor is split into real separate parameters.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
from torch import nn

# CAT-Seg's CLIP_FINETUNE "attention" rule: names containing "transformer" and ("q_proj" or "v_proj"),
# i.e. the q/v projection weights of every block of both towers (after split_attention_projections).
CATSEG_ATTENTION_RULES: tuple[str, ...] = (r"^(?=.*transformer)(?=.*(q_proj|v_proj))",)

_QKV = ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def split_attention_projections(module: nn.Module) -> list[str]:
    """Give every fused `nn.MultiheadAttention` in `module` separate q/k/v weight Parameters.

    Values and requires_grad are preserved, the fused `in_proj_bias` is kept, and the forward is
    unchanged (`F.multi_head_attention_forward` with `use_separate_proj_weight`, which still uses SDPA
    when no attention weights are requested). Returns the names of the converted modules.
    """
    converted = []
    for name, mha in module.named_modules():
        if not isinstance(mha, nn.MultiheadAttention) or not mha._qkv_same_embed_dim:
            continue
        fused = mha.in_proj_weight
        for part_name, part in zip(_QKV, fused.detach().chunk(3, dim=0)):
            mha.register_parameter(part_name, nn.Parameter(part.clone(), requires_grad=fused.requires_grad))
        mha.register_parameter("in_proj_weight", None)
        mha._qkv_same_embed_dim = False
        converted.append(name)
    return converted


def apply_trainable_rules(
    module: nn.Module, trainable: Sequence[str], frozen_rest: bool = True, *, allow_unmatched: bool = False
) -> list[str]:
    """Set requires_grad=True on parameters whose name matches any regex in `trainable` (re.search).

    With `frozen_rest` every other parameter is frozen. A pattern matching nothing is an error unless
    `allow_unmatched` (it usually means a forgotten `split_attention_projections` or a renamed module).
    Returns the names of the trainable-by-rule parameters.
    """
    patterns = [re.compile(p) for p in trainable]
    hits = {p.pattern: 0 for p in patterns}
    selected = []
    for name, param in module.named_parameters():
        matched = [p for p in patterns if p.search(name)]
        for p in matched:
            hits[p.pattern] += 1
        if matched:
            param.requires_grad_(True)
            selected.append(name)
        elif frozen_rest:
            param.requires_grad_(False)
    unmatched = [p for p, n in hits.items() if n == 0]
    if unmatched and not allow_unmatched:
        raise ValueError(f"Trainable-parameter patterns matched nothing: {unmatched}")
    return selected


def fuse_qkv_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`*.q_proj_weight, *.k_proj_weight, *.v_proj_weight` -> `*.in_proj_weight` (cat on dim 0, q,k,v)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(_QKV[0]):
            prefix = key[: -len(_QKV[0])]
            missing = [prefix + s for s in _QKV if prefix + s not in state_dict]
            if missing:
                raise KeyError(f"Cannot fuse {key}: missing {missing}")
            out[prefix + "in_proj_weight"] = torch.cat([state_dict[prefix + s] for s in _QKV], dim=0)
        elif not key.endswith(_QKV[1:]):
            out[key] = value
    return out


def split_qkv_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`*.in_proj_weight` -> `*.q_proj_weight, *.k_proj_weight, *.v_proj_weight` (inverse of fuse)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith("in_proj_weight"):
            prefix = key[: -len("in_proj_weight")]
            for suffix, part in zip(_QKV, value.chunk(3, dim=0)):
                out[prefix + suffix] = part.clone()
        else:
            out[key] = value
    return out
