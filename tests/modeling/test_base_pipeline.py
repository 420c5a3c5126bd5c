"""The base meta-architecture's test pipeline (`InferencePolicy`) with a probe method whose
per-view scores are known, so every expected value is written by hand."""

from __future__ import annotations

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate

from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import OpenVocabSegmentor, Vocabulary


class Probe(OpenVocabSegmentor):
    """predict_views: channel k of view i is `fill(view, k)`; records every call's view shape."""

    def __init__(self, names=("cat", "dog"), fill=None, **kw):
        super().__init__(pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, train_class_names=list(names), **kw)
        self.fill = fill or (lambda views, k: views[:, 0].mean(dim=(1, 2)) + k)
        self.calls: list[tuple[tuple[int, ...], tuple[str, ...]]] = []

    def predict_views(self, views, vocabulary):
        self.calls.append((tuple(views.shape), vocabulary.entries))
        b, _, h, w = views.shape
        values = torch.stack([self.fill(views, k) for k in range(len(vocabulary))], dim=1)  # (B, N)
        return values[:, :, None, None].expand(b, -1, h, w)


def record(image, **extra):
    return {"image": image, **extra}


def test_whole_image_resized_to_the_record_size():
    model = Probe().eval()
    image = torch.full((3, 6, 10), 7, dtype=torch.uint8)  # uint8 as mappers deliver it
    out = model([record(image, height=12, width=20)])[0]["sem_seg"]
    assert model.calls == [((1, 3, 6, 10), ("cat", "dog"))]
    assert out.dtype == torch.float32 and out.shape == (2, 12, 20)
    assert torch.all(out[0] == 7) and torch.all(out[1] == 8)


def test_low_resolution_whole_image_scores_are_resized_once():
    """A whole-image view may return coarse scores: (2x2) -> bilinear (align_corners False) to 2x4."""

    class Coarse(Probe):
        def predict_views(self, views, vocabulary):
            return torch.tensor([[[[0.0, 4.0], [0.0, 4.0]]]])

    out = Coarse(names=("cat",)).eval()([record(torch.zeros(3, 8, 8), height=2, width=4)])[0]["sem_seg"]
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 1.0, 3.0, 4.0]] * 2))


@pytest.mark.parametrize(
    "policy, image_hw, view_hw",
    [
        (InferencePolicy(resize="squash", size=(16, 24)), (30, 50), (16, 24)),
        (InferencePolicy(resize="none"), (30, 50), (30, 50)),
    ],
)
def test_resize_policies(policy, image_hw, view_hw):
    model = Probe(inference=policy).eval()
    out = model([record(torch.full((3, *image_hw), 5.0), height=9, width=11)])[0]["sem_seg"]
    assert model.calls[0][0] == (1, 3, *view_hw)
    assert out.shape == (2, 9, 11)
    torch.testing.assert_close(out[0], torch.full((9, 11), 5.0))


def test_sliding_windows_global_view_weight_and_batch():
    """8x12 image, red channel 0 in columns 0-3 and 90 in 4-11; each view scores its red mean.
    Windows 8x8 at x = 0 and 4 score 45 and 90. The global view (image resized to 8x8, bilinear:
    source columns 1.5j + 0.25 -> 0, 0, 22.5, 90, 90, 90, 90, 90) scores 472.5 / 8 = 59.0625.
    Merged with weight 0.25: 0.75 * local + 14.765625."""
    policy = InferencePolicy(window=8, stride=4, global_view=True, global_weight=0.25, batch_size=2)
    model = Probe(names=("cat",), inference=policy).eval()
    image = torch.zeros(3, 8, 12)
    image[0, :, 4:] = 90
    out = model([record(image)])[0]["sem_seg"][0]
    assert [c[0][0] for c in model.calls] == [2, 1]  # 3 views in chunks of 2
    expected_row = torch.tensor([48.515625] * 4 + [65.390625] * 4 + [82.265625] * 4)
    torch.testing.assert_close(out, expected_row.expand(8, 12))


def voc_like() -> Vocabulary:
    names = ("background", "cat", "dog")
    return Vocabulary(names, names, (0, 1, 2), background_class=0, source="voc-like")


