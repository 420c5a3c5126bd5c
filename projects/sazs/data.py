"""Training augmentation of the official SAZS scripts, in Detectron2 terms."""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch
from detectron2.data import transforms as T

from ovseg_d2.data.mappers import SemSegDatasetMapper

__all__ = ["RandomReflectRotation", "RandomScale", "ReflectRotationTransform", "SemSegEpisodeMapper", "build_sazs_train_augmentations"]


class ReflectRotationTransform(T.Transform):
    """Rotation by `angle` degrees (counter-clockwise) about the image centre, output of the input size:
    the image is filled by reflection (official: reflection padding by (h, w), bilinear PIL rotate, crop
    back), the labels with `seg_fill` (255, nearest). Detectron2's `RotationTransform` fills with zeros,
    which would turn the corners into black image and background labels."""

    def __init__(self, height: int, width: int, angle: float, seg_fill: int = 255) -> None:
        super().__init__()
        # cv2 puts pixel centres at integer coordinates: the continuous centre is ((w - 1) / 2, (h - 1) / 2).
        self.matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
        self.size = (width, height)
        self.seg_fill = seg_fill

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(img, self.matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        # float32 holds every label id exactly and is a type warpAffine takes (int64 is not).
        rotated = cv2.warpAffine(
            segmentation.astype(np.float32), self.matrix, self.size, flags=cv2.INTER_NEAREST,
            borderMode=cv2.BORDER_CONSTANT, borderValue=float(self.seg_fill),
        )
        return rotated.astype(segmentation.dtype)

    def apply_coords(self, coords: np.ndarray) -> np.ndarray:
        return coords @ self.matrix[:, :2].T + self.matrix[:, 2]


class RandomReflectRotation(T.Augmentation):
    """Official `RandomRotate(10)`: an integer angle drawn uniformly from [-max_angle, max_angle]."""

    def __init__(self, max_angle: int = 10, seg_fill: int = 255) -> None:
        super().__init__()
        self.max_angle, self.seg_fill = max_angle, seg_fill

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        return ReflectRotationTransform(h, w, float(np.random.randint(-self.max_angle, self.max_angle + 1)), self.seg_fill)


class RandomScale(T.Augmentation):
    """Resize by a ratio drawn uniformly from [min_scale, max_scale] (official `RandomScale(2)`:
    [0.5, 2]); new size int(ratio * side); bilinear image, nearest labels."""

    def __init__(self, min_scale: float = 0.5, max_scale: float = 2.0) -> None:
        super().__init__()
        self.min_scale, self.max_scale = min_scale, max_scale

    def get_transform(self, image: np.ndarray) -> T.Transform:
        h, w = image.shape[:2]
        ratio = np.random.uniform(self.min_scale, self.max_scale)
        return T.ResizeTransform(h, w, max(1, int(ratio * h)), max(1, int(ratio * w)))


def build_sazs_train_augmentations(
    crop_size: int = 512, min_scale: float = 0.5, max_scale: float = 2.0, flip: bool = True, max_rotation: int = 10
) -> list[T.Augmentation]:
    """The official order: random rotation by an integer angle in [-max_rotation, max_rotation] (0: none)
    -> random scale -> random crop of `crop_size` (padded right/bottom with black pixels and ignore
    labels when smaller) -> horizontal flip."""
    augs: list[T.Augmentation] = [RandomReflectRotation(max_rotation)] if max_rotation > 0 else []
    augs += [
        RandomScale(min_scale, max_scale),
        T.FixedSizeCrop((crop_size, crop_size), pad=True, pad_value=0.0, seg_pad_value=255),
    ]
    if flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    return augs


class SemSegEpisodeMapper(SemSegDatasetMapper):
    """Training episodes from a semantic-segmentation dataset (the toy world): after the usual mapping,
    one class present in the crop is drawn uniformly (the global NumPy RNG, seeded per sample by the
    loader) and becomes the record's `class_id`; `sem_seg` turns binary (1 the class, 0 the rest, ignore
    kept). A crop without any labelled class gets a class drawn from all `num_classes` (all "others")."""

    def __init__(self, *args: Any, num_classes: int, ignore_label: int = 255, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.num_classes = num_classes
        self.ignore_label = ignore_label

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        record = super().__call__(dataset_dict)
        labels = record["sem_seg"]
        present = [int(c) for c in torch.unique(labels) if int(c) != self.ignore_label]
        class_id = int(np.random.choice(present)) if present else int(np.random.randint(self.num_classes))
        binary = (labels == class_id).long()
        binary[labels == self.ignore_label] = self.ignore_label
        record["sem_seg"], record["class_id"] = binary, class_id
        return record
