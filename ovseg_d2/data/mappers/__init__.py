"""Semantic-segmentation mappers (16-bit GT reading, zero-shot label remapping, few-shot binary
masks) and loaders."""
from .fewshot import FewShotDatasetMapper, binary_mask
from .io import UnreadableFileError, check_label_size, read_image, read_sem_seg
from .loaders import (
    build_resumable_train_loader,
    build_sem_seg_test_loader,
    build_sem_seg_train_loader,
)
from .sem_seg import (
    SemSegDatasetMapper,
    build_test_augmentations,
    build_train_augmentations,
    remap_labels,
)
from .transforms import (
    CV2ResizeTransform,
    MmsegResize,
    PhotometricDistortion,
    PhotometricDistortionTransform,
    mmseg_rescale_size,
)

__all__ = [
    "read_sem_seg", "read_image", "check_label_size", "UnreadableFileError", "binary_mask",
    "FewShotDatasetMapper", "SemSegDatasetMapper", "build_train_augmentations",
    "build_test_augmentations",
    "remap_labels", "PhotometricDistortion", "PhotometricDistortionTransform",
    "MmsegResize", "CV2ResizeTransform", "mmseg_rescale_size",
    "build_sem_seg_test_loader", "build_sem_seg_train_loader", "build_resumable_train_loader",
]
