"""Training augmentation of the official SAZS scripts, in Detectron2 terms."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from detectron2.data import transforms as T

from ovseg_d2.data.mappers import SemSegDatasetMapper

__all__ = ["RandomScale", "SemSegEpisodeMapper", "build_sazs_train_augmentations"]


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
    crop_size: int = 512, min_scale: float = 0.5, max_scale: float = 2.0, flip: bool = True
) -> list[T.Augmentation]:
    """Random scale -> random crop of `crop_size` (padded right/bottom with black pixels and ignore
    labels when smaller) -> horizontal flip. The official +-10 degree rotation is not applied."""
    augs: list[T.Augmentation] = [
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
