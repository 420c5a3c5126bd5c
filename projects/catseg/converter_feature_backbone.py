"""Checkpoints of the pre-CVPR CAT-Seg (feature-backbone version) -> our :class:`~.meta_arch.CATSeg` state dict.

Two layouts, one converter each (both register with ``ovseg_d2.checkpoint``):

- ``"catseg_mmseg"``: mmsegmentation ``projects/CAT-Seg`` (``{"meta", "state_dict"}``): ``backbone.``
  (``feature_extractor.`` = mmseg ResNet or SwinTransformer, ``clip_model.`` = OpenAI CLIP with fused
  ``in_proj_weight``),
  ``neck.`` (cost embedding, guidance projections, aggregation layers with a fused Swin ``qk``) and
  ``decode_head.`` (decoder guidance projections, up blocks, ``conv_seg``).
- ``"catseg_d2_legacy"``: the official detectron2 tree before the CVPR release (``af4fa0b``):
  ``backbone.`` (Detectron2 ResNet / Swin, kept by name), ``sem_seg_head.predictor.clip_model.`` (fused
  ``in_proj_weight``) and ``sem_seg_head.predictor.transformer.`` (the CVPR aggregator's names without
  class padding).

Every key is mapped or dropped on purpose (``logit_scale``: unused; the ``relative_position_index`` of the
port's aggregator Swin blocks: a buffer the port never uses; the official Swin shift masks: recomputed);
anything else raises, and so does a file lacking a key of its layout. Fused CLIP ``in_proj_weight``s are
split into q/k/v (our towers hold them separately), fused ``qk`` into ``q`` and ``k``; the input channels
of mmseg's Swin ``PatchMerging`` are permuted (see :func:`unfold_to_concat_order`); everything is cast to
float32 (the port stores the token embedding in fp16).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable, Mapping

import torch

from ovseg_d2.checkpoint import check_expected_keys, conversion_summary, extract_state_dict, register_converter
from ovseg_d2.clip import split_qkv_state_dict

from .converter import OFFICIAL_PREFIX, expected_official_keys, map_official_key

__all__ = [
    "convert_catseg_mmseg_checkpoint",
    "convert_catseg_d2_legacy_checkpoint",
    "map_mmseg_key",
    "unfold_to_concat_order",
]

logger = logging.getLogger(__name__)

_WB = ("weight", "bias")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_CLIP_BLOCK = ("attn.in_proj_weight", "attn.in_proj_bias") + tuple(
    f"{m}.{w}" for m in ("attn.out_proj", "ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj") for w in _WB
)
_CLIP_FIXED = (
    ("positional_embedding", "text_projection", "token_embedding.weight")
    + tuple(f"ln_final.{w}" for w in _WB)
    + tuple(f"visual.{k}" for k in ("class_embedding", "conv1.weight", "positional_embedding", "proj"))
    + tuple(f"visual.{m}.{w}" for m in ("ln_pre", "ln_post") for w in _WB)
)

# ------------------------------------------------------------------------------------------ mmseg port

_MMSEG_DROPPED: dict[str, str] = {
    r"^backbone\.clip_model\.logit_scale$": "unused by CAT-Seg",
    r"^neck\.layers\.\d+\.spatial_agg\.block_\d\.attn\.w_msa\.relative_position_index$": "buffer the port never uses",
}
_MMSEG_SWIN_BLOCK = tuple(
    f"{m}.{w}"
    for m in ("norm1", "attn.w_msa.qk", "attn.w_msa.v", "attn.w_msa.proj", "norm2", "ffn.layers.0.0", "ffn.layers.1")
    for w in _WB
)
_MMSEG_LAYER = (
    tuple(f"spatial_agg.block_{b}.{s}" for b in (1, 2) for s in _MMSEG_SWIN_BLOCK)
    + tuple(f"spatial_agg.guidance_norm.{w}" for w in _WB)
    + tuple(
        f"class_agg.{m}.{w}"
        for m in ("attention.q", "attention.k", "attention.v", "MLP.layers.0.0", "MLP.layers.1", "norm1", "norm2")
        for w in _WB
    )
)
_MMSEG_FIXED = (
    tuple(f"backbone.clip_model.{k}" for k in _CLIP_FIXED)
    + tuple(f"neck.{m}.{w}" for m in ("conv1", "guidance_projection.0", "text_guidance_projection.0") for w in _WB)
    + tuple(
        f"decode_head.{m}.{w}"
        for m in (
            "decoder_guidance_projection.0.0",
            "decoder_guidance_projection.1.0",
            "decoder1.up",
            "decoder2.up",
            "conv_seg",
            *(f"decoder{d}.conv{c}.gn" for d in (1, 2) for c in (1, 2)),
        )
        for w in _WB
    )
    + tuple(f"decode_head.decoder{d}.conv{c}.conv.weight" for d in (1, 2) for c in (1, 2))
)
_MMSEG_REPEATED = (
    ("backbone.clip_model.visual.transformer.resblocks.", _CLIP_BLOCK),
    ("backbone.clip_model.transformer.resblocks.", _CLIP_BLOCK),
    ("neck.layers.", _MMSEG_LAYER),
)
_FE = "backbone.feature_extractor."
_MMSEG_RESNET_FIXED = (f"{_FE}conv1.weight",) + tuple(f"{_FE}bn1.{w}" for w in _BN)
_MMSEG_RESNET_BLOCK = tuple(f"conv{i}.weight" for i in (1, 2, 3)) + tuple(f"bn{i}.{w}" for i in (1, 2, 3) for w in _BN)
_MMSEG_RESNET_REPEATED = tuple((f"{_FE}layer{k}.", _MMSEG_RESNET_BLOCK) for k in (1, 2, 3, 4))
_MMSEG_SWIN_BACKBONE_BLOCK = tuple(
    f"{m}.{w}"
    for m in ("norm1", "norm2", "attn.w_msa.qkv", "attn.w_msa.proj", "ffn.layers.0.0", "ffn.layers.1")
    for w in _WB
) + ("attn.w_msa.relative_position_bias_table", "attn.w_msa.relative_position_index")
_SWIN_BLOCK_PORT = r"^backbone\.feature_extractor\.stages\.(\d+)\.blocks\.(\d+)\."
_SWIN_BLOCK_OURS = r"feature_backbone.layers.\1.blocks.\2."

# Ordered rules (regex on the port's name -> ours); None = needs a custom split (fused qk).
_MMSEG_RULES: tuple[tuple[str, str], ...] = (
    (r"^backbone\.clip_model\.visual\.", "clip_image.visual."),
    (r"^backbone\.clip_model\.", "clip_text."),
    (r"^backbone\.feature_extractor\.conv1\.", "feature_backbone.stem.conv1."),
    (r"^backbone\.feature_extractor\.bn1\.", "feature_backbone.stem.conv1.norm."),
    (r"^backbone\.feature_extractor\.layer(\d)\.(\d+)\.conv(\d)\.", None),  # stage index + 1: _resnet_key
    (r"^backbone\.feature_extractor\.layer(\d)\.(\d+)\.bn(\d)\.", None),
    (r"^backbone\.feature_extractor\.layer(\d)\.0\.downsample\.([01])\.", None),
    # mmseg SwinTransformer -> Detectron2 SwinTransformer (the Microsoft names)
    (r"^backbone\.feature_extractor\.patch_embed\.projection\.", "feature_backbone.patch_embed.proj."),
    (r"^backbone\.feature_extractor\.patch_embed\.norm\.", "feature_backbone.patch_embed.norm."),
    (_SWIN_BLOCK_PORT + r"attn\.w_msa\.", _SWIN_BLOCK_OURS + "attn."),
    (_SWIN_BLOCK_PORT + r"ffn\.layers\.0\.0\.", _SWIN_BLOCK_OURS + "mlp.fc1."),
    (_SWIN_BLOCK_PORT + r"ffn\.layers\.1\.", _SWIN_BLOCK_OURS + "mlp.fc2."),
    (_SWIN_BLOCK_PORT + r"norm([12])\.", _SWIN_BLOCK_OURS + r"norm\3."),
    (
        r"^backbone\.feature_extractor\.stages\.(\d+)\.downsample\.(reduction|norm)\.",
        r"feature_backbone.layers.\1.downsample.\2.",
    ),
    (r"^backbone\.feature_extractor\.norm(\d)\.", r"feature_backbone.norm\1."),
    (r"^neck\.layers\.(\d+)\.spatial_agg\.block_1\.", r"aggregator.layers.\1.spatial.blocks.0."),
    (r"^neck\.layers\.(\d+)\.spatial_agg\.block_2\.", r"aggregator.layers.\1.spatial.blocks.1."),
    (r"^neck\.layers\.(\d+)\.spatial_agg\.guidance_norm\.", r"aggregator.layers.\1.spatial.guidance_norm."),
    (r"^neck\.layers\.(\d+)\.class_agg\.attention\.", r"aggregator.layers.\1.classes.attn."),
    (r"^neck\.layers\.(\d+)\.class_agg\.MLP\.layers\.0\.0\.", r"aggregator.layers.\1.classes.mlp.fc1."),
    (r"^neck\.layers\.(\d+)\.class_agg\.MLP\.layers\.1\.", r"aggregator.layers.\1.classes.mlp.fc2."),
    (r"^neck\.layers\.(\d+)\.class_agg\.norm([12])\.", r"aggregator.layers.\1.classes.norm\2."),
    (r"^neck\.conv1\.", "aggregator.corr_embed."),
    (r"^neck\.guidance_projection\.0\.", "aggregator.appearance_proj."),
    (r"^neck\.text_guidance_projection\.0\.", "aggregator.text_proj."),
    (r"^decode_head\.decoder_guidance_projection\.(\d)\.0\.", r"aggregator.decoder_guidance_proj.\1."),
    (r"^decode_head\.decoder(\d)\.", None),  # stage index - 1: _decoder_key
    (r"^decode_head\.conv_seg\.", "aggregator.decoder.predictor."),
)
# Inside a Swin block of the port (after the block prefix is mapped).
_SWIN_RENAMES = (
    ("attn.w_msa.v.", "attn.v."),
    ("attn.w_msa.proj.", "attn.proj."),
    ("ffn.layers.0.0.", "mlp.fc1."),
    ("ffn.layers.1.", "mlp.fc2."),
)


def _resnet_key(key: str) -> str | None:
    m = re.match(r"^backbone\.feature_extractor\.layer(\d)\.(\d+)\.(conv|bn)(\d)\.(\w+)$", key)
    if m:
        stage, block, kind, i, leaf = m.groups()
        norm = ".norm" if kind == "bn" else ""
        return f"feature_backbone.res{int(stage) + 1}.{block}.conv{i}{norm}.{leaf}"
    m = re.match(r"^backbone\.feature_extractor\.layer(\d)\.0\.downsample\.([01])\.(\w+)$", key)
    if m:
        stage, part, leaf = m.groups()
        return f"feature_backbone.res{int(stage) + 1}.0.shortcut{'' if part == '0' else '.norm'}.{leaf}"
    return None


def _decoder_key(key: str) -> str | None:
    m = re.match(r"^decode_head\.decoder(\d)\.up\.(weight|bias)$", key)
    if m:
        return f"aggregator.decoder.stages.{int(m.group(1)) - 1}.up.{m.group(2)}"
    m = re.match(r"^decode_head\.decoder(\d)\.conv([12])\.(conv|gn)\.(weight|bias)$", key)
    if m:
        stage, i, kind, leaf = m.groups()
        return f"aggregator.decoder.stages.{int(stage) - 1}.{'conv' if kind == 'conv' else 'norm'}{i}.{leaf}"
    return None


def _drop_reason(key: str, dropped: Mapping[str, str]) -> str | None:
    return next((reason for pattern, reason in dropped.items() if re.match(pattern, key)), None)


def map_mmseg_key(key: str) -> str | None:
    """Our name of a port parameter/buffer (before the q/k/v and qk splits); None if dropped on purpose.
    Raises KeyError for an unknown key, NotImplementedError for a backbone other than ResNet or Swin."""
    if _drop_reason(key, _MMSEG_DROPPED) is not None:
        return None
    for pattern, repl in _MMSEG_RULES:
        if not re.match(pattern, key):
            continue
        if repl is not None:
            new = re.sub(pattern, repl, key)
            for old, ours in _SWIN_RENAMES:
                if ".spatial.blocks." in new:
                    new = new.replace(old, ours)
            return new
        new = _resnet_key(key) if key.startswith("backbone.") else _decoder_key(key)
        if new is not None:
            return new
    if key.startswith("backbone.feature_extractor."):
        raise NotImplementedError(
            f"{key}: not a key of the port's ResNet or SwinTransformer feature extractor (the only two "
            "converted); another backbone needs its own mapping in projects/catseg/converter_feature_backbone.py"
        )
    raise KeyError(f"unknown key of a CAT-Seg mmseg checkpoint: {key}")


def _expected(keys: Iterable[str], fixed: Iterable[str], repeated: Iterable[tuple[str, tuple[str, ...]]]) -> set[str]:
    """`fixed` plus, per repeated family, every suffix for blocks 0 .. the largest index present."""
    keys = list(keys)
    expected = set(fixed)
    for family, suffixes in repeated:
        pattern = re.compile(re.escape(family) + r"(\d+)\.")
        indices = [int(m.group(1)) for m in map(pattern.match, keys) if m]
        if not indices and family.startswith("backbone.feature_extractor.layer"):
            continue  # the port keeps 3 ResNet stages; layer4 is optional
        for i in range(max(indices, default=0) + 1):
            expected |= {f"{family}{i}.{s}" for s in suffixes}
    for k in keys:  # the first block of each ResNet stage has a projection shortcut
        m = re.match(r"^(backbone\.feature_extractor\.layer\d)\.0\.", k)
        if m:
            expected |= {f"{m.group(1)}.0.downsample.0.weight"} | {f"{m.group(1)}.0.downsample.1.{w}" for w in _BN}
    return expected


def _mmseg_swin_expected(keys: Iterable[str]) -> set[str]:
    """The keys of an mmseg SwinTransformer with every stage an output (the port's ``out_indices``
    (0, 1, 2)): patch embedding, the blocks present per stage, a PatchMerging after every stage but the
    last, one output norm per stage."""
    pattern = re.compile(re.escape(_FE) + r"stages\.(\d+)\.blocks\.(\d+)\.")
    blocks: dict[int, int] = {}
    for m in filter(None, map(pattern.match, keys)):
        stage, block = int(m.group(1)), int(m.group(2))
        blocks[stage] = max(blocks.get(stage, 0), block)
    num_stages = max(blocks, default=0) + 1
    expected = {f"{_FE}patch_embed.{m}.{w}" for m in ("projection", "norm") for w in _WB}
    for s in range(num_stages):
        for b in range(blocks.get(s, 0) + 1):
            expected |= {f"{_FE}stages.{s}.blocks.{b}.{x}" for x in _MMSEG_SWIN_BACKBONE_BLOCK}
        if s < num_stages - 1:
            expected |= {f"{_FE}stages.{s}.downsample.reduction.weight"}
            expected |= {f"{_FE}stages.{s}.downsample.norm.{w}" for w in _WB}
        expected |= {f"{_FE}norm{s}.{w}" for w in _WB}
    return expected


def _mmseg_expected(keys: Iterable[str]) -> set[str]:
    keys = list(keys)
    if any(k.startswith(f"{_FE}patch_embed.") for k in keys):
        backbone = _mmseg_swin_expected(keys)
    else:
        backbone = _expected(keys, _MMSEG_RESNET_FIXED, _MMSEG_RESNET_REPEATED)
    return _expected(keys, _MMSEG_FIXED, _MMSEG_REPEATED) | backbone


def unfold_to_concat_order(value: torch.Tensor) -> torch.Tensor:
    """Reorder the last dimension (4C) of a PatchMerging ``reduction`` weight or ``norm`` parameter from
    mmseg's ``nn.Unfold`` order to the Swin / Detectron2 concatenation order.

    mmseg unfolds 2x2 patches channel-major: input channel ``c * 4 + 2 * dy + dx`` holds channel c of the
    pixel at row offset dy, column offset dx. Detectron2 concatenates ``x[0::2, 0::2], x[1::2, 0::2],
    x[0::2, 1::2], x[1::2, 1::2]``: slot j = 0, 1, 2, 3 is (dy, dx) = (0, 0), (1, 0), (0, 1), (1, 1), input
    channel ``j * C + c``. So ours[j * C + c] = mmseg[c * 4 + (0, 2, 1, 3)[j]]."""
    *lead, four_c = value.shape
    per_offset = value.reshape(*lead, four_c // 4, 4)[..., [0, 2, 1, 3]]  # (..., C, j)
    return per_offset.transpose(-1, -2).reshape(*lead, four_c)


def _finish(pairs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 copies; fused CLIP in_proj weights split into q/k/v."""
    out = {k: (v.detach().float() if v.is_floating_point() else v.detach()).contiguous() for k, v in pairs.items()}
    return split_qkv_state_dict(out)


