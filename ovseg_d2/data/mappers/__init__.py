"""Semantic-segmentation mappers (16-bit GT reading, zero-shot label remapping) and loaders."""
from .io import read_sem_seg
from .loaders import build_sem_seg_test_loader, build_sem_seg_train_loader
from .sem_seg import (
    SemSegDatasetMapper,
    build_test_augmentations,
    build_train_augmentations,
    remap_labels,
)
from .transforms import PhotometricDistortion, PhotometricDistortionTransform

__all__ = [
    "read_sem_seg", "SemSegDatasetMapper", "build_train_augmentations", "build_test_augmentations",
    "remap_labels", "PhotometricDistortion", "PhotometricDistortionTransform",
    "build_sem_seg_test_loader", "build_sem_seg_train_loader",
]
