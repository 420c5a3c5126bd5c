"""Official CAT-Seg (detectron2) checkpoint -> our :class:`~.meta_arch.CATSeg` state dict.

Every official key is consumed: mapped one to one (possibly renamed/reshaped), or dropped on
purpose (``logit_scale``: unused by CAT-Seg; the Swin shift masks ``*.attn_mask``: deterministic
buffers that we recompute). Anything else raises. All tensors are cast to float32 (official
checkpoints may store some tensors, e.g. the token embedding, in fp16).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from ovseg_d2.checkpoint import extract_state_dict, register_converter

__all__ = ["convert_catseg_checkpoint", "map_official_key", "DROPPED_KEYS", "OFFICIAL_PREFIX"]

OFFICIAL_PREFIX = "sem_seg_head.predictor."
_CLIP = OFFICIAL_PREFIX + "clip_model."
_AGG = OFFICIAL_PREFIX + "transformer."

# Keys intentionally not carried over (regexes on the official name).
DROPPED_KEYS = (
    re.escape(_CLIP) + r"logit_scale$",
    re.escape(_AGG) + r"layers\.\d+\.swin_block\.block_\d\.attn_mask$",
)

# Official aggregator sub-names -> ours (applied after stripping `_AGG`, first match wins).
_AGG_RULES: tuple[tuple[str, str], ...] = (
    (r"^layers\.(\d+)\.swin_block\.block_1\.", r"layers.\1.spatial.blocks.0."),
    (r"^layers\.(\d+)\.swin_block\.block_2\.", r"layers.\1.spatial.blocks.1."),
    (r"^layers\.(\d+)\.swin_block\.guidance_norm\.", r"layers.\1.spatial.guidance_norm."),
    (r"^layers\.(\d+)\.attention\.padding_tokens$", r"layers.\1.classes.pad_token"),
    (r"^layers\.(\d+)\.attention\.padding_guidance$", r"layers.\1.classes.pad_guidance"),
    (r"^layers\.(\d+)\.attention\.attention\.", r"layers.\1.classes.attn."),
    (r"^layers\.(\d+)\.attention\.MLP\.0\.", r"layers.\1.classes.mlp.fc1."),
    (r"^layers\.(\d+)\.attention\.MLP\.2\.", r"layers.\1.classes.mlp.fc2."),
    (r"^layers\.(\d+)\.attention\.norm([12])\.", r"layers.\1.classes.norm\2."),
    (r"^conv1\.", "corr_embed."),
    (r"^guidance_projection\.0\.", "appearance_proj."),
    (r"^text_guidance_projection\.0\.", "text_proj."),
    (r"^decoder_guidance_projection\.(\d+)\.0\.", r"decoder_guidance_proj.\1."),
    (r"^decoder(\d)\.up\.", None),  # handled in _decoder_key
    (r"^decoder(\d)\.conv\.double_conv\.", None),
    (r"^head\.", "decoder.predictor."),
)
_DOUBLE_CONV = {"0": "conv1", "1": "norm1", "3": "conv2", "4": "norm2"}


def _decoder_key(name: str) -> str | None:
    m = re.match(r"^decoder(\d)\.up\.(weight|bias)$", name)
    if m:
        return f"decoder.stages.{int(m.group(1)) - 1}.up.{m.group(2)}"
    m = re.match(r"^decoder(\d)\.conv\.double_conv\.(\d)\.(weight|bias)$", name)
    if m and m.group(2) in _DOUBLE_CONV:
        return f"decoder.stages.{int(m.group(1)) - 1}.{_DOUBLE_CONV[m.group(2)]}.{m.group(3)}"
    return None


def map_official_key(key: str) -> str | None:
    """Our name of an official parameter/buffer; None if the key is dropped on purpose.
    Raises KeyError for a key that is neither mapped nor known to be dropped."""
    if any(re.match(p, key) for p in DROPPED_KEYS):
        return None
    if key.startswith(_CLIP):
        rest = key[len(_CLIP) :]
        if rest.startswith("visual."):
            return "clip_image." + rest
        return "clip_text." + rest  # token_embedding, positional_embedding, transformer.*, ln_final, text_projection
    if key.startswith(_AGG):
        rest = key[len(_AGG) :]
        for pattern, repl in _AGG_RULES:
            if re.match(pattern, rest):
                new = _decoder_key(rest) if repl is None else re.sub(pattern, repl, rest)
                if new is not None:
                    return "aggregator." + new
        raise KeyError(f"unknown CAT-Seg aggregator key: {key}")
    m = re.match(r"^upsample([12])\.(weight|bias)$", key)
    if m:
        return f"tap_upsample.{int(m.group(1)) - 1}.{m.group(2)}"
    raise KeyError(f"unknown CAT-Seg checkpoint key: {key}")


@register_converter("catseg")
def convert_catseg_checkpoint(official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official CAT-Seg state dict (or a ``{"model": state_dict}`` checkpoint) -> ours (float32)."""
    state = extract_state_dict(dict(official))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = map_official_key(key)
        if new is None:
            continue
        if new in out:
            raise KeyError(f"two official keys map to {new}")
        value = value.detach().to(torch.float32) if value.is_floating_point() else value.detach()
        if new.endswith((".pad_token", ".pad_guidance")):
            value = value.reshape(-1)  # official (1, 1, C) -> (C,)
        out[new] = value.contiguous()
    return out

