"""Official TCL checkpoint (+ OpenAI CLIP weights) -> our :class:`~.meta_arch.TCL` state dict.

Two official layouts (spec tcl.md 2, golden README):
- a full `TCL.state_dict()` (training checkpoints): frozen CLIP, masker and loss temperatures;
- the release `tcl.pth`: `{"model": ...}` with only the 37 `masker.*` keys. The frozen CLIP then
  comes from the OpenAI weights (`clip_weights`, e.g. ViT-B-16.pt) and the loss temperatures take
  their initial value ln(1/0.07) (they matter for training only).
The masker block's index is read from its key (11 for ViT-B/16). `pamr.*` buffers (written by the
official code after its first PAMR evaluation) and CLIP's unused `logit_scale` are dropped.
All tensors are cast to float32 (OpenAI files are fp16).
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter
from ovseg_d2.clip import read_state_dict

__all__ = ["convert_tcl_checkpoint", "map_official_key"]

logger = logging.getLogger(__name__)

_MASKER_BLOCK = re.compile(r"^masker\.image_encoder\.backbone\.transformer\.resblocks\.(\d+)\.(.+)$")
_DECODER = re.compile(r"^masker\.image_encoder\.decoder\.decoder\.net\.(\d+)\.(conv2?)\.(norm|conv|gate)\.(.+)$")
_RENAMES = {
    "masker.image_encoder.decoder.image_proj.ln.weight": "proj_ln.weight",
    "masker.image_encoder.decoder.image_proj.ln.bias": "proj_ln.bias",
    "masker.image_encoder.decoder.image_proj.proj": "proj",
    "masker.sim2mask.w": "sim2mask.w",
    "masker.sim2mask.b": "sim2mask.b",
    "tclf_loss.logit_scale": "logit_scale_feature",
    "tcli_loss.logit_scale": "logit_scale_image",
    "clip_image_encoder.clip_proj.ln.weight": "clip_image.visual.ln_post.weight",
    "clip_image_encoder.clip_proj.ln.bias": "clip_image.visual.ln_post.bias",
    "clip_image_encoder.clip_proj.proj": "clip_image.visual.proj",
}
_LOSS_SCALES = ("logit_scale_feature", "logit_scale_image")
_BLOCK_KEYS = tuple(
    f"{m}.{w}" for m in ("ln_1", "ln_2", "attn.out_proj", "mlp.c_fc", "mlp.c_proj") for w in ("weight", "bias")
) + ("attn.in_proj_weight", "attn.in_proj_bias")
_CONV_KEYS = ("norm.weight", "norm.bias", "conv.weight", "conv.bias", "gate.gate")


def map_official_key(key: str) -> str | None:
    """Our name of an official TCL key; None for keys dropped on purpose; KeyError otherwise."""
    if key.startswith("pamr.") or key == "clip_text_encoder.logit_scale":
        return None
    if key in _RENAMES:
        return _RENAMES[key]
    m = _MASKER_BLOCK.match(key)
    if m:
        return f"masker_block.{m.group(2)}"
    m = _DECODER.match(key)
    if m:
        stage, conv, part, rest = m.groups()
        return f"decoder.{stage}.{conv}.gate" if part == "gate" else f"decoder.{stage}.{conv}.{part}.{rest}"
    if key.startswith("clip_image_encoder.clip_visual."):
        return "clip_image.visual." + key[len("clip_image_encoder.clip_visual.") :]
    if key.startswith("clip_text_encoder."):
        return "clip_text." + key[len("clip_text_encoder.") :]
    raise KeyError(f"unknown TCL checkpoint key: {key}")


def _expected_masker_keys(state: Mapping[str, torch.Tensor]) -> set[str]:
    blocks = {m.group(1) for m in map(_MASKER_BLOCK.match, state) if m}
    if len(blocks) != 1:
        raise KeyError(
            f"official TCL checkpoint: expected the masker block under exactly one index "
            f"(masker.image_encoder.backbone.transformer.resblocks.<i>.*), found {sorted(blocks) or 'none'}"
        )
    (block,) = blocks
    expected = {f"masker.image_encoder.backbone.transformer.resblocks.{block}.{k}" for k in _BLOCK_KEYS}
    stages = {int(m.group(1)) for m in map(_DECODER.match, state) if m}
    for stage in range(max(stages, default=1) + 1):
        expected |= {
            f"masker.image_encoder.decoder.decoder.net.{stage}.{c}.{k}" for c in ("conv", "conv2") for k in _CONV_KEYS
        }
    return expected | {k for k in _RENAMES if k.startswith("masker.")}


def _openai_clip(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """OpenAI CLIP keys (`visual.*`, text keys) -> the official TCL layout of the frozen CLIP."""
    out = {}
    for key, value in read_state_dict(path).items():
        if key == "logit_scale":
            continue
        if key == "visual.proj":
            out["clip_image_encoder.clip_proj.proj"] = value
        elif key.startswith("visual.ln_post."):
            out["clip_image_encoder.clip_proj.ln." + key[len("visual.ln_post.") :]] = value
        elif key.startswith("visual."):
            out["clip_image_encoder.clip_visual." + key[len("visual.") :]] = value
        else:
            out["clip_text_encoder." + key] = value
    return out


@register_converter("tcl")
def convert_tcl_checkpoint(
    official: Mapping[str, torch.Tensor], clip_weights: str | os.PathLike | None = None
) -> dict[str, torch.Tensor]:
    """Official TCL state dict (full or release layout) [+ OpenAI CLIP file] -> ours (float32)."""
    state = extract_state_dict(dict(official))
    check_expected_keys(state, _expected_masker_keys(state), "official TCL checkpoint")
    has_clip = any(k.startswith(("clip_image_encoder.", "clip_text_encoder.")) for k in state)
    if has_clip and clip_weights is not None:
        raise ValueError("the official TCL checkpoint already holds the CLIP weights; do not pass clip_weights too")
    if not has_clip:
        if clip_weights is None:
            raise ValueError(
                "this official TCL checkpoint holds only the masker (the release tcl.pth layout): pass the OpenAI "
                "CLIP weights it was trained on (ViT-B-16.pt from https://github.com/openai/CLIP, "
                "tools/convert_checkpoint.py --clip-weights PATH)"
            )
        state = {**_openai_clip(clip_weights), **state}
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {"PAMR buffers, rebuilt": [], "unused by TCL": []}
    for key, value in state.items():
        new = map_official_key(key)
        if new is None:
            dropped["PAMR buffers, rebuilt" if key.startswith("pamr.") else "unused by TCL"].append(key)
            continue
        if new in out:
            raise KeyError(f"two official keys map to {new}")
        out[new] = (value.detach().float() if value.is_floating_point() else value.detach()).contiguous()
    for key in _LOSS_SCALES:  # the release omits the training-only temperatures
        out.setdefault(key, torch.tensor(math.log(1 / 0.07)))
    logger.info(conversion_summary("tcl", len(state), len(out), dropped))
    return out
