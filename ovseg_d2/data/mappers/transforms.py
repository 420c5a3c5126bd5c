"""mmseg's photometric distortion and keep-ratio resize as Detectron2 Augmentation / Transform pairs.

Photometric distortion: same operations and ranges as mmseg's `PhotoMetricDistortion` and PointRend's
`ColorAugSSDTransform` (used by Mask2Former / CAT-Seg), but every random draw happens in
`get_transform` through numpy's global RNG, so a seeded run is reproducible and the sampled
parameters are visible on the transform. Works on RGB uint8 images; labels are untouched.

Keep-ratio resize: mmseg's `Resize(img_scale, ratio_range, keep_ratio=True, min_size)` with mmcv's
size rule and OpenCV interpolation (bilinear image, nearest labels), for the methods whose official
pipelines use it (Cascade-CLIP, TCL, OVSegmentor).
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
from detectron2.data.transforms import Augmentation, NoOpTransform, Transform

Size = tuple[int, int]


def _convert(x: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


class PhotometricDistortionTransform(Transform):
    """Brightness shift, contrast scale (before or after the HSV step), saturation scale and hue
    shift (OpenCV hue units, 0..179). Neutral values (0, 1, 1, 0) skip a step."""

    def __init__(
        self,
        brightness_delta: float = 0.0,
        contrast_alpha: float = 1.0,
        contrast_last: bool = False,
        saturation_alpha: float = 1.0,
        hue_delta: int = 0,
    ):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValueError("PhotometricDistortionTransform expects an RGB uint8 (H, W, 3) image")
        if self.brightness_delta:
            img = _convert(img, beta=self.brightness_delta)
        if self.contrast_alpha != 1.0 and not self.contrast_last:
            img = _convert(img, alpha=self.contrast_alpha)
        if self.saturation_alpha != 1.0 or self.hue_delta:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = _convert(hsv[..., 1], alpha=self.saturation_alpha)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + self.hue_delta) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if self.contrast_alpha != 1.0 and self.contrast_last:
            img = _convert(img, alpha=self.contrast_alpha)
        return img

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        return segmentation


class PhotometricDistortion(Augmentation):
    """Each of brightness (+-`brightness_delta`), contrast and saturation (x `*_range`) and hue
    (+-`hue_delta`) is applied with probability `prob`; contrast goes first or last at random."""

    def __init__(
        self,
        brightness_delta: float = 32.0,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        prob: float = 0.5,
    ):
        super().__init__()
        self._init(locals())

    def _maybe(self) -> bool:
        return np.random.rand() < self.prob

    def get_transform(self, image: np.ndarray) -> Transform:
        delta = self.brightness_delta
        brightness = self._rand_range(-delta, delta) if self._maybe() else 0.0
        contrast_last = bool(np.random.randint(2))
        contrast = self._rand_range(*self.contrast_range) if self._maybe() else 1.0
        saturation = self._rand_range(*self.saturation_range) if self._maybe() else 1.0
        hue = int(np.random.randint(-self.hue_delta, self.hue_delta + 1)) if self._maybe() else 0
        if (brightness, contrast, saturation, hue) == (0.0, 1.0, 1.0, 0):
            return NoOpTransform()
        return PhotometricDistortionTransform(
            float(brightness), float(contrast), contrast_last, float(saturation), hue
        )


def mmseg_rescale_size(height: int, width: int, scale: Sequence[float]) -> Size:
    """mmcv's keep-ratio rule: the largest factor with long side <= max(scale) and short side
    <= min(scale) (up- or down-scaling), each side rounded as `int(side * factor + 0.5)`."""
    long_edge, short_edge = max(scale), min(scale)
    factor = min(long_edge / max(height, width), short_edge / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class CV2ResizeTransform(Transform):
    """Resize (h, w) -> (new_h, new_w) with OpenCV, as mmcv does: bilinear for the image, nearest for
    the label map. (Detectron2's `ResizeTransform` resizes uint8 images with PIL, which filters when
    down-scaling and so differs from the official pipelines.)"""

    def __init__(self, h: int, w: int, new_h: int, new_w: int):
        super().__init__()
        self._set_attributes(locals())

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"CV2ResizeTransform for {self.h}x{self.w} got an image of {img.shape[:2]}")
        return cv2.resize(img, (self.new_w, self.new_h), interpolation=cv2.INTER_LINEAR)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        # OpenCV has no int64 resize; label maps here are uint8 / uint16 / float32 (see SemSegDatasetMapper).
        return cv2.resize(segmentation, (self.new_w, self.new_h), interpolation=cv2.INTER_NEAREST)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        coords[:, 0] = coords[:, 0] * (self.new_w / self.w)
        coords[:, 1] = coords[:, 1] * (self.new_h / self.h)
        return coords


class MmsegResize(Augmentation):
    """mmseg's `Resize` with `keep_ratio=True`.

    scale: `img_scale`, e.g. (2048, 512): long side <= 2048 and short side <= 512 (`mmseg_rescale_size`).
    ratio_range: (lo, hi) -> scale multiplied by a ratio drawn uniformly from [lo, hi), each side
        truncated (`int(2048 * ratio)`), as mmseg's `random_sample_ratio` (training: (0.5, 2.0)).
    min_size: mmseg's `min_size` branch (Cascade-CLIP's test pipeline): the short side becomes
        max(min(scale), min_size) and the long side follows the aspect ratio; the long-side cap no
        longer applies.
    """

    def __init__(
        self,
        scale: Sequence[int] = (2048, 512),
        ratio_range: Sequence[float] | None = None,
        min_size: int | None = None,
    ):
        super().__init__()
        scale = tuple(int(s) for s in scale)
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"MmsegResize scale must be two positive sides, got {scale}")
        if ratio_range is not None:
            ratio_range = tuple(float(r) for r in ratio_range)
            if len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]:
                raise ValueError(f"MmsegResize ratio_range must be (lo, hi) with 0 < lo <= hi, got {ratio_range}")
        self._init(locals())

    def target_scale(self, height: int, width: int) -> tuple[float, float]:
        """The (possibly random) scale of one image, before mmcv's rule."""
        scale: tuple[float, float] = self.scale
        if self.ratio_range is not None:
            low, high = self.ratio_range
            ratio = np.random.random_sample() * (high - low) + low
            scale = (int(scale[0] * ratio), int(scale[1] * ratio))
        if self.min_size is not None:
            short = max(min(scale), self.min_size)
            scale = (short * height / width, short) if height > width else (short, short * width / height)
        return scale

    def get_transform(self, image: np.ndarray) -> Transform:
        height, width = image.shape[:2]
        new_h, new_w = mmseg_rescale_size(height, width, self.target_scale(height, width))
        return CV2ResizeTransform(height, width, new_h, new_w)
