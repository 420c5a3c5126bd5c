"""Parity of the pre-CVPR (feature-backbone) CAT-Seg with mmsegmentation's port (``projects/CAT-Seg``).

`tests/fixtures/golden/catseg_mmseg/` holds a tiny port model with random weights (R50-shaped ResNet with
16/8 stem/base channels, 3-block CLIP) and the port's outputs of four cases; see its README (section 5
for the tolerances used here). Every case runs on a freshly built model loaded through the
"catseg_mmseg" converter. The port's text features (fp16 CLIP) are injected, as the README advises;
our fp32 text features are compared with the fp32 reference separately.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ovseg_d2.checkpoint import convert_checkpoint
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import Vocabulary
from ovseg_d2.modeling.text_classifiers import TextClassifier
from ovseg_d2.projects.catseg import CATSeg, build_feature_resnet
from ovseg_d2.projects.catseg.converter_feature_backbone import map_mmseg_key

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "catseg_mmseg"

ATOL = 1e-4  # logits, seg_logits, class means, flat samples (README section 5)
TEXT_ATOL = 1e-5


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(GOLDEN / "cases.pt", weights_only=True)


@pytest.fixture(scope="module")
def port_state() -> dict:
    return torch.load(GOLDEN / "mmseg_port_tiny.pth", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def converted() -> dict:
    return convert_checkpoint("catseg_mmseg", GOLDEN / "mmseg_port_tiny.pth")


class FixedText(TextClassifier):
    """The port's precomputed (fp16-path) text features, (N, 80, E)."""

    def __init__(self, table: torch.Tensor):
        self.table = table

    def __call__(self, vocabulary: Vocabulary) -> torch.Tensor:
        return self.table


class InjectedDropout(nn.Module):
    """Dropout2d with the port's stored channel mask (rows b*N + n)."""

    def __init__(self, keep: torch.Tensor, p: float = 0.1):
        super().__init__()
        self.register_buffer("keep", keep[:, :, None, None].float())
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.keep / (1 - self.p)


def build_port_model(
    converted: dict, names, pooling, *, port_bugs: bool = True, text: torch.Tensor | None = None
) -> CATSeg:
    """The tiny port configuration: mmseg test pipeline (slide 384/384, logits averaged)."""
    model = CATSeg(
        train_class_names=names,
        test_class_names=names,
        clip_model="tiny-vit-p16-w64-l3",
        clip_resolution=(384, 384),
        templates="imagenet80",
        text_recipe=dict(synonyms="mean", template_reduce="normalize_then_mean"),
        last_block_residual="token",
        clip_finetune="visual_attention",
        feature_backbone=build_feature_resnet(50, stem_channels=16, base_channels=8, norm="BN"),
        loss="cross_entropy",
        score_activation="none",
        train_pooling_size=pooling,
        test_pooling_size=pooling,
        inference=InferencePolicy(window=384, stride=384, batch_size=1),  # mmseg: one crop per forward
        aggregator=dict(
            pad_len=0,
            port_guidance_tiling=port_bugs,
            port_class_mlp_identity=port_bugs,
            decoder_dropout=0.1 if port_bugs else 0.0,
        ),
    )
    model.load_state_dict(converted, strict=True)
    if text is not None:
        model.text_classifier = FixedText(text)
    return model


class Capture:
    def __init__(self, model: CATSeg):
        self.data: dict[str, list] = {}
        self.handles = [
            model.aggregator.register_forward_hook(self._hook("logits")),
            model.clip_image.register_forward_hook(self._hook("visual")),
            model.feature_backbone.register_forward_hook(self._hook("backbone")),
            model.aggregator.decoder.register_forward_hook(self._hook_in("neck")),
        ]

    def _hook(self, name):
        def hook(_m, _args, output):
            self.data.setdefault(name, []).append(output)

        return hook

    def _hook_in(self, name):
        def hook(_m, args, _output):
            self.data.setdefault(name, []).append(args[0])

        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def close_mean(actual_sum: torch.Tensor, expected_sum: torch.Tensor, numel: int, atol: float = ATOL) -> None:
    torch.testing.assert_close(actual_sum.double() / numel, expected_sum.double() / numel, atol=atol, rtol=0)


def check_flat(actual: torch.Tensor, ref: dict) -> None:
    assert list(actual.shape) == list(ref["shape"])
    flat = actual.detach().reshape(-1)
    torch.testing.assert_close(flat[:: ref["stride"]][:2048], ref["sample"], atol=ATOL, rtol=0)
    n = flat.numel()
    close_mean(flat.double().sum(), torch.tensor(ref["sum"], dtype=torch.float64), n)
    close_mean(flat.double().abs().sum(), torch.tensor(ref["abs_sum"], dtype=torch.float64), n)


