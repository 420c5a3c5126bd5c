"""Official CAT-Seg (detectron2) checkpoint -> our :class:`~.meta_arch.CATSeg` state dict.

Every official key is consumed: mapped one to one (possibly renamed/reshaped), or dropped on
purpose (``logit_scale``: unused by CAT-Seg; the Swin shift masks ``*.attn_mask``: deterministic
buffers that we recompute). Anything else raises, and so does an official checkpoint lacking any key
of the official layout (:func:`expected_official_keys`). All tensors are cast to float32 (official
checkpoints may store some tensors, e.g. the token embedding, in fp16). Each conversion logs one line
saying what was converted and what was dropped and why.
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter

__all__ = [
    "convert_catseg_checkpoint",
    "expected_official_keys",
    "map_official_key",
    "DROPPED_KEYS",
    "OFFICIAL_PREFIX",
]

logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "sem_seg_head.predictor."
_CLIP = OFFICIAL_PREFIX + "clip_model."
_AGG = OFFICIAL_PREFIX + "transformer."

# Keys intentionally not carried over (regex on the official name -> why).
DROPPED_KEYS: dict[str, str] = {
    re.escape(_CLIP) + r"logit_scale$": "unused by CAT-Seg",
    re.escape(_AGG) + r"layers\.\d+\.swin_block\.block_\d\.attn_mask$": "Swin shift-mask buffers, recomputed",
}

# The official layout (official names without OFFICIAL_PREFIX). Repeated blocks: "{i}" runs over
# 0 .. the largest index present, so a block missing in the middle is found as well.
_WB = ("weight", "bias")
_CLIP_BLOCK = tuple(
    f"attn.{p}" for p in ("in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight", "out_proj.bias")
) + tuple(f"{m}.{w}" for m in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for w in _WB)
_SWIN_BLOCK = tuple(
    f"{m}.{w}" for m in ("attn.q", "attn.k", "attn.v", "attn.proj", "mlp.fc1", "mlp.fc2", "norm1", "norm2") for w in _WB
)
_AGG_LAYER = (
    tuple(f"swin_block.block_{b}.{s}" for b in (1, 2) for s in _SWIN_BLOCK)
    + tuple(f"swin_block.guidance_norm.{w}" for w in _WB)
    + ("attention.padding_tokens", "attention.padding_guidance")
    + tuple(f"attention.{m}.{w}" for m in ("attention.q", "attention.k", "attention.v", "MLP.0", "MLP.2", "norm1", "norm2") for w in _WB)
)
_FIXED = (
    tuple(f"clip_model.{k}" for k in ("positional_embedding", "text_projection", "token_embedding.weight"))
    + tuple(f"clip_model.ln_final.{w}" for w in _WB)
    + tuple(f"clip_model.visual.{k}" for k in ("class_embedding", "conv1.weight", "positional_embedding", "proj"))
    + tuple(f"clip_model.visual.{m}.{w}" for m in ("ln_pre", "ln_post") for w in _WB)
    + tuple(
        f"transformer.{m}.{w}"
        for m in (
            "conv1", "guidance_projection.0", "text_guidance_projection.0", "decoder_guidance_projection.0.0",
            "decoder_guidance_projection.1.0", "decoder1.up", "decoder2.up", "head",
        )
        for w in _WB
    )
    + tuple(f"transformer.decoder{d}.conv.double_conv.{i}.{w}" for d in (1, 2) for i in (1, 4) for w in _WB)
    + tuple(f"transformer.decoder{d}.conv.double_conv.{i}.weight" for d in (1, 2) for i in (0, 3))
)
_REPEATED = (
    ("clip_model.visual.transformer.resblocks.", _CLIP_BLOCK),
    ("clip_model.transformer.resblocks.", _CLIP_BLOCK),
    ("transformer.layers.", _AGG_LAYER),
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


def _drop_reason(key: str) -> str | None:
    return next((reason for pattern, reason in DROPPED_KEYS.items() if re.match(pattern, key)), None)


def expected_official_keys(keys: Iterable[str]) -> set[str]:
    """Every key an official CAT-Seg checkpoint with the blocks found in `keys` must hold (the
    numbers of CLIP blocks and aggregator layers are read from the largest index present)."""
    expected = {OFFICIAL_PREFIX + k for k in _FIXED}
    expected |= {f"upsample{i}.{w}" for i in (1, 2) for w in _WB}
    for family, suffixes in _REPEATED:
        pattern = re.compile(re.escape(OFFICIAL_PREFIX + family) + r"(\d+)\.")
        indices = [int(m.group(1)) for m in map(pattern.match, keys) if m]
        for i in range(max(indices, default=0) + 1):
            expected |= {f"{OFFICIAL_PREFIX}{family}{i}.{s}" for s in suffixes}
    return expected


def map_official_key(key: str) -> str | None:
    """Our name of an official parameter/buffer; None if the key is dropped on purpose.
    Raises KeyError for a key that is neither mapped nor known to be dropped."""
    if _drop_reason(key) is not None:
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
    check_expected_keys(state, expected_official_keys(state), "official CAT-Seg checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {reason: [] for reason in DROPPED_KEYS.values()}
    for key, value in state.items():
        new = map_official_key(key)
        if new is None:
            dropped[_drop_reason(key)].append(key[len(OFFICIAL_PREFIX) :])
            continue
        if new in out:
            raise KeyError(f"two official keys map to {new}")
        value = value.detach().to(torch.float32) if value.is_floating_point() else value.detach()
        if new.endswith((".pad_token", ".pad_guidance")):
            value = value.reshape(-1)  # official (1, 1, C) -> (C,)
        out[new] = value.contiguous()
    logger.info(conversion_summary("catseg", len(state), len(out), dropped))
    return out

