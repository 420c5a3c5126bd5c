"""mmseg's keep-ratio `Resize` (`MmsegResize`): sizes computed by hand from mmcv's rule
(factor = min(long cap / long side, short cap / short side), side -> int(side * factor + 0.5))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from detectron2.data import transforms as T
from PIL import Image

from ovseg_d2.data.mappers import MmsegResize, SemSegDatasetMapper, mmseg_rescale_size


@pytest.mark.parametrize(
    "hw, scale, expected",
    [
        ((375, 500), (2048, 512), (512, 683)),  # factor 512/375: 500 * 1.3653 = 682.67 -> 683
        ((375, 500), (2048, 448), (448, 597)),  # factor 448/375: 597.33 -> 597
        ((375, 500), (1024, 256), (256, 341)),  # down-scaling: 341.33 -> 341
        ((300, 2000), (2048, 512), (307, 2048)),  # long side caps: factor 1.024, 307.2 -> 307
        ((100, 50), (2048, 512), (1024, 512)),  # up-scaling: factor 10.24
        ((600, 1001), (2048, 300), (300, 501)),  # 500.5 rounds half up (Python's round would give 500)
    ],
)
def test_rescale_size(hw, scale, expected):
    assert mmseg_rescale_size(*hw, scale) == expected


def resized_shape(aug: MmsegResize, hw: tuple[int, int]) -> tuple[int, int]:
    aug_input = T.AugInput(np.zeros((*hw, 3), np.uint8))
    aug(aug_input)
    return aug_input.image.shape[:2]


@pytest.mark.parametrize(
    "sample, expected",
    [
        (0.0, (256, 341)),  # ratio 0.5: scale (1024, 256)
        (0.5, (640, 853)),  # ratio 1.25: scale (2560, 640), 853.33 -> 853
        # ratio 0.65: scale (int(1331.2), int(332.8)) = (1331, 332), truncated; factor 332/375:
        # 500 * 0.88533 = 442.67 -> 443 (a rounded 333 would give 444)
        (0.1, (332, 443)),
    ],
)
def test_ratio_range(monkeypatch, sample, expected):
    monkeypatch.setattr(np.random, "random_sample", lambda: sample)
    assert resized_shape(MmsegResize((2048, 512), ratio_range=(0.5, 2.0)), (375, 500)) == expected


@pytest.mark.parametrize(
    "hw, scale, expected",
    [
        ((375, 500), (2048, 512), (512, 683)),
        ((300, 2000), (2048, 512), (512, 3413)),  # the 2048 cap is bypassed: 2000 * 512/300 = 3413.3
        ((500, 375), (2048, 512), (683, 512)),  # portrait
        ((375, 500), (1024, 256), (512, 683)),  # short side raised to min_size
    ],
)
def test_min_size_branch(hw, scale, expected):
    assert resized_shape(MmsegResize(scale, min_size=512), hw) == expected


def test_opencv_interpolation_of_image_and_labels():
    """Image: OpenCV bilinear, no filtering on down-scaling (PIL's would blur the edge):
    columns [0, 0, 100, 100] -> sources 0.5 and 2.5 -> [0, 100]. Labels: nearest."""
    image = np.zeros((2, 4, 3), np.uint8)
    image[:, 2:] = 100
    aug_input = T.AugInput(image)
    MmsegResize((4, 1))(aug_input)  # factor min(4/4, 1/2) = 0.5 -> 1 x 2
    assert aug_input.image[..., 0].tolist() == [[0, 100]]
    labels = np.array([[1, 2], [3, 255]], np.uint8)
    up = MmsegResize((4, 4)).get_transform(np.zeros((2, 2, 3), np.uint8))  # factor 2 -> 4 x 4
    assert up.apply_segmentation(labels).tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 255, 255], [3, 3, 255, 255]]


def test_in_semseg_mapper(tmp_path: Path):
    """30x40 image, scale (80, 45): factor min(80/40, 45/30) = 1.5 -> 45x60 image and labels."""
    gt = np.zeros((30, 40), np.uint8)
    gt[:, 20:] = 7
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "im.png")
    Image.fromarray(gt).save(tmp_path / "gt.png")
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[MmsegResize((80, 45))])
    out = mapper({"file_name": str(tmp_path / "im.png"), "sem_seg_file_name": str(tmp_path / "gt.png")})
    assert tuple(out["image"].shape) == (3, 45, 60)
    assert tuple(out["sem_seg"].shape) == (45, 60)
    assert (out["sem_seg"][:, :30] == 0).all() and (out["sem_seg"][:, 30:] == 7).all()
    assert (out["height"], out["width"]) == (30, 40)


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        MmsegResize((2048,))
    with pytest.raises(ValueError, match="ratio_range"):
        MmsegResize((2048, 512), ratio_range=(2.0, 0.5))
