"""Official OVSegmentor checkpoint (`{"model": state_dict}` of `MultiLabelContrastive`) -> ours.

Mapped: the GroupViT image encoder (and its momentum copy) onto `GroupViTEncoder` (timm ViT blocks
renumbered: stage-1 blocks follow the stage-0 ones), BERT/RoBERTa (`text_encoder.transformer.*` ->
`text_encoder.*`), the three 1x1-Conv1d projectors onto `ProjectionHead` (weights squeezed), the
entity head. Dropped, with the reason logged: `logit_scale_mask` (unused), the entity head's
`assign` module (built but never called), the BERT pooler (unused: the [CLS] state is the feature),
`position_ids` (a buffer of transformers 4.21). A missing key of the official layout is an error.
"""

from __future__ import annotations

import logging
import re
from typing import Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter

__all__ = ["DROPPED_KEYS", "convert_ovsegmentor_checkpoint", "expected_official_keys"]

logger = logging.getLogger(__name__)

DROPPED_KEYS: dict[str, str] = {
    r"^logit_scale_mask$": "unused by the official forward",
    r"^multimodal_groupingblock\.blocks\.\d+\.assign\.": "entity-head assignment module, never called",
    r"^text_encoder\.transformer\.pooler\.": "BERT pooler, unused",
    r"^text_encoder\.transformer\.embeddings\.position_ids$": "constant buffer of transformers 4.21",
}

