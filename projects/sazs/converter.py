"""Official SAZS checkpoints (`{"epoch", "arch", "state_dict", "best_prec1" | "val_miou"}`, keys with or
without DataParallel's `module.`) + the OpenAI CLIP file of the text tower -> our `SAZS` state dict.

Two official layouts, told apart by their keys:
- ViT (`--arch vitl16_384`, `DPTSegmentationModel`): `pretrained.model.*` is the timm ViT; only blocks
  0..11 (the tap block is read from the checkpoint: the largest block whose output feeds the used
  reassemble branch is 11) and `act_postprocess2` + `edgeocr_cls_head` are executed. Blocks 12-23, the
  final norm, the classifier head, `act_postprocess{1,3,4}` and the DPT decoder (`scratch.*`) never
  influence the output and are dropped (listed in the log line).
- DRN (`--arch drn_d_105`, `DRNSeg`): `base.<i>` = DRN layer i, pyramid pooling `pool{1,2,3,6}_{conv,bn}`,
  `fc1`/`fc1_bn`, edge head; `fc2` and the bilinear `up` deconvolution are built but never run: dropped.

SAZS checkpoints do not hold the CLIP text tower (the official code loads OpenAI ViT-B/32 each run):
`clip_weights` is required (tools/convert_checkpoint.py --clip-weights ViT-B-32.pt).
"""
from __future__ import annotations

import logging
import os
import re
from typing import Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter
from ovseg_d2.clip import read_state_dict

__all__ = ["convert_sazs_checkpoint", "official_arch", "TAP_BLOCK"]

logger = logging.getLogger(__name__)

