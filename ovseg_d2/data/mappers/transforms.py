"""Photometric distortion as a Detectron2 Augmentation / Transform pair.

Same operations and ranges as mmseg's `PhotoMetricDistortion` and PointRend's
`ColorAugSSDTransform` (used by Mask2Former / CAT-Seg), but every random draw happens in
`get_transform` through numpy's global RNG, so a seeded run is reproducible and the sampled
parameters are visible on the transform. Works on RGB uint8 images; labels are untouched.
"""
from __future__ import annotations

import cv2
import numpy as np
from detectron2.data.transforms import Augmentation, NoOpTransform, Transform


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