class LeftRight(Probe):
    """background / cat / dog score 0.9 / 0.3 / 0.6 on the left half, 0.9 / 0.2 / 0.1 on the right."""

    def predict_views(self, views, vocabulary):
        scores = torch.empty(1, 3, 2, 4)
        scores[..., :2] = torch.tensor([0.9, 0.3, 0.6])[:, None, None]
        scores[..., 2:] = torch.tensor([0.9, 0.2, 0.1])[:, None, None]
        return scores


@pytest.mark.parametrize(
    "threshold, dataset, right_half",
    [(0.4, None, 0), ({"voc": 0.5, "ctx": 0.15}, "ctx", 1), ({"voc": 0.5, "ctx": 0.15}, "voc", 0)],
)
def test_background_by_threshold(threshold, dataset, right_half):
    model = LeftRight(inference=InferencePolicy(background_threshold=threshold)).eval()
    model.set_vocabulary(voc_like())
    model.test_dataset = dataset
    out = model([record(torch.zeros(3, 2, 4))])[0]["sem_seg"]
    value = threshold if dataset is None else threshold[dataset]
    assert torch.all(out[0] == value)  # the background channel is the constant threshold
    labels = out.argmax(0)
    assert torch.all(labels[:, :2] == 2) and torch.all(labels[:, 2:] == right_half)


def test_background_threshold_errors_and_no_background_class():
    model = LeftRight(inference=InferencePolicy(background_threshold={"voc": 0.5})).eval()
    model.set_vocabulary(voc_like())
    model.test_dataset = "ade"
    with pytest.raises(KeyError, match="no entry for test dataset 'ade'"):
        model([record(torch.zeros(3, 2, 4))])
    model.set_vocabulary(Vocabulary.from_entries(["sky", "cat", "dog"]))  # no background: scores untouched
    out = model([record(torch.zeros(3, 2, 4))])[0]["sem_seg"]
    assert torch.all(out[0] == 0.9)


def test_record_vocabulary_scores_an_episode_class():
    """A few-shot record carries its class: binary others / class vocabulary per record (SAZS)."""
    classes = ["aeroplane", "bicycle", "bird"]

    class Episodes(Probe):
        def record_vocabulary(self, record):
            name = classes[record["class_id"]]
            return Vocabulary(("others", name), ("background", name), (0, 1), 0, source="episode")

    model = Episodes(names=classes, fill=lambda views, k: torch.full((len(views),), float(k))).eval()
    outs = model([record(torch.zeros(3, 4, 4), class_id=2), record(torch.zeros(3, 4, 4), class_id=0)])
    assert [c[1] for c in model.calls] == [("others", "bird"), ("others", "aeroplane")]
    assert [tuple(o["sem_seg"].shape) for o in outs] == [(2, 4, 4), (2, 4, 4)]


def test_predict_image_accepts_entries_and_default_size():
    model = Probe().eval()
    out = model.predict_image(torch.full((3, 5, 7), 2.0), ["sky", "sea", "sand"])
    assert out.shape == (3, 5, 7) and torch.all(out[2] == 4)


def test_bad_view_scores_are_reported():
    class Flat(Probe):
        def predict_views(self, views, vocabulary):
            return torch.zeros(2, 4, 4)

    with pytest.raises(ValueError, match=r"to \(1, C, h, w\) scores"):
        Flat().eval()([record(torch.zeros(3, 4, 4))])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(resize="squash"), "size is needed iff resizing"),
        (dict(size=(4, 4)), "size is needed iff resizing"),
        (dict(resize="crop", size=(4, 4)), "must be one of"),
        (dict(window=8), "go together"),
        (dict(global_view=True), "needs sliding windows"),
        (dict(window=8, stride=4, global_view=True, global_weight=1.5), r"in \[0, 1\]"),
        (dict(window=(8, 8, 8), stride=4), r"int or \(h, w\)"),
    ],
)
def test_policy_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        InferencePolicy(**kwargs)


def test_policy_from_lazy_config():
    policy = instantiate(
        L(InferencePolicy)(resize="squash", size=[640, 640], window=[384, 384], stride=256, background_threshold={"voc": 0.95})
    )
    assert (policy.size, policy.window, policy.stride) == ((640, 640), (384, 384), 256)
    assert policy.threshold_for("voc") == 0.95 and isinstance(policy.background_threshold, dict)
