"""A miniature PASCAL VOC in the registered (prepared) layout, for end-to-end engine tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_voc_miniature(root: Path, num_train: int = 8, num_val: int = 4, size: int = 64) -> Path:
    """VOCdevkit/VOC2012/{JPEGImages, annotations_detectron2/{train,val}}: each image holds a
    bright square of class 0 ("aeroplane") or 1 ("bicycle") on a dark background (ignored)."""
    rng = np.random.default_rng(0)
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
    for split, count in (("train", num_train), ("val", num_val)):
        gt_dir = voc / "annotations_detectron2" / split
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            cls = i % 2
            image = np.full((size, size, 3), 20, np.uint8)
            label = np.full((size, size), 255, np.uint8)
            y, x = rng.integers(0, size // 2, size=2)
            colour = (230, 40, 40) if cls == 0 else (40, 40, 230)
            image[y : y + size // 2, x : x + size // 2] = colour
            label[y : y + size // 2, x : x + size // 2] = cls
            Image.fromarray(image).save(voc / "JPEGImages" / f"{split}_{i:03d}.jpg", quality=95)
            Image.fromarray(label).save(gt_dir / f"{split}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_voc_miniature(tmp_path_factory.mktemp("datasets"))


@pytest.fixture
def tiny_baseline_overrides() -> list[str]:
    """Overrides that turn configs/toy/dense_baseline.py into a seconds-long run on the miniature."""
    return list(TINY_BASELINE_OVERRIDES)


TINY_BASELINE_OVERRIDES = [
    "model.clip_model=tiny-vit-p16-w64",
    "model.clip_resolution=[64,64]",
    "dataloader.train.dataset_names=ovseg_voc20_train",
    "dataloader.train.total_batch_size=4",
    "dataloader.train.mapper.augmentations.min_size=64",
    "dataloader.train.mapper.augmentations.max_size=64",
    "dataloader.train.mapper.augmentations.crop_size=[64,64]",
    "dataloader.test_datasets=[ovseg_voc20_val]",
    "train.device=cpu",
    "train.log_period=1",
]
