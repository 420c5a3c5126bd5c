"""TCL's parts in isolation: PAMR and the policy's refinement hook, the masker's initial state, the
feature-level loss across processes, the converter's errors."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from ovseg_d2.engine import shutdown_distributed
from ovseg_d2.inference import InferencePolicy, run_inference
from ovseg_d2.inference.pamr import PAMR
from ovseg_d2.projects.tcl import TCL, text_grounded_info_nce
from ovseg_d2.projects.tcl.converter import map_official_key
from ovseg_d2.projects.tcl.fast_conv import upsampled_conv3x3, winograd_conv3x3_
from ovseg_d2.projects.tcl.masker import ChannelLayerNorm, GatedUpsampleDecoder


def _textured(b: int, h: int, w: int) -> torch.Tensor:
    """A textured image (PAMR is ill-conditioned on flat regions)."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    grating = torch.stack([torch.sin(x / 2.0), torch.cos(y / 3.0), torch.sin((x + y) / 5.0)])
    return 128 + 60 * grating[None].repeat(b, 1, 1, 1) + torch.rand(b, 3, h, w)


def test_pamr_keeps_constants_and_moves_masks_towards_the_image():
    torch.manual_seed(0)
    image = _textured(1, 32, 40)
    image[..., :, 20:] += 80  # an edge at column 20
    masks = torch.cat([torch.full((1, 1, 32, 40), 0.4), torch.rand(1, 2, 32, 40)], dim=1)
    out = PAMR(10, (1, 2, 4))(image, masks)
    torch.testing.assert_close(out[:, 0], masks[:, 0])  # a constant channel (background) stays constant
    assert out.shape == masks.shape
    # a convex combination: values stay in the masks' range, noise is smoothed
    assert out[:, 1:].min() >= masks[:, 1:].min() and out[:, 1:].max() <= masks[:, 1:].max()
    assert out[:, 1:].std() < 0.5 * masks[:, 1:].std()
    with pytest.raises(ValueError, match="one size"):
        PAMR()(image, masks[..., :-1])


def test_policy_refine_runs_on_every_view_at_the_scores_resolution():
    torch.manual_seed(0)
    image = _textured(1, 32, 48)[0]
    scores = torch.rand(1, 3, 8, 12)
    pamr = PAMR(5, (1, 2))
    seen = []

    def predict(views: torch.Tensor) -> torch.Tensor:
        seen.append(views)
        return scores

    out = run_inference(predict, image, InferencePolicy(refine=pamr), (32, 48))
    guide = F.interpolate(seen[0], size=(8, 12), mode="bilinear", align_corners=True)
    expected = F.interpolate(pamr(guide, scores), size=(32, 48), mode="bilinear", align_corners=False)[0]
    torch.testing.assert_close(out, expected)
    plain = run_inference(predict, image, InferencePolicy(), (32, 48))
    assert (out - plain).abs().max() > 1e-3


def test_decoder_equals_upsample_then_gated_convs_with_gradients():
    """The phase convolutions and the in-place, row-banded residuals equal the official ResConv written
    out: x = up(x); x = x + tanh(g1) * conv(gelu(LN(x))); x = x + tanh(g2) * conv2(gelu(LN(x)))."""
    torch.manual_seed(0)
    decoder = GatedUpsampleDecoder(8, stages=2).double()
    for stage in decoder:
        stage.conv2.band_rows = 5  # maps of 6 and 12 rows: bands of 5 + 1 and 5 + 5 + 2 rows
    for i, gate in enumerate(p for n, p in decoder.named_parameters() if n.endswith("gate")):
        gate.data.fill_(0.3 + 0.2 * i)

    def reference(x: torch.Tensor) -> torch.Tensor:
        for stage in decoder:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            for block in (stage.conv, stage.conv2):
                x = x + block.gate.tanh() * block.conv(F.gelu(block.norm(x)))
        return x

    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    out, expected = decoder(x), reference(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    # Inference takes the shared-product phase convs and Winograd instead, and leaves its input alone.
    x_before = x.clone()
    with torch.no_grad():
        torch.testing.assert_close(decoder(x), expected.detach(), rtol=0, atol=1e-12)
    assert torch.equal(x, x_before)
    params = list(decoder.parameters())
    grads = torch.autograd.grad(out.square().sum(), params)
    expected_grads = torch.autograd.grad(expected.square().sum(), params)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("height, width, band_rows", [(3, 5, 8), (6, 7, 2), (7, 9, 4), (12, 12, 8), (13, 6, 4)])
def test_inference_convs_equal_the_direct_convs(height: int, width: int, band_rows: int):
    """Both rewrites against F.conv2d in float64: odd and even maps, one band or several, a last band
    shorter than the others."""
    torch.manual_seed(0)
    channels = 6
    x = torch.randn(2, channels, height, width, dtype=torch.float64)
    weight = torch.randn(channels, channels, 3, 3, dtype=torch.float64)
    bias, gate = torch.randn(channels, dtype=torch.float64), torch.tensor(0.37, dtype=torch.float64)
    norm = ChannelLayerNorm(channels).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)

        def pre(t: torch.Tensor) -> torch.Tensor:
            return F.gelu(norm(t))

        up = F.interpolate(x, scale_factor=2, mode="nearest")
        expected_up = up + gate * F.conv2d(pre(up), weight, bias, padding=1)
        got_up = upsampled_conv3x3(x, pre, weight, bias, gate, band_rows=band_rows)
        torch.testing.assert_close(got_up, expected_up, rtol=0, atol=1e-12)

        expected = x + gate * F.conv2d(pre(x), weight, bias, padding=1)
        buffer = x.clone()
        assert winograd_conv3x3_(buffer, pre, weight, bias, gate, band_rows=band_rows) is buffer
        torch.testing.assert_close(buffer, expected, rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="even"):
            winograd_conv3x3_(x.clone(), pre, weight, bias, gate, band_rows=3)


