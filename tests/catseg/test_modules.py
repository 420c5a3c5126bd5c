"""Fast unit tests of the CAT-Seg modules (tiny widths, random weights)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ovseg_d2.projects.catseg import CATSeg, CATSegAggregator, catseg_bce_loss
from ovseg_d2.projects.catseg.aggregator import (
    ClassAggregation,
    GuidedSwinBlock,
    shifted_window_mask,
)

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "catseg"


def tiny_model(names=("cat", "dog", "grass, lawn"), **kw) -> CATSeg:
    torch.manual_seed(0)
    args = dict(
        train_class_names=list(names),
        clip_model="tiny-vit-p16-w64",
        clip_resolution=(192, 192),  # 12x12 grid
        window=192,
        stride=128,
        sliding_resize=(320, 320),
        aggregator=dict(
            hidden_dim=32,
            text_proj_dim=16,
            appearance_proj_dim=16,
            decoder_dims=(32, 16),
            decoder_guidance_proj_dims=(8, 8),
            num_heads=2,
            window_size=6,
            pad_len=8,
        ),
        tap_upsample_dims=(24, 16),
    )
    args.update(kw)
    model = CATSeg(**args)
    with torch.no_grad():  # padding parameters start at zero officially; make them matter in tests
        for layer in model.aggregator.layers:
            layer.classes.pad_token.normal_()
            layer.classes.pad_guidance.normal_()
    return model


def tiny_aggregator(**overrides) -> CATSegAggregator:
    args = dict(
        text_dim=8,
        appearance_dim=8,
        hidden_dim=16,
        text_proj_dim=8,
        appearance_proj_dim=8,
        decoder_dims=(16, 16),
        decoder_guidance_dims=(4, 4),
        decoder_guidance_proj_dims=(4, 4),
        num_heads=2,
        window_size=6,
    )
    return CATSegAggregator(**{**args, **overrides})


# ------------------------------------------------------------------------------- reference code


def reference_class_layer(layer: ClassAggregation, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The official class layer written literally: materialised padding, concatenated guidance."""
    b, n, h, w, c = x.shape
    y = x.permute(0, 1, 4, 2, 3).reshape(b * n, c, h, w)
    if layer.pooling_size not in (None, (1, 1)):
        y = F.avg_pool2d(y, layer.pooling_size)
    hp, wp = y.shape[-2:]
    y = y.reshape(b, n, c, hp, wp)
    m = layer.pad_len - n
    if m > 0:
        y = torch.cat([y, layer.pad_token.view(1, 1, c, 1, 1).expand(b, m, c, hp, wp)], dim=1)
        t = torch.cat([t, layer.pad_guidance.view(1, 1, -1).expand(b, m, -1)], dim=1)
    s = y.shape[1]
    seq = y.permute(0, 3, 4, 1, 2).reshape(b * hp * wp, s, c)
    g = t[:, None].expand(b, hp * wp, s, t.shape[-1]).reshape(b * hp * wp, s, -1)
    attn = layer.attn
    xn = layer.norm1(seq)
    q = F.linear(torch.cat([xn, g], -1), attn.q.weight, attn.q.bias).view(-1, s, attn.num_heads, c // attn.num_heads)
    k = F.linear(torch.cat([xn, g], -1), attn.k.weight, attn.k.bias).view(-1, s, attn.num_heads, c // attn.num_heads)
    v = attn.v(xn).view(-1, s, attn.num_heads, c // attn.num_heads)
    q, k = F.elu(q) + 1, F.elu(k) + 1
    v = v / s
    kv = torch.einsum("nshd,nshv->nhdv", k, v)
    z = 1 / (torch.einsum("nlhd,nhd->nlh", q, k.sum(1)) + attn.eps)
    out = torch.einsum("nlhd,nhdv,nlh->nlhv", q, kv, z).reshape(-1, s, c) * s
    seq = seq + out
    seq = seq + layer.mlp(layer.norm2(seq))
    y = seq.reshape(b, hp, wp, s, c).permute(0, 3, 4, 1, 2).reshape(b * s, c, hp, wp)
    y = F.interpolate(y, size=(h, w), mode="bilinear", align_corners=True).reshape(b, s, c, h, w)[:, :n]
    return x + y.permute(0, 1, 3, 4, 2)


def reference_swin_block(block: GuidedSwinBlock, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Official guided Swin block on (B*N, H*W, C) with the guidance replicated per class."""
    b, n, h, w, c = x.shape
    ws, sh = block.window_size, block.shift_size
    xs = x.reshape(b * n, h, w, c)
    gs = g[:, None].expand(b, n, h, w, g.shape[-1]).reshape(b * n, h, w, -1)
    cat = torch.cat([block.norm1(xs), gs], -1)
    if sh:
        cat = torch.roll(cat, (-sh, -sh), (1, 2))
    win = cat.view(b * n, h // ws, ws, w // ws, ws, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, cat.shape[-1])
    a = block.attn
    heads = a.num_heads
    q = F.linear(win, a.q.weight, a.q.bias).view(win.shape[0], -1, heads, c // heads).transpose(1, 2)
    k = F.linear(win, a.k.weight, a.k.bias).view(win.shape[0], -1, heads, c // heads).transpose(1, 2)
    v = a.v(win[..., :c]).view(win.shape[0], -1, heads, c // heads).transpose(1, 2)
    att = (q * (c // heads) ** -0.5) @ k.transpose(-1, -2)
    if sh:
        mask = shifted_window_mask(h, w, ws, sh)
        att = att.view(-1, mask.shape[0], heads, ws * ws, ws * ws) + mask[None, :, None]
        att = att.view(-1, heads, ws * ws, ws * ws)
    out = a.proj((att.softmax(-1) @ v).transpose(1, 2).reshape(win.shape[0], -1, c))
    out = out.view(b * n, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b * n, h, w, c)
    if sh:
        out = torch.roll(out, (sh, sh), (1, 2))
    y = xs + out
    y = y + block.mlp(block.norm2(y))
    return y.reshape(b, n, h, w, c)


# ------------------------------------------------------------------------------- aggregator pieces


@pytest.mark.parametrize("pooling", [(1, 1), (2, 2)])
@pytest.mark.parametrize("n", [3, 8])
def test_class_layer_closed_form_padding_matches_materialised(pooling, n):
    torch.manual_seed(0)
    layer = ClassAggregation(dim=16, guidance_dim=8, num_heads=2, pooling_size=pooling, pad_len=8)
    with torch.no_grad():
        layer.pad_token.normal_()
        layer.pad_guidance.normal_()
    x = torch.randn(2, n, 6, 6, 16)
    t = torch.randn(2, n, 8)
    torch.testing.assert_close(layer(x, t), reference_class_layer(layer, x, t), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [0, 3])
def test_swin_block_matches_reference(shift):
    torch.manual_seed(0)
    block = GuidedSwinBlock(dim=16, guidance_dim=8, num_heads=2, window_size=6, shift_size=shift)
    x = torch.randn(2, 3, 12, 12, 16)
    g = torch.randn(2, 12, 12, 8)
    torch.testing.assert_close(block(x, g), reference_swin_block(block, x, g), atol=1e-5, rtol=1e-5)


def test_shift_mask_equals_official_buffer():
    official = torch.load(GOLDEN / "official_tiny.pth", weights_only=True)["model"]
    buf = official["sem_seg_head.predictor.transformer.layers.0.swin_block.block_2.attn_mask"]
    assert torch.equal(shifted_window_mask(24, 24, 12, 6), buf)


def test_top_k_selection_is_per_image_and_fills():
    torch.manual_seed(0)
    agg = tiny_aggregator(pooling_size=(1, 1), pad_len=4).eval()
    img = torch.randn(2, 8, 6, 6)
    text = torch.randn(10, 1, 8)
    guid = [torch.randn(2, 4, 12, 12), torch.randn(2, 4, 24, 24)]
    with torch.no_grad():
        logits, info = agg(img, text, guid, return_info=True)
    assert logits.shape == (2, 10, 24, 24)
    for b in range(2):
        expected = info["class_scores"][b].topk(4).indices.sort().values
        assert torch.equal(info["selected"][b], expected)
        kept = ~(logits[b] == -100).flatten(1).all(1)
        assert kept.sum() == 4 and torch.equal(kept.nonzero()[:, 0], expected)
        # image b alone gives the same logits for its kept classes
        with torch.no_grad():
            single = agg(img[b : b + 1], text, [g[b : b + 1] for g in guid])
        torch.testing.assert_close(single[0], logits[b], atol=1e-5, rtol=1e-5)


def test_batch_elements_are_independent():
    """Guidance must follow its own image (the mmseg port mixes them up for batch > 1)."""
    model = tiny_model().eval()
    images = torch.rand(2, 3, 192, 192) * 255
    with torch.no_grad():
        both = model.predict_logits(images, model.class_names)
        one = model.predict_logits(images[1:], model.class_names)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "options, pixel_chunks",
    [
        (dict(pad_len=0, pooling_size=(1, 1)), [17, 17, 17, 13]),
        (
            dict(pad_len=0, pooling_size=(1, 1), port_guidance_tiling=True, port_class_mlp_identity=True),
            [17, 17, 17, 13],
        ),
        (dict(pad_len=16, pooling_size=(2, 2)), [16]),
    ],
    ids=["pre-cvpr", "mmseg-port-bugs", "padded-pooled"],
)
def test_chunked_inference_equals_one_batch(options, pixel_chunks):
    """Inference runs the per-class stages over chunks of classes and the class mixing over chunks of
    pixels (aggregator docstring): the logits are those of one batch, uneven last chunks included, and
    with autograd on (training) the batch is never split."""
    torch.manual_seed(0)
    agg = tiny_aggregator(
        text_dim=16, appearance_dim=12, prompt_channels=3, decoder_guidance_dims=(6, 4), window_size=4, **options
    ).eval()
    with torch.no_grad():  # zero-initialised padding parameters would hide a padding mistake
        for p in agg.parameters():
            p.normal_(std=0.3)
    b, n, h = 2, 11, 8
    # per-image text: the port's guidance tiling then mixes up images that really differ
    guidance = [torch.randn(b, 6, 2 * h, 2 * h), torch.randn(b, 4, 4 * h, 4 * h)]
    inputs = (torch.randn(b, 16, h, h), torch.randn(b, n, 3, 16), guidance)
    appearance = torch.randn(b, 12, h, h)
    spatial_classes, mixed_pixels = [], []
    agg.layers[0].spatial.register_forward_hook(lambda m, args, out: spatial_classes.append(args[0].shape[1]))
    agg.layers[0].classes.attn.register_forward_hook(lambda m, args, out: mixed_pixels.append(args[0].shape[1]))
    with torch.no_grad():
        agg.chunk_tokens = 0
        whole = agg(*inputs, appearance=appearance)
        assert spatial_classes == [n]
        agg.chunk_tokens = 3 * b * h * h  # 3 classes (of b * h * h tokens) or 17 pixels (of b * n) per chunk
        chunked = agg(*inputs, appearance=appearance)
    assert spatial_classes[1:] == [3, 3, 3, 2]
    assert mixed_pixels[1:] == pixel_chunks
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    agg(*inputs, appearance=appearance)  # autograd on
    assert spatial_classes[-1] == n


# ------------------------------------------------------------------------------- loss


def test_bce_loss_keeps_ignore_pixels_as_negatives():
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 8, 8))
    target[0, :2] = 255
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    onehot = F.one_hot(target.clamp(max=2), 3).permute(0, 3, 1, 2).float()
    onehot[:, :, :2] = 0
    expected = F.binary_cross_entropy_with_logits(up, onehot)
    torch.testing.assert_close(catseg_bce_loss(logits, target), expected)


# ------------------------------------------------------------------------------- meta-architecture


def test_trainable_parameters_follow_official_rule():
    model = tiny_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    clip_trainable = {n for n in trainable if n.startswith("clip_")}
    expected = {f"clip_image.visual.transformer.resblocks.{i}.attn.{p}_proj_weight" for i in range(9) for p in "qv"}
    expected |= {f"clip_text.transformer.resblocks.{i}.attn.{p}_proj_weight" for i in range(2) for p in "qv"}
    assert clip_trainable == expected
    assert all(n in trainable for n, _ in model.aggregator.named_parameters(prefix="aggregator"))
    assert all(n in trainable for n, _ in model.tap_upsample.named_parameters(prefix="tap_upsample"))
    assert "clip_image.visual.transformer.resblocks.0.attn.in_proj_bias" not in trainable
    frozen = tiny_model(clip_finetune="none")
    assert not any(p.requires_grad for n, p in frozen.named_parameters() if n.startswith("clip_"))


def test_text_cache_per_vocabulary_and_invalidation():
    model = tiny_model().eval()
    images = torch.rand(1, 3, 192, 192) * 255
    emb = model.text_classifier
    with torch.no_grad():
        model.predict_logits(images, ["cat", "dog"])
        model.predict_logits(images, ["cat", "dog"])
        assert emb.encode_calls == 1
        model.predict_logits(images, ["cat", "bird"])
        assert emb.encode_calls == 2
    model.train()
    model.eval()  # train() drops the eval cache
    with torch.no_grad():
        model.predict_logits(images, ["cat", "dog"])
    assert emb.encode_calls == 3
    with torch.no_grad():  # weights change (e.g. an optimizer step) -> re-encode
        model.clip_text.transformer.resblocks[0].attn.v_proj_weight.add_(0.1)
        model.predict_logits(images, ["cat", "dog"])
    assert emb.encode_calls == 4


def test_training_text_embeddings_get_gradients():
    model = tiny_model().train()
    batch = [{"image": torch.rand(3, 192, 192) * 255, "sem_seg": torch.randint(0, 3, (192, 192))}]
    loss = model(batch)["loss_sem_seg"]
    loss.backward()
    assert model.clip_text.transformer.resblocks[0].attn.v_proj_weight.grad is not None
    assert model.clip_text.transformer.resblocks[0].attn.k_proj_weight.grad is None
    # The only trainable parameter without gradient: the last vision block's q (unused by the dense
    # value-path block; officially its gradient is exactly 0). Hence DDP find_unused_parameters=True.
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == ["clip_image.visual.transformer.resblocks.8.attn.q_proj_weight"]


def test_sliding_window_is_one_batched_forward_and_pos_embedding_resized_once():
    model = tiny_model().eval()
    calls = []
    model.aggregator.register_forward_hook(lambda m, a, o: calls.append(tuple(o.shape)))
    image = (torch.rand(3, 240, 320) * 255).round()
    with torch.no_grad():
        out = model([{"image": image, "height": 120, "width": 160}])
        model([{"image": image, "height": 120, "width": 160}])
    assert out[0]["sem_seg"].shape == (3, 120, 160)
    assert calls == [(5, 3, 48, 48)] * 2  # 4 crops + global view, once per image
    assert model.clip_image.pos_cache_misses == 1
    assert 0 <= out[0]["sem_seg"].min() and out[0]["sem_seg"].max() <= 1


def test_plain_path_and_predict_image():
    model = tiny_model(sliding_window=False).eval()
    image = torch.rand(3, 200, 150) * 255  # padded to 224x160, squashed to 192x192
    with torch.no_grad():
        out = model([{"image": image, "height": 100, "width": 75}])
        scores = model.predict_image(image, ["cat", "sky"])
    assert out[0]["sem_seg"].shape == (3, 100, 75)
    assert scores.shape == (2, 200, 150)


def test_presets_are_official_settings():
    b = CATSeg.preset("ViT-B/16")
    assert b == dict(clip_model="ViT-B-16-quickgelu", clip_resolution=(384, 384), tap_blocks=(3, 7))
    large = CATSeg.preset("ViT-L/14@336")
    assert large == dict(clip_model="ViT-L-14-336-quickgelu", clip_resolution=(336, 336), tap_blocks=(7, 15))


@pytest.mark.parametrize(
    "preset, total, trainable",
    [("ViT-B/16", 154_289_377, 25_115_873), ("ViT-L/14@336", 433_726_945, 70_270_177)],
)
def test_full_size_parameter_counts(preset, total, trainable):
    """Official counts (spec 2.2) minus the unused logit_scale; built on the meta device (no memory)."""
    with torch.device("meta"):
        model = CATSeg(train_class_names=["a"], **CATSeg.preset(preset))
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_bf16_autocast_eval_returns_float32_scores():
    model = tiny_model().eval()
    image = torch.rand(3, 240, 320) * 255
    with torch.no_grad():
        ref = model([{"image": image}])[0]["sem_seg"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model([{"image": image}])[0]["sem_seg"]
    assert out.dtype == torch.float32
    assert (out - ref).abs().max() < 0.05


def test_tapping_the_dense_last_block_is_rejected():
    with pytest.raises(ValueError, match="value-path"):
        tiny_model(tap_blocks=(3, 8))
