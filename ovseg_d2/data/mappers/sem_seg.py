"""Train/test mapper for semantic segmentation records (`file_name`, `sem_seg_file_name`)."""
from __future__ import annotations

import copy
from typing import Any, Sequence

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T

from .io import check_label_size, read_image, read_sem_seg
from .transforms import PhotometricDistortion

Augmentations = Sequence[T.Augmentation | T.Transform]


def build_train_augmentations(
    *,
    min_size: int | Sequence[int] = 512,
    max_size: int = 2048,
    sample_style: str = "choice",
    crop_size: tuple[int, int] | tuple[float, float] | None = (512, 512),
    crop_type: str = "absolute",
    single_category_max_area: float = 1.0,
    ignore_label: int = 255,
    photometric: bool = True,
    flip: bool = True,
) -> list[T.Augmentation]:
    """ResizeShortestEdge -> category-area-constrained RandomCrop -> photometric distortion ->
    horizontal flip (Mask2Former / CAT-Seg order). `crop_size=None`, `photometric=False`,
    `flip=False` drop a step; `single_category_max_area=1.0` disables the area constraint;
    `crop_type` is Detectron2's (`absolute`, `relative_range`, ...)."""
    sizes = min_size if isinstance(min_size, int) else tuple(min_size)  # LazyConfig gives lists
    augs: list[T.Augmentation] = [T.ResizeShortestEdge(sizes, max_size, sample_style)]
    if crop_size is not None:
        augs.append(
            T.RandomCrop_CategoryAreaConstraint(
                crop_type, tuple(crop_size), single_category_max_area, ignore_label
            )
        )
    if photometric:
        augs.append(PhotometricDistortion())
    if flip:
        augs.append(T.RandomFlip(prob=0.5, horizontal=True, vertical=False))
    return augs


def build_test_augmentations(
    min_size: int | None = None, max_size: int = 2560
) -> list[T.Augmentation]:
    """Optional ResizeShortestEdge (CAT-Seg evaluates at short side 640, max 2560)."""
    return [T.ResizeShortestEdge(min_size, max_size)] if min_size else []


def remap_labels(sem_seg: np.ndarray, label_map: Sequence[int], ignore_label: int) -> np.ndarray:
    """Ids below `len(label_map)` become `label_map[id]`; every other value (the ignore label
    included, as it lies beyond the map) becomes `ignore_label`."""
    size = max(len(label_map), int(sem_seg.max(initial=0)) + 1)
    lut = np.full(size, ignore_label, dtype=np.int64)
    lut[: len(label_map)] = label_map
    return lut[sem_seg]


class SemSegDatasetMapper:
    """Reads an image (RGB) and, in training, its label map (any bit depth, see `read_sem_seg`),
    remaps labels for zero-shot `*_seen` datasets, applies `augmentations` to both, and returns
    the record with `image` (uint8 CHW tensor), `sem_seg` (long HW, training only), `height` and
    `width` (original size). At test time the label map is not read: the evaluator loads it from
    `sem_seg_file_name` at full resolution.

    Records carrying `dataset_name` whose metadata defines `label_map` are remapped before
    augmentation (seen classes -> 0..S-1, unseen -> ignore), so mixing datasets in one loader works.
    """

    @configurable
    def __init__(
        self, is_train: bool = True, *, augmentations: Augmentations, image_format: str = "RGB"
    ):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg: Any, is_train: bool = True) -> dict[str, Any]:
        """yacs `cfg.INPUT` (Detectron2 / Mask2Former keys) for those not using LazyConfig."""
        if is_train:
            meta = MetadataCatalog.get(cfg.DATASETS.TRAIN[0])
            augs = build_train_augmentations(
                min_size=cfg.INPUT.MIN_SIZE_TRAIN,
                max_size=cfg.INPUT.MAX_SIZE_TRAIN,
                sample_style=cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
                crop_size=tuple(cfg.INPUT.CROP.SIZE) if cfg.INPUT.CROP.ENABLED else None,
                crop_type=cfg.INPUT.CROP.TYPE,
                single_category_max_area=cfg.INPUT.CROP.get("SINGLE_CATEGORY_MAX_AREA", 1.0),
                ignore_label=meta.get("ignore_label", 255),
                photometric=cfg.INPUT.get("COLOR_AUG_SSD", False),
                flip=cfg.INPUT.RANDOM_FLIP != "none",
            )
        else:
            augs = build_test_augmentations(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
        return {"is_train": is_train, "augmentations": augs, "image_format": cfg.INPUT.FORMAT}

    def __call__(self, dataset_dict: dict[str, Any]) -> dict[str, Any]:
        record = copy.deepcopy(dataset_dict)
        image = read_image(record["file_name"], format=self.image_format)
        record.setdefault("height", image.shape[0])
        record.setdefault("width", image.shape[1])
        sem_seg = self._read_labels(record) if self.is_train else None
        if sem_seg is not None:
            check_label_size(
                sem_seg.shape, image.shape, record["sem_seg_file_name"], record["file_name"]
            )
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        record["image"] = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        if sem_seg is not None:
            record["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype(np.int64))
        return record

    @staticmethod
    def _read_labels(record: dict[str, Any]) -> np.ndarray:
        """Label map, remapped if needed, as uint8 when it fits (PIL resizes it) else float32
        (Detectron2 resizes non-uint8 arrays with torch, which has no int64 nearest mode)."""
        sem_seg = read_sem_seg(record["sem_seg_file_name"])
        if "dataset_name" in record:
            meta = MetadataCatalog.get(record["dataset_name"])
            if meta.get("label_map", None) is not None:
                sem_seg = remap_labels(sem_seg, meta.label_map, meta.ignore_label)
        return sem_seg.astype(np.uint8 if sem_seg.max(initial=0) < 256 else np.float32)