def check_seg_logits(seg: torch.Tensor, case: dict) -> None:
    """The final (C, H, W) seg logits of an evaluation case and their argmax against the port's:
    sub-sampled values, per-class sums, and the predicted pixels per class."""
    s = case["seg_logits_sub_stride"]
    torch.testing.assert_close(seg[:, ::s, ::s], case["seg_logits_sub"], atol=ATOL, rtol=0)
    close_mean(seg.double().sum((1, 2)), case["seg_logits_class_sum"], seg[0].numel())
    pred = seg.argmax(0)
    s = case["pred_sub_stride"]
    assert torch.equal(pred[::s, ::s].to(torch.uint8), case["pred_sub"])
    assert torch.equal(torch.bincount(pred.flatten(), minlength=7), case["pred_class_count"])


def run_eval(model: CATSeg, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    with torch.no_grad():
        return model([{"image": image, "height": height, "width": width}])[0]["sem_seg"]


def test_converter_maps_every_key(port_state, converted):
    dropped = sorted(k for k in port_state if map_mmseg_key(k) is None)
    assert dropped == ["backbone.clip_model.logit_scale"] + [
        f"neck.layers.{i}.spatial_agg.block_{b}.attn.w_msa.relative_position_index" for i in (0, 1) for b in (1, 2)
    ]
    n_in_proj = sum(k.endswith("in_proj_weight") for k in port_state)
    n_qk = sum(k.endswith(("w_msa.qk.weight", "w_msa.qk.bias")) for k in port_state)
    assert len(converted) == len(port_state) - len(dropped) + 2 * n_in_proj + n_qk
    qk = port_state["neck.layers.1.spatial_agg.block_2.attn.w_msa.qk.weight"]
    assert torch.equal(converted["aggregator.layers.1.spatial.blocks.1.attn.q.weight"], qk[:128])
    assert torch.equal(converted["aggregator.layers.1.spatial.blocks.1.attn.k.weight"], qk[128:])
    emb = port_state["backbone.clip_model.token_embedding.weight"]
    assert emb.dtype == torch.float16 and torch.equal(converted["clip_text.token_embedding.weight"], emb.float())


def test_text_features_fp32(cases, converted):
    case = cases["a"]
    model = build_port_model(converted, case["class_names"], case["pooling_size"]).eval()
    assert list(model.templates) == case["prompt_templates"]
    text = model.text_embeddings(case["class_names"])
    torch.testing.assert_close(text, case["text_features_fp32"], atol=TEXT_ATOL, rtol=0)
    # computed once per vocabulary: a second call is served from the cache
    calls = model.text_classifier.encode_calls
    model.text_embeddings(case["class_names"])
    assert model.text_classifier.encode_calls == calls


def test_case_a_single_image(cases, converted):
    case, images = cases["a"], cases["inputs"]["images"]
    model = build_port_model(
        converted, case["class_names"], case["pooling_size"], text=case["text_features_test"]
    ).eval()
    cap = Capture(model)
    seg = run_eval(model, images[0], *case["ori_shape"])
    cap.remove()

    logits = cap.data["logits"][0][0]
    s = case["logits_sub_stride"]
    torch.testing.assert_close(logits[:, ::s, ::s], case["logits_sub"], atol=ATOL, rtol=0)
    close_mean(logits.double().sum((1, 2)), case["logits_class_sum"], logits[0].numel())
    check_seg_logits(seg, case)

    visual = cap.data["visual"][0]
    check_flat(visual.tokens, case["clip_visual_out"])
    check_flat(visual.dense()[0], case["clip_img_feat"])
    feats = cap.data["backbone"][0]
    for name in ("res2", "res3", "res4"):
        check_flat(feats[name], case[name])
    neck = cap.data["neck"][0]  # (B, N, H, W, C) -> the port's (B, C, N, H, W)
    check_flat(neck.permute(0, 4, 1, 2, 3), case["corr_embed"])


def test_case_b_slide_inference(cases, converted):
    case, images = cases["b"], cases["inputs"]["images"]
    im0, im1 = images[0], images[1]
    mosaic = torch.cat([torch.cat([im0, im1], 2), torch.cat([im1, im0], 2)], 1)[:, :416, :512]
    text = cases["a"]["text_features_test"]  # same names as case a
    model = build_port_model(converted, case["class_names"], case["pooling_size"], text=text).eval()
    cap = Capture(model)
    seg = run_eval(model, mosaic, *case["ori_shape"])
    cap.remove()

    crops = torch.cat(cap.data["logits"])  # the 4 crops, one forward each, in the port's order
    assert list(crops.shape) == case["crop_logits_shape"]
    s = case["crop_logits_sub_stride"]
    torch.testing.assert_close(crops[:, :, ::s, ::s], case["crop_logits_sub"], atol=ATOL, rtol=0)
    close_mean(crops.double().sum((2, 3)), case["crop_logits_class_sum"], crops[0, 0].numel())
    assert list(seg.shape) == case["seg_logits_shape"]
    check_seg_logits(seg, case)


def _port_grad(params: dict, port_name: str) -> torch.Tensor | None:
    """Our gradient of a port parameter, in the port's shape (fused q/k/v and qk re-concatenated)."""
    new = map_mmseg_key(port_name)
    if new.endswith(".in_proj_weight"):
        parts = [params[new[: -len("in_proj_weight")] + f"{p}_proj_weight"].grad for p in "qkv"]
    elif ".attn.w_msa.qk." in new:
        base, leaf = new.rsplit(".attn.w_msa.qk.", 1)
        parts = [params[f"{base}.attn.{p}.{leaf}"].grad for p in "qk"]
    else:
        return params[new].grad
    return torch.cat([p if p is not None else torch.zeros(0) for p in parts])


def test_case_c_train_step(cases, converted):
    case, inputs = cases["c"], cases["inputs"]
    model = build_port_model(
        converted, case["class_names"], case["pooling_size"], text=cases["a"]["text_features_test"]
    ).train()
    model.aggregator.decoder.dropout = InjectedDropout(case["dropout_keep"])
    cap = Capture(model)
    batch = [{"image": inputs["images"][i], "sem_seg": inputs["gt"][i].long()} for i in range(2)]
    loss = model(batch)["loss_sem_seg"]
    cap.remove()
    torch.testing.assert_close(loss, torch.tensor(case["loss"]), rtol=1e-5, atol=0)

    logits = cap.data["logits"][0].detach()
    s = case["logits_sub_stride"]
    torch.testing.assert_close(logits[:, :, ::s, ::s], case["logits_sub"], atol=ATOL, rtol=0)
    close_mean(logits.double().sum((2, 3)), case["logits_class_sum"], logits[0, 0].numel())

    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    expected = set()
    for port_name in case["trainable"]:
        new = map_mmseg_key(port_name)
        if new.endswith(".in_proj_weight"):
            expected |= {new[: -len("in_proj_weight")] + f"{p}_proj_weight" for p in "qkv"}
        elif ".attn.w_msa.qk." in new:
            base, leaf = new.rsplit(".attn.w_msa.qk.", 1)
            expected |= {f"{base}.attn.q.{leaf}", f"{base}.attn.k.{leaf}"}
        else:
            expected.add(new)
    assert trainable == expected

    loss.backward()
    for port_name, norm in case["grad_norms"].items():
        grad = _port_grad(params, port_name)
        ours = grad.norm().item() if grad is not None else 0.0
        if norm > 1e-5:
            assert ours == pytest.approx(norm, rel=1e-3), port_name
        else:
            assert ours == pytest.approx(norm, abs=1e-6), port_name
    for port_name, expected_grad in case["grads"].items():
        grad = _port_grad(params, port_name)
        torch.testing.assert_close(
            grad.reshape(expected_grad.shape),
            expected_grad,
            rtol=1e-3,
            atol=1e-6,
            msg=lambda m, n=port_name: f"{n}: {m}",
        )


def _batch_logits(model: CATSeg, images: torch.Tensor, names) -> torch.Tensor:
    with torch.no_grad():
        return model.predict_logits(images.float(), names)


def test_case_d_batch2_port_bugs_on(cases, converted):
    """With the port's switches on, a batch of 2 reproduces the port's (wrong) batch-2 output."""
    case, images = cases["d"], cases["inputs"]["images"]
    model = build_port_model(
        converted, case["class_names"], case["pooling_size"], text=cases["a"]["text_features_test"]
    ).eval()
    logits = _batch_logits(model, images, case["class_names"])
    s = case["logits_sub_stride"]
    torch.testing.assert_close(logits[:, :, ::s, ::s], case["logits_sub"], atol=ATOL, rtol=0)
    close_mean(logits.double().sum((2, 3)), case["logits_class_sum"], logits[0, 0].numel())
    alone = _batch_logits(model, images[1:], case["class_names"])[0]
    torch.testing.assert_close(alone[:, ::s, ::s], case["logits_img1_alone_sub"], atol=ATOL, rtol=0)
    # the bug is visible: image 1 in the batch differs from image 1 alone
    assert (logits[1] - alone).abs().max() > 0.1


def test_batch2_default_equals_single_images(cases, converted):
    """Default (correct) guidance tiling: a batch of 2 equals the two single-image runs; with only the
    tiling switch on (the other two switches equal in both runs) it does not."""
    case, images = cases["d"], cases["inputs"]["images"]
    names, pooling, text = case["class_names"], case["pooling_size"], cases["a"]["text_features_test"]
    model = build_port_model(converted, names, pooling, port_bugs=False, text=text).eval()
    batch = _batch_logits(model, images, names)
    singles = torch.cat([_batch_logits(model, images[i : i + 1], names) for i in range(2)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)

    model.aggregator.port_guidance_tiling = True
    for layer in model.aggregator.layers:
        layer.classes.port_guidance_tiling = True
    buggy = _batch_logits(model, images, names)
    assert (buggy - singles).abs().max() > 0.1


def test_port_class_mlp_switch_changes_single_image_output(cases, converted):
    """The class-MLP identity switch is what a single image needs to match the port (case a)."""
    case, images = cases["a"], cases["inputs"]["images"]
    model = build_port_model(
        converted, case["class_names"], case["pooling_size"], port_bugs=False, text=case["text_features_test"]
    ).eval()
    logits = _batch_logits(model, images[:1], case["class_names"])[0]
    s = case["logits_sub_stride"]
    assert (logits[:, ::s, ::s] - case["logits_sub"]).abs().max() > 1e-2
