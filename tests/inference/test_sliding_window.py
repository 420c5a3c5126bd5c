"""Sliding-window inference: grid, analytically known merges, and CAT-Seg's unfold/fold procedure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg_d2.inference import resize_to_original, sliding_window_inference, window_positions


class CountingPredict:
    """Wraps a predict function and records the batch sizes it was called with."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[int] = []

    def __call__(self, views: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(views))
        return self.fn(views)


@pytest.mark.parametrize(
    "size, window, stride, expected",
    [
        ((640, 640), 384, 256, [(0, 0), (0, 256), (256, 0), (256, 256)]),
        ((384, 384), 384, 256, [(0, 0)]),
        ((385, 384), 384, 256, [(0, 0), (1, 0)]),
        ((512, 1000), 512, 341, [(0, 0), (0, 341), (0, 488)]),
        ((300, 500), 384, 256, [(0, 0), (0, 116)]),  # smaller than the window along y
        ((100, 100), 384, 384, [(0, 0)]),
        ((640, 700), (384, 400), (256, 300), [(0, 0), (0, 300), (256, 0), (256, 300)]),
    ],
)
def test_window_positions(size, window, stride, expected):
    assert window_positions(*size, window, stride) == expected


def test_identity_predict_returns_image():
    image = torch.rand(3, 50, 70)
    predict = CountingPredict(lambda v: v)
    out = sliding_window_inference(predict, image, 32, 20)
    torch.testing.assert_close(out, image)
    assert predict.calls == [len(window_positions(50, 70, 32, 20))]


def test_overlap_counts():
    """View k predicts the constant k + 1: each pixel gets the mean over the windows covering it."""
    h, w, win, stride = 40, 60, 24, 16
    positions = window_positions(h, w, win, stride)

    def predict(views):
        values = torch.arange(1, len(views) + 1, dtype=torch.float32)
        return values.view(-1, 1, 1, 1).expand(-1, 2, win, win).clone()

    out = sliding_window_inference(predict, torch.zeros(1, 3, h, w), win, stride)
    total, count = torch.zeros(h, w), torch.zeros(h, w)
    for k, (y, x) in enumerate(positions):
        total[y : y + win, x : x + win] += k + 1
        count[y : y + win, x : x + win] += 1
    assert out.shape == (2, h, w)
    torch.testing.assert_close(out[0], total / count)
    torch.testing.assert_close(out[1], total / count)


def test_global_view_blend_and_output_size():
    """Image = its column index x (a ramp, 48x96). The two 48x48 crops predict 0; the global view
    predicts itself. The global view (96 -> 48 columns, bilinear, align_corners False) samples
    source columns 2j + 0.5, a ramp again; upsampled back (48 -> 96: source x/2 - 0.25, clamped to
    [0, 47]) it is x for 1 <= x <= 94, 0.5 at x = 0 and 94.5 at x = 95. Blended with the crops'
    zeros at weight 0.5: x / 2, 0.25 and 47.25."""
    image = torch.arange(96.0).expand(3, 48, 96)
    win = 48

    def predict(views):
        out = torch.zeros(len(views), 3, win, win)
        out[-1] = views[-1]
        return out

    out = sliding_window_inference(predict, image, win, 48, global_view=True)
    expected_row = torch.cat([torch.tensor([0.25]), torch.arange(1.0, 95.0) / 2, torch.tensor([47.25])])
    torch.testing.assert_close(out, expected_row.expand(3, 48, 96))
    # output_size 48x192 (source x/2 - 0.25): column 100 -> 49.75 -> 24.875; column 0 -> 0.25
    resized = sliding_window_inference(predict, image, win, 48, global_view=True, output_size=(48, 192))
    assert resized.shape == (3, 48, 192)
    torch.testing.assert_close(resized[:, :, [0, 100]], torch.tensor([0.25, 24.875]).expand(3, 48, 2))


def test_image_smaller_than_window_uses_whole_image():
    image = torch.rand(3, 20, 30)
    predict = CountingPredict(lambda v: v)
    out = sliding_window_inference(predict, image, 64, 32, global_view=True)
    torch.testing.assert_close(out, image)  # crop = image, global view = image (resized to itself)
    assert predict.calls == [2]


def test_batch_size_chunks_views():
    predict = CountingPredict(lambda v: v[:, :1])
    sliding_window_inference(
        predict, torch.rand(3, 640, 640), 384, 256, global_view=True, batch_size=2
    )
    assert predict.calls == [2, 2, 1]


def catseg_reference(model, image, out_res=640, kernel=384, overlap=1 / 3):
    """CAT-Seg's `inference_sliding_window` restated: squash, F.unfold crops, global view, F.fold."""
    stride = int(kernel * (1 - overlap))
    squashed = F.interpolate(image, size=out_res, mode="bilinear", align_corners=False)
    crops = F.unfold(squashed, kernel_size=kernel, stride=stride)  # (1, 3*k*k, L)
    crops = crops.permute(0, 2, 1).reshape(-1, 3, kernel, kernel)
    global_view = F.interpolate(image, size=kernel, mode="bilinear", align_corners=False)
    outputs = model(torch.cat([crops, global_view]))
    n_classes = outputs.shape[1]
    local, glob = outputs[:-1], outputs[-1:]
    local = local.reshape(1, -1, n_classes * kernel * kernel).permute(0, 2, 1)
    folded = F.fold(local, output_size=out_res, kernel_size=kernel, stride=stride)
    ones = F.fold(torch.ones_like(local), output_size=out_res, kernel_size=kernel, stride=stride)
    local = folded / ones
    glob = F.interpolate(glob, size=out_res, mode="bilinear", align_corners=False)
    return ((local + glob) / 2)[0]


def test_matches_catseg_unfold_fold_procedure():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, kernel_size=3, padding=1)
    model = CountingPredict(lambda v: torch.sigmoid(conv(v)))
    image = torch.rand(1, 3, 480, 720) * 255
    with torch.no_grad():
        expected = catseg_reference(model, image)
        out = sliding_window_inference(
            model, image, 384, 256, global_view=True, resize_to=(640, 640)
        )
    assert model.calls == [5, 5]  # reference, then ours: one batched call each
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


def test_resize_to_original_crops_padding():
    scores = torch.zeros(2, 40, 40)
    scores[:, :30, :20] = 1.0  # valid region; the rest is padding
    out = resize_to_original(scores, (60, 40), valid_size=(30, 20))
    assert out.shape == (2, 60, 40)
    torch.testing.assert_close(out, torch.ones(2, 60, 40))
    assert resize_to_original(scores[None], (10, 10)).shape == (1, 2, 10, 10)


def test_bad_predict_shape_is_reported():
    with pytest.raises(ValueError, match="view resolution"):
        sliding_window_inference(lambda v: v[:, :, ::2, ::2], torch.rand(3, 64, 64), 32, 32)
