"""Official Cascade-CLIP (mmseg) checkpoint -> our :class:`~.meta_arch.CascadeCLIP` state dict.

Every official key is mapped or dropped on purpose, with the reason logged:
- the decoders' `self_attn.*` / `norm1.*`: built officially but never called (the layers skip
  self-attention);
- the last decoder layer's `v`, `proj`, FFN and norms: only that layer's attention logits are used,
  its updated queries are never read, so only its `q` / `k` are kept;
- `loss_decode.criterion.empty_weight`: an unused loss buffer.
The frozen text encoder is kept (as `clip_text.*`) for live text encoding; a model reading
precomputed embeddings ignores it when loading. Tensors are cast to float32.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter

__all__ = ["convert_cascade_clip_checkpoint", "map_official_key", "expected_official_keys", "DROPPED_KEYS"]

logger = logging.getLogger(__name__)

_WB = ("weight", "bias")
DROPPED_KEYS: dict[str, str] = {
    r"^decode_head\.cascade_decoders\.\d+\.layers\.\d+\.(self_attn|norm1)\.": "decoder self-attention, never called",
    r"^decode_head\.loss_decode\.": "unused loss buffer",
    "last_layer": "last decoder layer: only its attention logits (q, k) are used",
}

_BACKBONE_CLIP = ("conv1.weight", "class_embedding", "positional_embedding", "proj") + tuple(
    f"{m}.{w}" for m in ("ln_pre", "ln_post") for w in _WB
)
_BACKBONE_NEW = {
    "prompt_embeddings": "prompts.prompt_embeddings",
    "deep_prompt_embeddings": "prompts.deep_prompt_embeddings",
    "prompt_proj.weight": "prompts.proj.weight",
    "prompt_proj.bias": "prompts.proj.bias",
    "prompt_norm.weight": "prompts.norm.weight",
    "prompt_norm.bias": "prompts.norm.bias",
    "proj_layers": "tap_proj",
}
_CLIP_BLOCK = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias") + tuple(
    f"{m}.{w}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for w in _WB
)
_DECODER_LAYER = (
    tuple(f"multihead_attn.{m}.{w}" for m in ("q", "k", "v", "proj") for w in _WB)
    + tuple(f"{m}.{w}" for m in ("linear1", "linear2", "norm1", "norm2", "norm3") for w in _WB)
    + ("self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias")
)
_TEXT_FIXED = ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection")


def _max_index(keys: Iterable[str], pattern: str) -> int:
    found = [int(m.group(1)) for m in map(re.compile(pattern).match, keys) if m]
    return max(found, default=-1)


def expected_official_keys(keys: Iterable[str]) -> set[str]:
    """Every key of the official layout, for the numbers of blocks / stages / layers found in `keys`."""
    keys = list(keys)
    expected = {f"backbone.{k}" for k in (*_BACKBONE_CLIP, *_BACKBONE_NEW)}
    expected |= {"decode_head.weights_s1", "decode_head.weights_s2"}
    for i in range(_max_index(keys, r"^backbone\.transformer\.resblocks\.(\d+)\.") + 1):
        expected |= {f"backbone.transformer.resblocks.{i}.{s}" for s in _CLIP_BLOCK}
    for k in range(_max_index(keys, r"^backbone\.ln_layers\.(\d+)\.") + 1):
        expected |= {f"backbone.ln_layers.{k}.{w}" for w in _WB}
    for s in range(3):
        expected |= {f"decode_head.q_projs.{s}.{w}" for w in _WB}
        for layer in range(_max_index(keys, rf"^decode_head\.cascade_decoders\.{s}\.layers\.(\d+)\.") + 1):
            expected |= {f"decode_head.cascade_decoders.{s}.layers.{layer}.{x}" for x in _DECODER_LAYER}
    if any(k.startswith("text_encoder.") for k in keys):
        expected |= {f"text_encoder.{k}" for k in _TEXT_FIXED}
        for i in range(_max_index(keys, r"^text_encoder\.transformer\.resblocks\.(\d+)\.") + 1):
            expected |= {f"text_encoder.transformer.resblocks.{i}.{s}" for s in _CLIP_BLOCK}
    return expected


def map_official_key(key: str, last_layer: int) -> tuple[str | None, str | None]:
    """(our name, None) or (None, why it is dropped). `last_layer`: index of the decoders' last layer.
    Raises KeyError for an unknown key."""
    for pattern, reason in DROPPED_KEYS.items():
        if pattern != "last_layer" and re.match(pattern, key):
            return None, reason
    if key.startswith("backbone."):
        rest = key[len("backbone.") :]
        if rest in _BACKBONE_CLIP or rest.startswith("transformer.resblocks."):
            return "backbone.tower.visual." + rest, None
        if rest in _BACKBONE_NEW:
            return "backbone." + _BACKBONE_NEW[rest], None
        m = re.match(r"^ln_layers\.(\d+)\.(weight|bias)$", rest)
        if m:
            return f"backbone.tap_norms.{m.group(1)}.{m.group(2)}", None
    elif key.startswith("decode_head."):
        rest = key[len("decode_head.") :]
        m = re.match(r"^weights_s([12])$", rest)
        if m:
            return f"head.nga_weights.{int(m.group(1)) - 1}", None
        m = re.match(r"^q_projs\.(\d+)\.(weight|bias)$", rest)
        if m:
            return f"head.query_projs.{m.group(1)}.{m.group(2)}", None
        m = re.match(r"^cascade_decoders\.(\d+)\.layers\.(\d+)\.(.+)$", rest)
        if m:
            stage, layer, sub = m.group(1), int(m.group(2)), m.group(3)
            attn = re.match(r"^multihead_attn\.(q|k|v|proj)\.(weight|bias)$", sub)
            if layer == last_layer:
                if attn and attn.group(1) in ("q", "k"):
                    return f"head.decoders.{stage}.logits.{attn.group(1)}.{attn.group(2)}", None
                return None, DROPPED_KEYS["last_layer"]
            if attn:
                return f"head.decoders.{stage}.layers.{layer}.{attn.group(1)}.{attn.group(2)}", None
            if re.match(r"^(linear1|linear2|norm2|norm3)\.(weight|bias)$", sub):
                return f"head.decoders.{stage}.layers.{layer}.{sub}", None
    elif key.startswith("text_encoder."):
        return "clip_text." + key[len("text_encoder.") :], None
    raise KeyError(f"unknown Cascade-CLIP checkpoint key: {key}")


@register_converter("cascade_clip")
def convert_cascade_clip_checkpoint(official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official state dict (or an mmcv `{"state_dict": ...}` checkpoint) -> ours (float32)."""
    state = extract_state_dict(dict(official))
    check_expected_keys(state, expected_official_keys(state), "official Cascade-CLIP checkpoint")
    last_layer = _max_index(state, r"^decode_head\.cascade_decoders\.\d+\.layers\.(\d+)\.")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {}
    for key, value in state.items():
        new, reason = map_official_key(key, last_layer)
        if new is None:
            dropped.setdefault(reason, []).append(key)
            continue
        value = value.detach()
        out[new] = (value.float() if value.is_floating_point() else value).contiguous()
    logger.info(conversion_summary("cascade_clip", len(state), len(out), dropped))
    return out


def is_official_state_dict(keys: Iterable[str]) -> bool:
    return any(k.startswith(("decode_head.", "backbone.transformer.")) for k in keys)