TAP_BLOCK = 11  # the official pixel embedding is DPT's act_postprocess2, hooked after block 11
_WB = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_VIT_BLOCK = tuple(f"{m}.{w}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for w in _WB)
_TEXT_KEYS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")
_PYRAMID_BINS = (1, 2, 3, 6)
_REASON_UNUSED = "never executed by the official forward"


def official_arch(state: Mapping[str, torch.Tensor]) -> str:
    """"vit" or "drn" from the keys of an official SAZS state dict."""
    if any(k.startswith("pretrained.model.") for k in state):
        return "vit"
    if any(k.startswith("base.") for k in state):
        return "drn"
    raise ValueError(
        "not an official SAZS checkpoint: expected 'pretrained.model.*' (ViT-L/16 DPT) or 'base.*' (DRN) keys, "
        f"found e.g. {sorted(state)[:3]}"
    )


def _expected_vit(state: Mapping[str, torch.Tensor]) -> set[str]:
    expected = {f"pretrained.model.{k}" for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias")}
    expected |= {f"pretrained.model.blocks.{i}.{s}" for i in range(TAP_BLOCK + 1) for s in _VIT_BLOCK}
    expected |= {f"pretrained.act_postprocess2.{m}.{w}" for m in ("0.project.0", "3", "4") for w in _WB}
    return expected | {f"edgeocr_cls_head.{w}" for w in _WB}


def _map_vit(key: str) -> str | None:
    m = re.match(r"^pretrained\.model\.(cls_token|pos_embed|patch_embed\.proj\.(?:weight|bias))$", key)
    if m:
        return f"pixel_embedder.vit.visual.{m.group(1)}"
    m = re.match(r"^pretrained\.model\.blocks\.(\d+)\.(.+)$", key)
    if m:
        return f"pixel_embedder.vit.visual.blocks.{m.group(1)}.{m.group(2)}" if int(m.group(1)) <= TAP_BLOCK else None
    for official, ours in (("pretrained.act_postprocess2.0.project.0.", "readout.0."), ("pretrained.act_postprocess2.3.", "proj."),
                           ("pretrained.act_postprocess2.4.", "up."), ("edgeocr_cls_head.", "edge_head.")):
        if key.startswith(official):
            return "pixel_embedder." + ours + key[len(official):]
    if re.match(r"^(pretrained\.model\.(norm|head)\.|pretrained\.act_postprocess[134]\.|scratch\.)", key):
        return None
    raise KeyError(f"unknown SAZS (ViT) checkpoint key: {key}")


def _expected_drn(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The stem, the first tensor of every DRN stage, the pyramid, the fuse conv and the edge head."""
    expected = {"base.0.0.weight", "fc1.weight"} | {f"base.0.1.{w}" for w in _BN} | {f"fc1_bn.{w}" for w in _BN}
    expected |= {f"base.{i}.0.weight" for i in (1, 2, 7, 8)} | {f"base.{i}.0.conv1.weight" for i in (3, 4, 5, 6)}
    expected |= {f"pool{b}_conv.weight" for b in _PYRAMID_BINS} | {f"pool{b}_bn.{w}" for b in _PYRAMID_BINS for w in _BN}
    return expected | {f"edgeocr_cls_head.{w}" for w in _WB}


def _map_drn(key: str) -> str | None:
    if key.startswith("base."):
        return "pixel_embedder." + key
    m = re.match(r"^pool(\d)_(conv|bn)\.(.+)$", key)
    if m and int(m.group(1)) in _PYRAMID_BINS:
        return f"pixel_embedder.pyramid.{_PYRAMID_BINS.index(int(m.group(1)))}.{m.group(2)}.{m.group(3)}"
    for official, ours in (("fc1_bn.", "fuse_bn."), ("fc1.", "fuse."), ("edgeocr_cls_head.", "edge_head.")):
        if key.startswith(official):
            return "pixel_embedder." + ours + key[len(official):]
    if key.startswith(("fc2.", "up.")):
        return None
    raise KeyError(f"unknown SAZS (DRN) checkpoint key: {key}")


def _text_tower(clip_weights: str | os.PathLike) -> dict[str, torch.Tensor]:
    """CLIP file (OpenAI .pt, open_clip or a text-only state dict) -> `text_tower.*` (visual dropped)."""
    clip = read_state_dict(clip_weights)
    text = {k: v for k, v in clip.items() if k.startswith(_TEXT_KEYS)}
    missing = [k for k in ("token_embedding.weight", "positional_embedding", "text_projection", "ln_final.weight") if k not in text]
    if missing:
        raise KeyError(f"{clip_weights}: not a CLIP checkpoint with a text tower (missing {missing})")
    return {"text_tower." + k: v for k, v in text.items()}


@register_converter("sazs")
def convert_sazs_checkpoint(
    official: Mapping[str, torch.Tensor], clip_weights: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Official SAZS state dict (ViT or DRN) + CLIP text weights -> ours (float32)."""
    state = extract_state_dict(dict(official))
    arch = official_arch(state)
    if clip_weights is None:
        raise ValueError(
            "SAZS checkpoints do not hold the CLIP text tower: pass the OpenAI CLIP ViT-B/32 weights the model was "
            "trained with (ViT-B-32.pt from https://github.com/openai/CLIP; tools/convert_checkpoint.py --clip-weights PATH)"
        )
    expected, mapper = (_expected_vit(state), _map_vit) if arch == "vit" else (_expected_drn(state), _map_drn)
    check_expected_keys(state, expected, f"official SAZS ({arch}) checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {_REASON_UNUSED: []}
    for key, value in state.items():
        new = mapper(key)
        if new is None:
            dropped[_REASON_UNUSED].append(key)
            continue
        out[new] = (value.detach().float() if value.is_floating_point() else value.detach()).contiguous()
    summary = conversion_summary(f"sazs ({arch})", len(state), len(out), dropped)
    text = _text_tower(clip_weights)
    for key, value in text.items():
        out[key] = (value.detach().float() if value.is_floating_point() else value.detach()).contiguous()
    logger.info(f"{summary}; text tower: {len(text)} tensors from {clip_weights}")
    return out