def test_fresh_masker_is_clip_last_block_and_nearest_upsampling():
    model = TCL(clip_model="tiny-tcl", train_class_names=["object"], pamr=False).eval()
    last = model.clip_image.blocks[-1].state_dict()
    assert all(torch.equal(v, last[k]) for k, v in model.masker_block.state_dict().items())
    assert model.masker_block.mlp.c_fc.weight.data_ptr() != model.clip_image.blocks[-1].mlp.c_fc.weight.data_ptr()
    x = torch.randn(2, 64, 3, 5)
    torch.testing.assert_close(model.decoder(x), F.interpolate(x, scale_factor=4, mode="nearest"))
    assert (model.sim2mask.w.item(), model.sim2mask.b.item()) == (10.0, -2.5)
    # Crops of sizes that are not multiples of 16 are padded and cropped back.
    with torch.no_grad():
        out = model.predict_views(torch.rand(1, 3, 40, 50) * 255, model.vocabulary_for("ovseg_voc20_val"))
    assert out.shape == (1, 20, 40, 50) and 0 <= out.min() and out.max() <= 1


def _loss_worker(rank: int, world: int, init_file: Path, pooled: torch.Tensor, text: torch.Tensor, out: Path) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        b = len(text) // world
        local_pooled = pooled[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        local_text = text[rank * b : (rank + 1) * b].clone().requires_grad_(True)
        loss = text_grounded_info_nce(local_pooled, local_text, 7.0)
        loss.backward()
        official = text_grounded_info_nce(local_pooled, local_text, 7.0, official_multi_gpu_text_side=True)
        result = {"loss": loss.detach(), "pooled": local_pooled.grad, "text": local_text.grad, "official": official}
        torch.save({k: v.detach() for k, v in result.items()}, f"{out}.{rank}")
    finally:
        shutdown_distributed()


@pytest.mark.timeout(300)
def test_feature_loss_in_two_processes_equals_one_process(tmp_path):
    torch.manual_seed(0)
    pooled, text = torch.randn(4, 4, 8), torch.randn(4, 8)
    p, t = pooled.clone().requires_grad_(True), text.clone().requires_grad_(True)
    single = text_grounded_info_nce(p, t, 7.0)
    single.backward()

    mp.spawn(_loss_worker, args=(2, tmp_path / "init", pooled, text, tmp_path / "rank"), nprocs=2)
    ranks = [torch.load(f"{tmp_path / 'rank'}.{r}", weights_only=True) for r in range(2)]
    # DDP averages gradients over ranks: the mean of the rank losses and their gradients / world
    # equal the loss and gradients over the global batch.
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, single.detach())
    torch.testing.assert_close(torch.cat([r["pooled"] for r in ranks]) / 2, p.grad)
    torch.testing.assert_close(torch.cat([r["text"] for r in ranks]) / 2, t.grad)
    # The official gather (kept behind a switch) scores other ranks' images with the wrong masks.
    assert abs((ranks[0]["official"] + ranks[1]["official"]) / 2 - single.detach()) > 1e-3
    assert text_grounded_info_nce(pooled, text, 7.0, official_multi_gpu_text_side=True) == single.detach()


def test_converter_names_unknown_keys():
    assert map_official_key("masker.image_encoder.backbone.transformer.resblocks.11.ln_1.weight") == "masker_block.ln_1.weight"
    assert map_official_key("masker.image_encoder.decoder.decoder.net.1.conv2.gate.gate") == "decoder.1.conv2.gate"
    assert map_official_key("pamr.aff_x.kernel") is None
    with pytest.raises(KeyError, match="masker.extra"):
        map_official_key("masker.extra")