@register_converter("catseg_mmseg")
def convert_catseg_mmseg_checkpoint(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mmseg ``projects/CAT-Seg`` state dict (or its ``{"meta", "state_dict"}`` checkpoint) -> ours."""
    state = extract_state_dict(dict(checkpoint))
    check_expected_keys(state, _mmseg_expected(state), "CAT-Seg mmseg checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {reason: [] for reason in _MMSEG_DROPPED.values()}
    for key, value in state.items():
        new = map_mmseg_key(key)
        if new is None:
            dropped[_drop_reason(key, _MMSEG_DROPPED)].append(key)
            continue
        if new.endswith(".attn.w_msa.qk.weight") or new.endswith(".attn.w_msa.qk.bias"):
            # fused (2C, ...) projection: rows 0:C are q, C:2C are k
            base, leaf = new.rsplit(".attn.w_msa.qk.", 1)
            q, k = value.chunk(2, dim=0)
            out[f"{base}.attn.q.{leaf}"], out[f"{base}.attn.k.{leaf}"] = q, k
            continue
        if re.match(r"^feature_backbone\.layers\.\d+\.downsample\.", new):
            value = unfold_to_concat_order(value)
        if new in out:
            raise KeyError(f"two mmseg keys map to {new}")
        out[new] = value
    out = _finish(out)
    logger.info(conversion_summary("catseg_mmseg", len(state), len(out), dropped))
    return out


# --------------------------------------------------------------------------- official pre-CVPR tree

_LEGACY_DROPPED: dict[str, str] = {
    re.escape(OFFICIAL_PREFIX) + r"clip_model\.logit_scale$": "unused by CAT-Seg",
    re.escape(OFFICIAL_PREFIX)
    + r"transformer\.layers\.\d+\.swin_block\.block_\d\.attn_mask$": "Swin shift masks, recomputed",
}


def _legacy_expected(keys: Iterable[str]) -> set[str]:
    """The CVPR layout's aggregator and CLIP keys, without the tap upsamplers and class padding, and with
    fused CLIP attention input projections."""
    keys = list(keys)
    expected = set()
    for k in expected_official_keys(keys):
        if k.startswith("upsample") or k.endswith(("padding_tokens", "padding_guidance")):
            continue
        if k.endswith(("q_proj_weight", "k_proj_weight", "v_proj_weight")):
            k = k.rsplit(".", 1)[0] + ".in_proj_weight"
        expected.add(k)
    if not any(k.startswith("backbone.") for k in keys):
        expected.add("backbone.<feature backbone weights>")
    return expected


@register_converter("catseg_d2_legacy")
def convert_catseg_d2_legacy_checkpoint(checkpoint: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official pre-CVPR CAT-Seg (detectron2, R101 or Swin-B feature backbone) state dict -> ours."""
    state = extract_state_dict(dict(checkpoint))
    check_expected_keys(state, _legacy_expected(state), "official pre-CVPR CAT-Seg checkpoint")
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, list[str]] = {reason: [] for reason in _LEGACY_DROPPED.values()}
    for key, value in state.items():
        reason = _drop_reason(key, _LEGACY_DROPPED)
        if reason is not None:
            dropped[reason].append(key)
        elif key.startswith("backbone."):
            out["feature_backbone." + key[len("backbone.") :]] = value
        elif key.endswith(".in_proj_weight") and key.startswith(OFFICIAL_PREFIX + "clip_model."):
            # the CVPR mapping of the split names, applied to the fused tensor
            out[
                map_official_key(key[: -len("in_proj_weight")] + "q_proj_weight")[: -len("q_proj_weight")]
                + "in_proj_weight"
            ] = value
        else:
            out[map_official_key(key)] = value  # raises KeyError for anything unknown
    out = _finish(out)
    logger.info(conversion_summary("catseg_d2_legacy", len(state), len(out), dropped))
    return out
