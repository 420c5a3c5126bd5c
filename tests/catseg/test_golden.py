"""Parity with the official CAT-Seg code (cvlab-kaist/CAT-Seg @ 6d3a188) on the golden fixtures.

`tests/fixtures/golden/catseg/` holds a tiny official model with random weights (`official_tiny.pth`)
and the official outputs of four cases (`cases.pt`); see its README for how they were produced and
for the tolerances used here (section 4). Every case runs on a freshly built model loaded through
the "catseg" converter, so no cached text embedding is carried from one case to the next.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import convert_checkpoint
from ovseg_d2.projects.catseg import CATSeg, map_official_key
from ovseg_d2.projects.catseg.aggregator import class_scores, cosine_cost_volume

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "catseg"

LOGIT_ATOL = 1e-4
PROB_ATOL = 3e-5
TEXT_ATOL = 1e-5
SAMPLE_ATOL = 1e-4


@pytest.fixture(scope="module")
def cases() -> dict:
    return torch.load(GOLDEN / "cases.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_state() -> dict:
    return torch.load(GOLDEN / "official_tiny.pth", weights_only=True)


@pytest.fixture(scope="module")
def converted(official_state) -> dict:
    return convert_checkpoint("catseg", official_state)


def build(converted: dict, case: dict, *, sliding: bool) -> CATSeg:
    pooling = tuple(case["pooling_sizes"])
    model = CATSeg(
        train_class_names=case["class_names"],
        test_class_names=case["class_names"],
        clip_model="tiny-vit-p16-w64",
        sliding_window=sliding,
        train_pooling_size=pooling,
        test_pooling_size=pooling,
    )
    model.load_state_dict(converted, strict=True)
    return model


class Capture:
    """Forward hooks recording the inputs/outputs of the modules of interest."""

    def __init__(self, model: CATSeg):
        self.data: dict[str, object] = {}
        self.handles = [
            model.aggregator.register_forward_hook(self._hook_agg, with_kwargs=True),
            model.clip_image.register_forward_hook(self._hook("visual")),
            model.tap_upsample[0].register_forward_hook(self._hook("res4")),
            model.tap_upsample[1].register_forward_hook(self._hook("res5")),
        ]

    def _hook(self, name):
        def hook(_module, _args, output):
            self.data[name] = output

        return hook

    def _hook_agg(self, _module, args, _kwargs, output):
        self.data["agg_args"] = args
        self.data["logits"] = output

    def remove(self):
        for h in self.handles:
            h.remove()


def mean_close(actual_sum: torch.Tensor, expected_sum: torch.Tensor, numel: int, atol: float) -> None:
    torch.testing.assert_close(actual_sum.double() / numel, expected_sum.double() / numel, atol=atol, rtol=0)


def check_flat_sample(actual: torch.Tensor, ref: dict) -> None:
    assert list(actual.shape) == list(ref["shape"])
    flat = actual.reshape(-1)
    sample = flat[:: ref["stride"]][:2048]
    torch.testing.assert_close(sample, ref["sample"], atol=SAMPLE_ATOL, rtol=0)
    n = flat.numel()
    torch.testing.assert_close(
        flat.double().sum() / n, torch.tensor(ref["sum"] / n, dtype=torch.float64), atol=SAMPLE_ATOL, rtol=0
    )
    torch.testing.assert_close(
        flat.double().abs().sum() / n, torch.tensor(ref["abs_sum"] / n, dtype=torch.float64), atol=SAMPLE_ATOL, rtol=0
    )


def test_converter_consumes_every_key(official_state, converted):
    official = official_state["model"]
    dropped = [k for k in official if map_official_key(k) is None]
    assert sorted(dropped) == sorted(
        ["sem_seg_head.predictor.clip_model.logit_scale"]
        + [f"sem_seg_head.predictor.transformer.layers.{i}.swin_block.block_2.attn_mask" for i in range(2)]
    )
    assert len(converted) == len(official) - len(dropped)
    assert all(v.dtype == torch.float32 for v in converted.values())
    emb = converted["clip_text.token_embedding.weight"]
    assert torch.equal(emb, official["sem_seg_head.predictor.clip_model.token_embedding.weight"].float())


def test_case_a_plain_eval(cases, converted):
    case = cases["a"]
    model = build(converted, case, sliding=False).eval()
    prompts = [model.templates[0].format(n.split(", ")[0]) for n in case["class_names"]]
    assert prompts == case["prompts"]
    tokens = model.clip_text.tokenize(prompts)
    assert torch.equal(tokens.to(torch.int32), case["tokens"])

    cap = Capture(model)
    with torch.no_grad():
        out = model([{"image": case["image"], "height": case["height"], "width": case["width"]}])
    cap.remove()
    sem_seg = out[0]["sem_seg"]
    assert list(sem_seg.shape) == case["sem_seg_shape"]

    torch.testing.assert_close(cap.data["logits"][0], case["logits"], atol=LOGIT_ATOL, rtol=0)
    s = case["sem_seg_sub_stride"]
    torch.testing.assert_close(sem_seg[:, ::s, ::s], case["sem_seg_sub"], atol=PROB_ATOL, rtol=0)
    mean_close(sem_seg.double().sum((1, 2)), case["sem_seg_class_sum"], sem_seg[0].numel(), PROB_ATOL)

    text = cap.data["agg_args"][1]  # (N, P, E) as fed to the aggregator
    torch.testing.assert_close(text[:, 0], case["text_embeds"], atol=TEXT_ATOL, rtol=0)
    feats = cap.data["visual"]
    check_flat_sample(feats.dense()[0], case["dense_embed"])
    check_flat_sample(feats.taps[3].transpose(0, 1), case["tap3"])
    check_flat_sample(feats.taps[7].transpose(0, 1), case["tap7"])
    check_flat_sample(cap.data["res4"], case["res4"])
    check_flat_sample(cap.data["res5"], case["res5"])


def test_case_b_sliding_window(cases, converted):
    case = cases["b"]
    model = build(converted, case, sliding=True).eval()
    assert (model.window, model.stride, model.sliding_resize) == (
        case["window"]["kernel"],
        case["window"]["stride"],
        tuple(case["window"]["out_res"]),
    )
    cap = Capture(model)
    with torch.no_grad():
        out = model([{"image": case["image"], "height": case["height"], "width": case["width"]}])
    cap.remove()
    views = cap.data["logits"]  # one batched forward of the 5 views
    assert list(views.shape) == case["view_logits_shape"]
    s = case["view_logits_sub_stride"]
    torch.testing.assert_close(views[:, :, ::s, ::s], case["view_logits_sub"], atol=LOGIT_ATOL, rtol=0)
    mean_close(views.double().sum((2, 3)), case["view_logits_class_sum"], views[0, 0].numel(), LOGIT_ATOL)

    sem_seg = out[0]["sem_seg"]
    assert list(sem_seg.shape) == case["sem_seg_shape"]
    s = case["sem_seg_sub_stride"]
    torch.testing.assert_close(sem_seg[:, ::s, ::s], case["sem_seg_sub"], atol=PROB_ATOL, rtol=0)
    mean_close(sem_seg.double().sum((1, 2)), case["sem_seg_class_sum"], sem_seg[0].numel(), PROB_ATOL)


def test_case_c_top256_selection(cases, converted):
    case = cases["c"]
    model = build(converted, case, sliding=False).eval()
    cap = Capture(model)
    with torch.no_grad():
        out = model([{"image": case["image"], "height": case["height"], "width": case["width"]}])
    cap.remove()
    logits = cap.data["logits"][0]
    assert list(logits.shape) == case["logits_shape"]
    dense, text = cap.data["agg_args"][:2]
    scores = class_scores(cosine_cost_volume(dense, text))[0]
    torch.testing.assert_close(scores, case["class_scores"], atol=TEXT_ATOL, rtol=0)

    filled = (logits == -100.0).all(dim=-1).all(dim=-1)
    assert torch.equal(~filled, case["selected"])
    assert int(case["selected"].sum()) == 256
    s = case["logits_sub_stride"]
    torch.testing.assert_close(logits[:, ::s, ::s], case["logits_sub"], atol=LOGIT_ATOL, rtol=0)
    mean_close(logits.double().sum((1, 2)), case["logits_class_sum"], logits[0].numel(), LOGIT_ATOL)

    sem_seg = out[0]["sem_seg"]
    assert list(sem_seg.shape) == case["sem_seg_shape"]
    mean_close(sem_seg.double().sum((1, 2)), case["sem_seg_class_sum"], sem_seg[0].numel(), PROB_ATOL)
    assert torch.all(sem_seg[~case["selected"]] == 0)


def test_case_d_train_step(cases, converted):
    case = cases["d"]
    model = build(converted, case, sliding=False).train()
    cap = Capture(model)
    losses = model(
        [{"image": case["image"], "sem_seg": case["sem_seg"].long(), "height": case["height"], "width": case["width"]}]
    )
    cap.remove()
    loss = losses["loss_sem_seg"]
    torch.testing.assert_close(loss, torch.tensor(case["loss"]), rtol=1e-5, atol=0)

    logits = cap.data["logits"][0].detach()
    assert list(logits.shape) == case["logits_shape"]
    s = case["logits_sub_stride"]
    torch.testing.assert_close(logits[:, ::s, ::s], case["logits_sub"], atol=LOGIT_ATOL, rtol=0)
    mean_close(logits.double().sum((1, 2)), case["logits_class_sum"], logits[0].numel(), LOGIT_ATOL)

    params = dict(model.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    assert trainable == {map_official_key(n) for n in case["trainable"]}

    loss.backward()
    for official_name, expected in case["grad_norms"].items():
        grad = params[map_official_key(official_name)].grad
        norm = grad.norm().item() if grad is not None else 0.0
        if expected > 1e-5:
            assert norm == pytest.approx(expected, rel=1e-3), official_name
        else:
            assert norm == pytest.approx(expected, abs=1e-7), official_name
    for official_name, expected in case["grads"].items():
        grad = params[map_official_key(official_name)].grad
        torch.testing.assert_close(
            grad.reshape(expected.shape), expected, rtol=1e-3, atol=1e-6, msg=lambda m, n=official_name: f"{n}: {m}"
        )
