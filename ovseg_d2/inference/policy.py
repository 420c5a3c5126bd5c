"""The test-time procedure of a method as one value: resize policy, views, background threshold.

`OpenVocabSegmentor` runs every method's evaluation through `run_inference(predict, image,
policy, output_size)`; a method only supplies `predict` (views -> scores). The settings of the
methods' official procedures:

- CAT-Seg: `InferencePolicy(resize="squash", size=(640, 640), window=384, stride=256, global_view=True)`.
- Cascade-CLIP / TCL / OVSegmentor / the CAT-Seg mmseg port (mmseg `slide`): the mapper applies
  mmseg's keep-ratio `Resize` (`ovseg_d2.data.mappers.MmsegResize`), then
  `InferencePolicy(window=512, stride=426)` (Cascade-CLIP), `window=448, stride=224` (TCL, OVSegmentor,
  with `background_threshold`) or `window=384, stride=384, batch_size=1` (the CAT-Seg port).
- SAZS: `InferencePolicy(resize="squash", size=(512, 512))`, whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .sliding_window import resize_to_original, sliding_window_inference

Size = tuple[int, int]
RESIZE_POLICIES = ("none", "squash")


def _pair_or_none(value: Any, name: str) -> int | Size | None:
    if value is None or isinstance(value, int):
        return value
    pair = tuple(int(v) for v in value)  # LazyConfig gives lists
    if len(pair) != 2:
        raise ValueError(f"InferencePolicy.{name} must be an int or (h, w), got {value!r}")
    return pair


@dataclass(frozen=True)
class InferencePolicy:
    """How an image becomes per-class scores at test time.

    resize: "none" (the mapper already sized the image, e.g. mmseg's keep-ratio `Resize` as
        `ovseg_d2.data.mappers.MmsegResize`, OpenCV on the uint8 image as the official pipelines) or
        "squash" (to `size` = (H, W), aspect ratio not kept, bilinear on the float image inside the
        model: CAT-Seg's sliding window).
    window, stride: sliding windows (int or (h, w)) over the resized image; None = one whole-image view.
    global_view / global_weight: add the un-resized image resized to the window as one more view,
        blended as `(1 - global_weight) * windows + global_weight * global` (CAT-Seg: 0.5).
    batch_size: views per forward (None: all views in one batch).
    background_threshold: a float, or {dataset name: float} (per test dataset, see
        `OpenVocabSegmentor.test_dataset`). When the vocabulary has a background class, its channels
        are the constant threshold: a pixel is background iff every class score is below it (TCL's
        rule; OVSegmentor's per-crop variant overrides `OpenVocabSegmentor.add_background`).
    refine: `refine(images, scores) -> scores`, applied to every view's scores (after the background
        channels are set) with the view resized bilinearly (align_corners=True) to the scores'
        resolution, e.g. `ovseg_d2.inference.pamr.PAMR` (TCL's demo: PAMR at the input resolution;
        PAMR keeps a constant background channel constant).
    """

    resize: str = "none"
    size: Size | None = None
    window: int | Size | None = None
    stride: int | Size | None = None
    global_view: bool = False
    global_weight: float = 0.5
    batch_size: int | None = None
    background_threshold: float | Mapping[str, float] | None = None
    refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        # Normalise LazyConfig lists / DictConfigs (the dataclass is frozen, hence object.__setattr__).
        for name in ("size", "window", "stride"):
            object.__setattr__(self, name, _pair_or_none(getattr(self, name), name))
        if isinstance(self.size, int):
            object.__setattr__(self, "size", (self.size, self.size))
        if isinstance(self.background_threshold, Mapping):
            table = {str(k): float(v) for k, v in self.background_threshold.items()}
            object.__setattr__(self, "background_threshold", table)
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"InferencePolicy.resize must be one of {RESIZE_POLICIES}, got {self.resize!r}")
        if (self.resize == "none") != (self.size is None):
            raise ValueError(f"InferencePolicy: resize={self.resize!r} with size={self.size!r} (size is needed iff resizing)")
        if (self.window is None) != (self.stride is None):
            raise ValueError(f"InferencePolicy: window={self.window!r} and stride={self.stride!r} go together")
        if self.global_view and self.window is None:
            raise ValueError("InferencePolicy: global_view needs sliding windows (window, stride)")
        if self.refine is not None and not callable(self.refine):
            raise TypeError(f"InferencePolicy.refine must be callable (images, scores) -> scores, got {self.refine!r}")
        if not 0.0 <= self.global_weight <= 1.0:
            raise ValueError(f"InferencePolicy.global_weight must be in [0, 1], got {self.global_weight}")

    @property
    def sliding(self) -> bool:
        return self.window is not None

    def threshold_for(self, dataset_name: str | None) -> float | None:
        """The background threshold of `dataset_name`; a per-dataset table must name it."""
        if not isinstance(self.background_threshold, Mapping):
            return self.background_threshold
        if dataset_name not in self.background_threshold:
            raise KeyError(
                f"InferencePolicy.background_threshold has no entry for test dataset {dataset_name!r} "
                f"(entries: {sorted(self.background_threshold)})"
            )
        return self.background_threshold[dataset_name]


def run_inference(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    policy: InferencePolicy,
    output_size: Sequence[int],
) -> torch.Tensor:
    """(3, H, W) float image -> (C, *output_size) scores by `policy`.

    `predict` maps views (n, 3, h, w) to scores (n, C, h', w'). With sliding windows the scores must
    be at the view resolution (they are merged pixel by pixel); a whole-image view may return any
    resolution, resized bilinearly (align_corners=False) straight to `output_size`.
    """
    size = policy.size  # set iff the policy squashes (checked at construction)
    if policy.refine is not None:
        predict = _refined(predict, policy.refine)
    if policy.sliding:
        return sliding_window_inference(
            predict,
            image,
            policy.window,
            policy.stride,
            global_view=policy.global_view,
            global_weight=policy.global_weight,
            resize_to=size,
            batch_size=policy.batch_size,
            output_size=output_size,
        )
    view = image[None]
    if size is not None and tuple(view.shape[-2:]) != size:
        view = F.interpolate(view, size=size, mode="bilinear", align_corners=False)
    scores = predict(view)
    if scores.dim() != 4 or scores.shape[0] != 1:
        raise ValueError(f"predict must map a view {tuple(view.shape)} to (1, C, h, w) scores, got {tuple(scores.shape)}")
    return resize_to_original(scores[0], output_size)


def _refined(
    predict: Callable[[torch.Tensor], torch.Tensor], refine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`predict` followed by `refine(views at the scores' resolution, scores)`."""

    def run(views: torch.Tensor) -> torch.Tensor:
        scores = predict(views)
        guide = views
        if guide.shape[-2:] != scores.shape[-2:]:
            guide = F.interpolate(views, size=scores.shape[-2:], mode="bilinear", align_corners=True)
        return refine(guide, scores)

    return run
