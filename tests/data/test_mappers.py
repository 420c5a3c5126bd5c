"""GT reading, augmentations and the semantic-segmentation mapper on tiny generated images."""
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from detectron2.config import LazyCall as L
from detectron2.config import get_cfg, instantiate
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from PIL import Image

import ovseg_d2.data  # noqa: F401  (registers the datasets used for label remapping)
from ovseg_d2.data.datasets import register_sem_seg_dataset
from ovseg_d2.data.mappers import (
    PhotometricDistortion,
    PhotometricDistortionTransform,
    SemSegDatasetMapper,
    build_sem_seg_test_loader,
    build_sem_seg_train_loader,
    build_train_augmentations,
    read_sem_seg,
    remap_labels,
)


def _save(path: Path, array: np.ndarray) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def _record(tmp_path: Path, gt: np.ndarray, image: np.ndarray | None = None, **extra) -> dict:
    """An image whose red channel encodes the label (x10), so geometry can be checked on both."""
    if image is None:
        image = np.zeros((*gt.shape, 3), np.uint8)
        image[..., 0] = (gt % 25) * 10
        image[..., 1] = np.arange(gt.shape[1], dtype=np.uint8)[None, :]
    ext = "tif" if gt.dtype == np.uint16 else "png"
    return {
        "file_name": _save(tmp_path / "img.png", image),
        "sem_seg_file_name": _save(tmp_path / f"gt.{ext}", gt),
        **extra,
    }


def test_read_sem_seg_bit_depths(tmp_path):
    values8 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    values16 = (np.arange(256, dtype=np.uint16) * 257).reshape(16, 16)  # up to 65535
    for name, arr in [("a.png", values8), ("b.png", values16), ("c.tif", values16)]:
        got = read_sem_seg(_save(tmp_path / name, arr))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, arr.astype(np.int64))
    palette = Image.fromarray(np.array([[0, 1], [255, 20]], np.uint8), mode="L").convert("P")
    palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
    palette.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_sem_seg(str(tmp_path / "p.png")), [[0, 1], [255, 20]])
    with pytest.raises(ValueError, match="label map"):
        read_sem_seg(_save(tmp_path / "rgb.png", np.zeros((4, 4, 3), np.uint8)))


def test_train_mapper_shapes_and_types(tmp_path):
    gt = np.zeros((48, 64), np.uint8)
    gt[:, 32:] = 1
    record = _record(tmp_path, gt)
    mapper = SemSegDatasetMapper(
        is_train=True,
        augmentations=build_train_augmentations(min_size=40, max_size=1000, crop_size=(24, 32)),
    )
    np.random.seed(0)
    out = mapper(record)
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 24, 32)
    assert out["sem_seg"].dtype == torch.long and out["sem_seg"].shape == (24, 32)
    assert (out["height"], out["width"], out["file_name"]) == (48, 64, record["file_name"])
    assert set(out["sem_seg"].unique().tolist()) <= {0, 1}
    assert "sem_seg" not in record and "image" not in record  # input record untouched


def test_test_mapper_resizes_and_skips_gt(tmp_path):
    record = _record(tmp_path, np.zeros((20, 40), np.uint8))
    mapper = SemSegDatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(10, 1000)])
    out = mapper(record)
    assert out["image"].shape == (3, 10, 20) and "sem_seg" not in out
    assert (out["height"], out["width"]) == (20, 40)


def test_category_max_area_respected(tmp_path):
    gt = np.zeros((32, 64), np.uint8)
    gt[:, 32:] = 1
    gt[:4, :] = 255  # ignored pixels do not count
    record = _record(tmp_path, gt)
    augs = build_train_augmentations(
        min_size=32, max_size=1000, crop_size=(32, 32), single_category_max_area=0.75,
        photometric=False, flip=False,
    )
    mapper = SemSegDatasetMapper(is_train=True, augmentations=augs)
    for seed in range(10):
        np.random.seed(seed)
        sem = mapper(record)["sem_seg"]
        counts = torch.bincount(sem[sem != 255].flatten(), minlength=2)
        assert counts.max() < 0.75 * counts.sum(), (seed, counts)


def test_flip_moves_image_and_label_together(tmp_path):
    gt = np.zeros((16, 24), np.uint8)
    gt[:, :6] = 3
    gt[2, 20] = 255
    record = _record(tmp_path, gt)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[T.RandomFlip(prob=1.0)])
    out = mapper(record)
    sem, image = out["sem_seg"].numpy(), out["image"].numpy()
    np.testing.assert_array_equal(sem, gt[:, ::-1])
    np.testing.assert_array_equal(image[0], (sem % 25) * 10)  # red channel still encodes the label
    np.testing.assert_array_equal(image[1, 0], np.arange(24)[::-1])


def test_16bit_labels_survive_resize_crop_flip(tmp_path):
    gt = np.full((40, 40), 65535, np.uint16)
    gt[:, :20] = 300
    gt[:, 20:] = 846
    record = _record(tmp_path, gt)
    augs = build_train_augmentations(min_size=20, max_size=1000, crop_size=(16, 16),
                                     ignore_label=65535)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=augs)
    np.random.seed(1)
    sem = mapper(record)["sem_seg"]
    assert sem.shape == (16, 16) and set(sem.unique().tolist()) <= {300, 846}


