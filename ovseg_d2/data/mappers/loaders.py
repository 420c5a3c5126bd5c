"""Loader builders short enough to be one `L(...)` call in a LazyConfig."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from detectron2.data import (
    MetadataCatalog,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from .sem_seg import SemSegDatasetMapper, build_test_augmentations, build_train_augmentations

Mapper = Callable[[dict[str, Any]], Any]


def build_sem_seg_test_loader(
    dataset_name: str,
    *,
    min_size: int | None = None,
    max_size: int = 2560,
    mapper: Mapper | None = None,
    num_workers: int = 0,
):
    """Batch-1 inference loader of one registered dataset; the default mapper resizes the short
    side to `min_size` (no resize when None) and reads no ground truth."""
    mapper = mapper or SemSegDatasetMapper(
        is_train=False, augmentations=build_test_augmentations(min_size, max_size)
    )
    dataset = get_detection_dataset_dicts(dataset_name, filter_empty=False)
    return build_detection_test_loader(
        dataset=dataset, mapper=mapper, batch_size=1, num_workers=num_workers
    )


def build_sem_seg_train_loader(
    dataset_names: str | Sequence[str],
    *,
    total_batch_size: int,
    mapper: Mapper | None = None,
    num_workers: int = 0,
    **augmentation_kwargs: Any,
):
    """Infinite training loader (Detectron2 `build_detection_train_loader`). Without `mapper`, a
    `SemSegDatasetMapper` with `build_train_augmentations(**augmentation_kwargs)` is used; its crop
    ignores the first dataset's `ignore_label` unless given."""
    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    if mapper is None:
        augmentation_kwargs.setdefault("ignore_label", MetadataCatalog.get(names[0]).ignore_label)
        mapper = SemSegDatasetMapper(
            is_train=True, augmentations=build_train_augmentations(**augmentation_kwargs)
        )
    dataset = get_detection_dataset_dicts(names, filter_empty=False)
    return build_detection_train_loader(
        dataset=dataset, mapper=mapper, total_batch_size=total_batch_size, num_workers=num_workers
    )