_WB = ("weight", "bias")
_VIT_BLOCK = tuple(f"{m}.{w}" for m in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2") for w in _WB)
_CROSS_BLOCK = tuple(
    f"{m}.{w}" for m in ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2", "norm_post")
    for w in _WB
)
_GROUPING = (
    tuple(f"{m}.{w}" for m in ("norm_tokens", "mlp_inter.fc1", "mlp_inter.fc2", "norm_post_tokens", "norm_x",
                               "assign.q_proj", "assign.k_proj", "assign.v_proj", "assign.proj", "norm_new_x",
                               "mlp_channels.fc1", "mlp_channels.fc2") for w in _WB)
    + tuple(f"pre_assign_attn.{k}" for k in _CROSS_BLOCK)
)
_PROJECTOR = ("linear_hidden.0.weight", "linear_hidden.0.bias", "linear_hidden.1.weight", "linear_hidden.1.bias",
              "linear_hidden.1.running_mean", "linear_hidden.1.running_var", "linear_out.weight", "linear_out.bias")

_GROUPING_RULES = (
    ("mlp_inter.", "token_mlp."), ("pre_assign_attn.", "pre_assign."), ("assign.q_proj.", "assign_q."),
    ("assign.k_proj.", "assign_k."), ("assign.v_proj.", "assign_v."), ("assign.proj.", "assign_proj."),
    ("mlp_channels.", "channel_mlp."),
)
_PROJECTOR_RULES = (("linear_hidden.0.", "fc1."), ("linear_hidden.1.", "norm."), ("linear_out.", "fc2."))
_PROJECTORS = {"img_projector.": "image_projector.", "text_projector.": "text_projector.",
               "bridge_projector.": "entity_projector."}


def _drop_reason(key: str) -> str | None:
    return next((reason for pattern, reason in DROPPED_KEYS.items() if re.match(pattern, key)), None)


def _stage0_depth(state: Mapping[str, torch.Tensor]) -> int:
    indices = [int(m.group(1)) for m in (re.match(r"^img_encoder\.layers\.0\.blocks\.(\d+)\.", k) for k in state) if m]
    return max(indices, default=-1) + 1


def expected_official_keys(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The official keys of the image encoder(s), projectors and (when present) entity head."""
    expected = {"logit_scale", "img_projector.linear_hidden.0.weight"}
    encoders = ["img_encoder"] + (["img_encoder_momentum"] if any(k.startswith("img_encoder_momentum.") for k in state) else [])
    for enc in encoders:
        expected |= {f"{enc}.{k}" for k in ("patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed",
                                            "layers.0.group_token", "norm.weight", "norm.bias")}
        expected |= {f"{enc}.layers.0.downsample.{k}" for k in _GROUPING}
        for layer in (0, 1):
            pattern = re.compile(rf"^img_encoder\.layers\.{layer}\.blocks\.(\d+)\.")
            count = max((int(m.group(1)) for m in map(pattern.match, state) if m), default=-1) + 1
            expected |= {f"{enc}.layers.{layer}.blocks.{i}.{k}" for i in range(count) for k in _VIT_BLOCK}
    heads = ["img_projector", "text_projector"]
    if any(k.startswith("multimodal_groupingblock.") for k in state):
        heads.append("bridge_projector")
        expected |= {f"multimodal_groupingblock.blocks.0.{m}.{w}" for m in ("norm_tokens", "norm_x", "norm_new_x") for w in _WB}
        expected |= {f"multimodal_groupingblock.blocks.0.pre_assign_attn.{k}" for k in _CROSS_BLOCK}
        expected |= {f"multimodal_groupingblock.blocks.0.post_attn.{k}" for k in _VIT_BLOCK}
    expected |= {f"{h}.{k}" for h in heads for k in _PROJECTOR}
    return expected


def _encoder_key(rest: str, depth0: int) -> str:
    m = re.match(r"^layers\.(\d+)\.blocks\.(\d+)\.(.*)$", rest)
    if m:
        layer, block, tail = int(m.group(1)), int(m.group(2)), m.group(3)
        if layer > 1:
            raise KeyError(f"GroupViT with more than one grouping stage is not supported: {rest}")
        return f"visual.blocks.{block + depth0 * layer}.{tail}"
    if rest == "layers.0.group_token":
        return "group_token"
    if rest.startswith("layers.0.downsample."):
        tail = rest[len("layers.0.downsample."):]
        for old, new in _GROUPING_RULES:
            if tail.startswith(old):
                return "grouping." + new + tail[len(old):]
        return "grouping." + tail
    if rest.startswith(("patch_embed.", "pos_embed", "norm.")):
        return "visual." + rest
    raise KeyError(f"unknown GroupViT key: {rest}")


def map_official_key(key: str, depth0: int) -> str:
    """Our name of an official (not dropped) key."""
    for prefix, ours in (("img_encoder_momentum.", "momentum_encoder."), ("img_encoder.", "image_encoder.")):
        if key.startswith(prefix):
            return ours + _encoder_key(key[len(prefix):], depth0)
    if key.startswith("text_encoder.transformer."):
        return "text_encoder." + key[len("text_encoder.transformer."):]
    for prefix, ours in _PROJECTORS.items():
        if key.startswith(prefix):
            tail = key[len(prefix):]
            for old, new in _PROJECTOR_RULES:
                if tail.startswith(old):
                    return ours + new + tail[len(old):]
    m = re.match(r"^multimodal_groupingblock\.blocks\.(\d+)\.(.*)$", key)
    if m:
        tail = m.group(2).replace("pre_assign_attn.", "cross_attn.", 1).replace("post_attn.", "self_attn.", 1)
        return f"entity_head.blocks.{m.group(1)}.{tail}"
    for old, new in (("align_proj_img.", "align_image."), ("align_proj_text.", "align_text.")):
        if key.startswith(old):
            return new + key[len(old):]
    if key == "logit_scale":
        return key
    raise KeyError(f"unknown OVSegmentor checkpoint key: {key}")


@register_converter("ovsegmentor")
def convert_ovsegmentor_checkpoint(official: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official state dict (or checkpoint with "model") -> our `OVSegmentor` state dict (float32)."""
    state = extract_state_dict(dict(official))
    check_expected_keys(state, expected_official_keys(state), "official OVSegmentor checkpoint")
    depth0 = _stage0_depth(state)
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {reason: [] for reason in DROPPED_KEYS.values()}
    for key, value in state.items():
        reason = _drop_reason(key)
        if reason is not None:
            dropped[reason].append(key)
            continue
        new = map_official_key(key, depth0)
        value = value.detach().to(torch.float32) if value.is_floating_point() else value.detach()
        if new.endswith("pos_embed") and value.ndim == 2:
            value = value[None]  # the DINO-init path stores (N, C); ours is timm's (1, N, C)
        if re.search(r"projector\.fc[12]\.weight$", new):
            value = value[..., 0]  # Conv1d(k=1) (out, in, 1) -> Linear (out, in)
        if new in out:
            raise KeyError(f"two official keys map to {new}")
        out[new] = value.contiguous()
    if any(k.startswith("momentum_encoder.") for k in out):
        out["momentum_synced"] = torch.tensor(True)
    logger.info(conversion_summary("ovsegmentor", len(state), len(out), dropped))
    return out