def test_seen_dataset_remaps_unseen_to_ignore(tmp_path):
    gt = np.array([[0, 14, 15, 16], [19, 255, 3, 18]], np.uint8)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[])
    seen = _record(tmp_path, gt, dataset_name="ovseg_voc20_seen_train")
    np.testing.assert_array_equal(
        mapper(seen)["sem_seg"].numpy(), [[0, 14, 255, 255], [255, 255, 3, 255]]
    )
    plain = _record(tmp_path, gt, dataset_name="ovseg_voc20_train")  # no label_map: unchanged
    np.testing.assert_array_equal(mapper(plain)["sem_seg"].numpy(), gt)


def test_coco_seen_map_and_remap_labels():
    coco = np.array([19, 20, 170, 255, 0])  # cow is unseen, elephant seen, wood seen
    label_map = MetadataCatalog.get("ovseg_coco_stuff171_seen_train").label_map
    np.testing.assert_array_equal(remap_labels(coco, label_map, 255), [255, 19, 155, 255, 0])
    np.testing.assert_array_equal(remap_labels(np.array([3, 900]), [1, 0, 2, 5], 65535), [5, 65535])


def test_deterministic_with_seed(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    gt = rng.integers(0, 5, (40, 56), dtype=np.uint8)
    record = _record(tmp_path, gt, image)
    augs = build_train_augmentations(min_size=(24, 32, 40), max_size=1000, crop_size=(20, 20),
                                     single_category_max_area=0.9)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=augs)

    def run(seed):
        np.random.seed(seed)
        return [mapper(record) for _ in range(3)]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["sem_seg"], y["sem_seg"])
    assert any(not torch.equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_photometric_distortion():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    seg = rng.integers(0, 3, (8, 8))
    brighter = PhotometricDistortionTransform(brightness_delta=10.0)
    np.testing.assert_array_equal(
        brighter.apply_image(image), np.clip(image.astype(int) + 10, 0, 255)
    )
    full = PhotometricDistortionTransform(-5.0, 1.3, True, 0.7, 12)
    assert full.apply_image(image).dtype == np.uint8
    np.testing.assert_array_equal(full.apply_segmentation(seg), seg)
    grey = np.full((4, 4, 3), 100, np.uint8)
    hue_only = PhotometricDistortionTransform(hue_delta=9)
    np.testing.assert_array_equal(hue_only.apply_image(grey), grey)
    aug = PhotometricDistortion()
    np.random.seed(0)
    params = []
    for _ in range(200):
        t = aug.get_transform(image)
        if isinstance(t, PhotometricDistortionTransform):
            params.append((t.brightness_delta, t.contrast_alpha, t.saturation_alpha, t.hue_delta))
    p = np.array(params)
    assert abs(p[:, 0]).max() <= 32 and 0.5 <= p[:, 1].min() and p[:, 1].max() <= 1.5
    assert 0.5 <= p[:, 2].min() and p[:, 2].max() <= 1.5 and abs(p[:, 3]).max() <= 18
    assert 0.4 < (p[:, 0] != 0).mean() < 0.65  # ~p=0.5 each (among non-noop draws)


def test_lazyconfig_and_yacs_construction(tmp_path):
    record = _record(tmp_path, np.tile(np.arange(2, dtype=np.uint8).repeat(20), (30, 1)))
    lazy = OmegaConf.create({"m": L(SemSegDatasetMapper)(
        is_train=True,
        augmentations=L(build_train_augmentations)(min_size=[30], max_size=100, crop_size=[16, 16]),
    )})
    assert _sem_seg_shape(instantiate(lazy.m), record) == (16, 16)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("ovseg_voc20_seen_train",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (30,), 100
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE = True, "absolute", [8, 12]
    cfg.INPUT.FORMAT = "RGB"
    assert _sem_seg_shape(SemSegDatasetMapper(cfg, is_train=True), record) == (8, 12)
    cfg.INPUT.MIN_SIZE_TEST = 15
    test_mapper = SemSegDatasetMapper(cfg, is_train=False)
    assert test_mapper(record)["image"].shape == (3, 15, 20)


def _sem_seg_shape(mapper, record) -> tuple:
    np.random.seed(0)
    return tuple(mapper(record)["sem_seg"].shape)


def _register_tiny(tmp_path: Path, name: str) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    for i in range(3):
        _save(tmp_path / "img" / f"{i}.jpg", np.full((32, 48, 3), 50 * i, np.uint8))
        gt = np.zeros((32, 48), np.uint8)
        gt[:, 24:] = 1
        _save(tmp_path / "gt" / f"{i}.png", gt)
    register_sem_seg_dataset(name, tmp_path / "img", tmp_path / "gt", stuff_classes=["a", "b"])


def test_loaders(tmp_path):
    _register_tiny(tmp_path, "_test_tiny_loader")
    batches = list(build_sem_seg_test_loader("_test_tiny_loader", min_size=16))
    assert len(batches) == 3 and all(len(b) == 1 for b in batches)
    assert batches[0][0]["image"].shape == (3, 16, 24) and batches[0][0]["height"] == 32
    train = build_sem_seg_train_loader(
        "_test_tiny_loader", total_batch_size=2, min_size=32, crop_size=(16, 16)
    )
    batch = next(iter(train))
    assert len(batch) == 2
    assert all(d["image"].shape == (3, 16, 16) and d["sem_seg"].shape == (16, 16) for d in batch)
