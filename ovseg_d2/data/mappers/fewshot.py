"""Binary (1-way) mapper for few-shot records: the episode's class against everything else."""
from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .io import read_sem_seg
from .sem_seg import SemSegDatasetMapper

BACKGROUND, FOREGROUND = 0, 1


def binary_mask(mask: np.ndarray, class_id: int, ignore_label: int = 255) -> np.ndarray:
    """Raw few-shot mask (value = class_id + 1, 0 background) -> 1 where the pixel is `class_id`,
    `ignore_label` where it is void, 0 elsewhere (background and every other class), as uint8."""
    binary = np.where(mask == class_id + 1, FOREGROUND, BACKGROUND).astype(np.uint8)
    binary[mask == ignore_label] = ignore_label
    return binary


class FewShotDatasetMapper(SemSegDatasetMapper):
    """`SemSegDatasetMapper` for few-shot records (`class_id`, raw masks): the label map it reads is
    `binary_mask(mask, class_id)`, i.e. `sem_seg` in {0 bg, 1 fg, 255 ignore}.

    The query gets `sem_seg` in training only (at test time the evaluator reads the query's mask).
    Supports (`record["support"]`, episodes of `shot > 0`) are always mapped with their binary
    mask, through the same augmentations: each becomes `{image, sem_seg, file_name, ...}`.
    """

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        if "class_id" not in dataset_dict:
            raise KeyError(
                f"Few-shot record {dataset_dict.get('file_name')} has no 'class_id' "
                "(FewShotDatasetMapper needs the episode's class)"
            )
        record = super().__call__(dataset_dict)
        if record.get("support"):
            # Support masks are model inputs, so they are read whatever `is_train` says.
            with_masks = copy.copy(self)
            with_masks.is_train = True
            record["support"] = [
                SemSegDatasetMapper.__call__(with_masks, dict(s, class_id=record["class_id"]))
                for s in record["support"]
            ]
        return record

    @staticmethod
    def _read_labels(record: dict[str, Any]) -> np.ndarray:
        return binary_mask(read_sem_seg(record["sem_seg_file_name"]), record["class_id"])
