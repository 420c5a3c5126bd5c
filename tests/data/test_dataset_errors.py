"""Bad dataset files fail loudly and name the files (issue "nothing silent", Datasets), reproduced
on a generated toy world: an image without its label map, a truncated label PNG or image, and a
label map of the wrong size."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import ovseg_d2.data  # noqa: F401  (registers)
from ovseg_d2.data.datasets import DatasetNotPreparedError
from ovseg_d2.data.mappers import SemSegDatasetMapper, UnreadableFileError, read_sem_seg
from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world, register_toy_world
from ovseg_d2.evaluation import OpenVocabSemSegEvaluator

WORLD = ToyWorldConfig(
    num_train=2, num_val=8, num_retrieval=1, image_size=32, seed=3, shard_size=10
)


@pytest.fixture(scope="module")
def generated_world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("toy_world")
    generate_toy_world(root, WORLD, progress=False)
    return root


@pytest.fixture
def world(generated_world, tmp_path) -> Path:
    """A private copy of the world (tests damage it), registered under the `toy_*` names."""
    root = tmp_path / "world"
    shutil.copytree(generated_world, root)
    register_toy_world(root)
    yield root
    register_toy_world()


def val_record(name: str = "000003") -> dict:
    return next(r for r in DatasetCatalog.get("toy_val") if r["image_id"] == name)


def test_image_without_label_fails_at_loading(world):
    """Observed: a toy_val image whose label PNG is missing was dropped (7 of 8 evaluated)."""
    assert len(DatasetCatalog.get("toy_val")) == 8
    (world / "annotations_detectron2/val/000003.png").unlink()
    (world / "annotations_detectron2/val/000005.png").unlink()
    with pytest.raises(DatasetNotPreparedError) as err:
        DatasetCatalog.get("toy_val")
    message = str(err.value)
    assert "'toy_val': 2 images" in message
    assert str(world / "images/val/000003.jpg") in message
    assert str(world / "images/val/000005.jpg") in message
    assert "make_toy_world.py" in message  # how to regenerate


def test_benchmark_image_without_label_fails(tmp_path, monkeypatch):
    """Every benchmark whose image folder is its own split's (here ADE-150) is strict too."""
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    meta = MetadataCatalog.get("ovseg_ade150_val")
    for stem in ("a", "b", "c", "d", "e"):
        image = tmp_path / meta.image_root / f"{stem}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(image)
    label = tmp_path / meta.sem_seg_root / "a.png"
    label.parent.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(label)
    examples = r"4 images .*/b\.jpg, .*/c\.jpg, .*/d\.jpg, \.\.\. \(1 more\)"
    with pytest.raises(DatasetNotPreparedError, match=examples):
        DatasetCatalog.get("ovseg_ade150_val")


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_label_png_is_named(world):
    """Observed: `OSError: image file is truncated` with no file name, at evaluation."""
    record = val_record()
    truncate(Path(record["sem_seg_file_name"]))
    evaluator = OpenVocabSemSegEvaluator("toy_val", distributed=False)
    scores = torch.zeros(len(MetadataCatalog.get("toy_val").stuff_classes), 32, 32)
    with pytest.raises(UnreadableFileError, match=record["sem_seg_file_name"]) as err:
        evaluator.process([dict(record, height=32, width=32)], [{"sem_seg": scores}])
    assert "truncated" in str(err.value)
    with pytest.raises(UnreadableFileError, match=record["sem_seg_file_name"]):  # training
        SemSegDatasetMapper(is_train=True, augmentations=[])(record)


def test_truncated_image_is_named(world):
    record = val_record()
    truncate(Path(record["file_name"]))
    with pytest.raises(OSError, match=record["file_name"]):
        SemSegDatasetMapper(is_train=False, augmentations=[])(record)


def test_missing_label_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gone.png")):
        read_sem_seg(str(tmp_path / "gone.png"))


def test_wrong_size_label_names_both_files(world):
    record = val_record()
    small = read_sem_seg(record["sem_seg_file_name"])[:20, :24].astype(np.uint8)
    Image.fromarray(small).save(record["sem_seg_file_name"])
    pattern = rf"{record['sem_seg_file_name']} is 20x24 .* image {record['file_name']} is 32x32"
    # training: the mapper checks (before, no resize = a silently misaligned pair, and a resize
    # failed on Detectron2's bare assertion)
    mapper = SemSegDatasetMapper(is_train=True, augmentations=[])
    with pytest.raises(ValueError, match=pattern):
        mapper(record)
    # evaluation: even when the model's output matches the label map, the image size decides
    evaluator = OpenVocabSemSegEvaluator("toy_val", distributed=False)
    scores = torch.zeros(len(MetadataCatalog.get("toy_val").stuff_classes), 20, 24)
    with pytest.raises(ValueError, match=pattern):
        evaluator.process([dict(record, height=32, width=32)], [{"sem_seg": scores}])
