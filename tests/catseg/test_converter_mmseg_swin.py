"""The mmseg port's SwinTransformer layout (the Swin-B & ViT-L model) -> our Detectron2 Swin.

The port's Swin is mmseg's ``SwinTransformer`` (``patch_embed.projection``, ``stages.N.blocks.M.attn.w_msa``,
``ffn.layers.0.0`` / ``ffn.layers.1``, ``stages.N.downsample`` with an ``nn.Unfold`` PatchMerging, ``normI``);
ours is Detectron2's (the Microsoft names, PatchMerging by concatenation). No mmseg is needed here: the
mmseg-layout state dict is written from a reference Swin by the inverse mapping, spelled out independently
below, and the converter must recover the reference's features exactly.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling.backbone.swin import PatchMerging

from ovseg_d2.checkpoint import convert_checkpoint
from ovseg_d2.projects.catseg import build_feature_swin
from ovseg_d2.projects.catseg.converter_feature_backbone import convert_catseg_mmseg_checkpoint, unfold_to_concat_order

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "catseg_mmseg"
FE = "backbone.feature_extractor."
# Detectron2 name -> mmseg name, applied in order (inverse of the converter, written independently).
TO_MMSEG = (
    (r"^patch_embed\.proj\.", "patch_embed.projection."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.attn\.", r"stages.\1.blocks.\2.attn.w_msa."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc1\.", r"stages.\1.blocks.\2.ffn.layers.0.0."),
    (r"^layers\.(\d+)\.blocks\.(\d+)\.mlp\.fc2\.", r"stages.\1.blocks.\2.ffn.layers.1."),
    (r"^layers\.(\d+)\.", r"stages.\1."),  # block norms and the PatchMerging
)


def concat_to_unfold_index(channels: int) -> torch.Tensor:
    """index[u] = the concatenation-order channel that mmseg's unfold-order channel u reads.

    Unfold order: u = c * 4 + 2 * dy + dx. Concatenation order (x0, x1, x2, x3 = offsets (0,0), (1,0),
    (0,1), (1,1)): slot * C + c."""
    slot = {(0, 0): 0, (1, 0): 1, (0, 1): 2, (1, 1): 3}
    index = torch.empty(4 * channels, dtype=torch.long)
    for c in range(channels):
        for (dy, dx), s in slot.items():
            index[c * 4 + 2 * dy + dx] = s * channels + c
    return index


def to_mmseg_layout(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in ours.items():
        new = key
        for pattern, repl in TO_MMSEG:
            if re.match(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if ".downsample." in key:  # reduction (2C, 4C) / norm (4C,): input channels to unfold order
            value = value[..., concat_to_unfold_index(value.shape[-1] // 4)]
        out[FE + new] = value
    return out


def reference_swin(window: int = 7) -> torch.nn.Module:
    torch.manual_seed(0)
    swin = build_feature_swin(
        embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=window, pretrain_img_size=224,
        drop_path_rate=0.0,
    ).eval()
    with torch.no_grad():  # move every parameter off its constant init (norms 1/0, bias tables 0)
        for p in swin.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return swin


def test_unfold_order_on_a_hand_made_tensor():
    """x[c, dy, dx] = 100 c + 10 dy + dx, C = 2, one 2x2 patch.

    nn.Unfold(2, stride=2) lists channel-major, then dy, then dx: [0, 1, 10, 11, 100, 101, 110, 111].
    Detectron2's PatchMerging concatenates x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2],
    i.e. offsets (0,0), (1,0), (0,1), (1,1), each with both channels: [0, 100, 10, 110, 1, 101, 11, 111].
    Reordering the unfold vector must give the concatenation vector: the same permutation maps the input
    dimension of the reduction weight and the LayerNorm parameters."""
    x = torch.tensor([[[0.0, 1.0], [10.0, 11.0]], [[100.0, 101.0], [110.0, 111.0]]])[None]
    unfolded = F.unfold(x, kernel_size=2, stride=2)[0, :, 0]
    assert unfolded.tolist() == [0, 1, 10, 11, 100, 101, 110, 111]
    assert unfold_to_concat_order(unfolded).tolist() == [0, 100, 10, 110, 1, 101, 11, 111]
    weight = torch.arange(16.0).reshape(2, 8)  # permutes along the last dimension, row by row
    assert unfold_to_concat_order(weight)[1].tolist() == [8, 12, 10, 14, 9, 13, 11, 15]


def test_patch_merging_matches_the_unfold_formulation():
    """mmseg's PatchMerging is unfold -> LayerNorm(4C) -> Linear(4C, 2C, bias=False); with converted
    parameters Detectron2's PatchMerging gives the same output."""
    torch.manual_seed(0)
    channels, height, width = 6, 4, 6
    x = torch.randn(2, height * width, channels)
    norm_w, norm_b = 1 + 0.1 * torch.randn(4 * channels), 0.1 * torch.randn(4 * channels)
    reduction = torch.randn(2 * channels, 4 * channels) / (4 * channels) ** 0.5
    grid = x.transpose(1, 2).reshape(2, channels, height, width)
    unfolded = F.unfold(grid, kernel_size=2, stride=2).transpose(1, 2)
    expected = F.linear(F.layer_norm(unfolded, (4 * channels,), norm_w, norm_b), reduction)

    merging = PatchMerging(dim=channels)
    merging.load_state_dict(
        {
            "reduction.weight": unfold_to_concat_order(reduction),
            "norm.weight": unfold_to_concat_order(norm_w),
            "norm.bias": unfold_to_concat_order(norm_b),
        }
    )
    torch.testing.assert_close(merging(x, height, width), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("window, size", [(7, (224, 224)), (12, (200, 168))])  # shifted windows, padding
def test_mmseg_swin_checkpoint_gives_the_same_features(window, size):
    reference = reference_swin(window)
    port = torch.load(GOLDEN / "mmseg_port_tiny.pth", weights_only=True)["state_dict"]
    port = {k: v for k, v in port.items() if not k.startswith(FE)}  # swap the tiny ResNet for the Swin
    port.update(to_mmseg_layout(reference.state_dict()))
    converted = convert_catseg_mmseg_checkpoint({"meta": {}, "state_dict": port})

    backbone = {k[len("feature_backbone.") :]: v for k, v in converted.items() if k.startswith("feature_backbone.")}
    ours = build_feature_swin(
        embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8), window_size=window, pretrain_img_size=224
    ).eval()
    ours.load_state_dict(backbone, strict=True)
    # everything outside the backbone converts as for the ResNet model
    resnet_model = convert_checkpoint("catseg_mmseg", GOLDEN / "mmseg_port_tiny.pth")
    rest = {k for k in converted if not k.startswith("feature_backbone.")}
    assert rest == {k for k in resnet_model if not k.startswith("feature_backbone.")}

    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, actual = reference(x), ours(x)
    assert list(actual) == ["p0", "p1", "p2"]
    for name in actual:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=0)


def test_mmseg_swin_missing_key_is_named():
    port = torch.load(GOLDEN / "mmseg_port_tiny.pth", weights_only=True)["state_dict"]
    port = {k: v for k, v in port.items() if not k.startswith(FE)}
    port.update(to_mmseg_layout(reference_swin().state_dict()))
    del port[FE + "stages.1.downsample.reduction.weight"]
    with pytest.raises(ValueError, match=re.escape("stages.1.downsample.reduction.weight")):
        convert_catseg_mmseg_checkpoint(port)
