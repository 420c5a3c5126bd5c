"""Sliding-window inference with an optional global view: the one implementation all methods share.

CAT-Seg's protocol is `sliding_window_inference(predict, image, 384, 256, global_view=True,
resize_to=(640, 640), output_size=(height, width))`: squash to 640x640, 4 crops of 384 at stride 256
plus the whole image resized to 384, all in one batch, crop scores averaged by overlap count, then
(local + global) / 2 and a bilinear resize to the original size. mmseg's `slide` mode is the same
without `resize_to` and `global_view`.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Size = tuple[int, int]
PredictFn = Callable[[torch.Tensor], torch.Tensor]


def _pair(value: int | Sequence[int]) -> Size:
    if isinstance(value, int):
        return value, value
    h, w = value
    return int(h), int(w)


def _grid(size: int, window: int, stride: int) -> list[int]:
    """mmseg's grid along one axis; the last window is clamped to the border (so it may overlap
    more than `stride` allows) and a window larger than the axis starts at 0."""
    n = max(size - window + stride - 1, 0) // stride + 1
    return [max(min(i * stride, size - window), 0) for i in range(n)]


def window_positions(
    height: int, width: int, window: int | Sequence[int], stride: int | Sequence[int]
) -> list[Size]:
    """Top-left corners (y, x) of the windows in row-major order.

    For 640x640 with window 384 and stride 256: (0,0), (0,256), (256,0), (256,256), the order of
    CAT-Seg's `F.unfold`. Duplicates are possible for tiny images and are kept, as in mmseg.
    """
    (win_h, win_w), (stride_h, stride_w) = _pair(window), _pair(stride)
    if min(win_h, win_w, stride_h, stride_w) <= 0:
        raise ValueError(f"window {window} and stride {stride} must be positive")
    ys = _grid(height, win_h, stride_h)
    xs = _grid(width, win_w, stride_w)
    return [(y, x) for y in ys for x in xs]


def resize_to_original(
    scores: torch.Tensor, size: Sequence[int], *, valid_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Bilinearly resize (C, h, w) or (B, C, h, w) scores to `size` (align_corners=False).

    `valid_size` first crops away padding added for size divisibility (the role of Detectron2's
    `sem_seg_postprocess`), so that every method maps scores back to the input the same way.
    """
    squeeze = scores.dim() == 3
    if squeeze:
        scores = scores[None]
    if valid_size is not None:
        scores = scores[..., : valid_size[0], : valid_size[1]]
    out_h, out_w = _pair(tuple(size))
    if scores.shape[-2:] != (out_h, out_w):
        scores = F.interpolate(scores, size=(out_h, out_w), mode="bilinear", align_corners=False)
    return scores[0] if squeeze else scores


def _run_batched(predict: PredictFn, views: torch.Tensor, batch_size: int | None) -> torch.Tensor:
    chunk = batch_size or len(views)
    outputs = [predict(views[i : i + chunk]) for i in range(0, len(views), chunk)]
    scores = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # full-resolution scores: copy only to join
    if scores.dim() != 4 or scores.shape[0] != len(views) or scores.shape[-2:] != views.shape[-2:]:
        raise ValueError(
            f"predict must map views {tuple(views.shape)} to (n, C, h, w) at the view resolution, "
            f"got {tuple(scores.shape)}"
        )
    return scores


def sliding_window_inference(
    predict: PredictFn,
    image: torch.Tensor,
    window: int | Sequence[int],
    stride: int | Sequence[int],
    *,
    global_view: bool = False,
    global_weight: float = 0.5,
    resize_to: Sequence[int] | None = None,
    batch_size: int | None = None,
    output_size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Merge per-window scores into one (C, H, W) map.

    Args:
        predict: maps views (n, 3, h, w) to scores (n, C, h, w) at the view resolution. Averaging
            happens on whatever it returns, so return probabilities to average in probability
            space (CAT-Seg: sigmoid before merging).
        image: (3, H, W) or (1, 3, H, W), on the device the model runs on.
        window, stride: int or (h, w). A window larger than the (resized) image is shrunk to the
            image along that axis (mmseg's behaviour) instead of padding, so no view contains
            padding the model never saw in training; all crops still share one size and batch.
        global_view: add the ORIGINAL image (before `resize_to`) resized to the crop size as one
            more view; its scores are upsampled to the canvas and blended as
            `(1 - global_weight) * local + global_weight * global` (0.5 = CAT-Seg's mean).
        resize_to: (H', W') to resize the image to first (CAT-Seg squashes to 640x640).
        batch_size: run the views in chunks of this size; default all views in one call.
        output_size: (H, W) to resize the merged scores to (typically the original image size).

    Returns:
        (C, H', W') scores, or (C, *output_size).
    """
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected one image, got a batch of {image.shape[0]}")
        image = image[0]
    if not image.is_floating_point():
        image = image.float()
    original = image[None]
    canvas_img = original
    if resize_to is not None:
        canvas_img = F.interpolate(
            original, size=_pair(tuple(resize_to)), mode="bilinear", align_corners=False
        )
    height, width = canvas_img.shape[-2:]
    win_h, win_w = _pair(window)
    crop_h, crop_w = min(win_h, height), min(win_w, width)
    positions = window_positions(height, width, (crop_h, crop_w), stride)

    views = [canvas_img[0, :, y : y + crop_h, x : x + crop_w] for y, x in positions]
    if global_view:
        views.append(
            F.interpolate(original, size=(crop_h, crop_w), mode="bilinear", align_corners=False)[0]
        )
    scores = _run_batched(predict, torch.stack(views), batch_size)

    canvas = scores.new_zeros((scores.shape[1], height, width))
    count = scores.new_zeros((1, height, width))
    for (y, x), crop_scores in zip(positions, scores):
        canvas[:, y : y + crop_h, x : x + crop_w] += crop_scores
        count[:, y : y + crop_h, x : x + crop_w] += 1
    merged = canvas.div_(count)
    if global_view:
        global_scores = resize_to_original(scores[-1], (height, width))
        merged = (1 - global_weight) * merged + global_weight * global_scores
    if output_size is not None:
        merged = resize_to_original(merged, output_size)
    return merged
