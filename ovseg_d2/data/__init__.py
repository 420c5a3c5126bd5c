"""Data: vocabularies, dataset registrations and mappers.

Importing this package registers every `ovseg_*` dataset with Detectron2 (lazily: nothing is read
from $DETECTRON2_DATASETS until a dataset is loaded).
"""
from . import datasets, toy  # noqa: F401  (registers the benchmark and toy-world datasets)
from .mappers import (
    SemSegDatasetMapper,
    build_sem_seg_test_loader,
    build_sem_seg_train_loader,
    build_test_augmentations,
    build_train_augmentations,
    read_sem_seg,
)
from .vocab import display_names, load_vocabulary

__all__ = [
    "SemSegDatasetMapper", "build_sem_seg_test_loader", "build_sem_seg_train_loader",
    "build_test_augmentations", "build_train_augmentations", "read_sem_seg", "display_names",
    "load_vocabulary",
]
