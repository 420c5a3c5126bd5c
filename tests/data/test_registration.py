"""Registrations: metadata, laziness, records from a tiny generated $DETECTRON2_DATASETS tree."""
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import ovseg_d2.data  # noqa: F401  (registers)
from ovseg_d2.data.datasets import COCO20I_LAYOUT, DatasetNotPreparedError, load_fewshot_records
from ovseg_d2.data.datasets.builtin import register_all
from ovseg_d2.data.mappers import read_sem_seg

# name: (num scored classes, ignore, gt_ext, metric convention, #unseen or None, background class)
SEMSEG = {
    "ovseg_ade150_val": (150, 255, "png", "detectron2", None, None),
    "ovseg_ade150_train": (150, 255, "png", "detectron2", None, None),
    "ovseg_ade847_val": (847, 65535, "tif", "detectron2", None, None),
    "ovseg_pc59_val": (59, 255, "png", "detectron2", 10, None),
    "ovseg_pc59_train": (59, 255, "png", "detectron2", 10, None),
    "ovseg_pc60_val": (60, 255, "png", "mmseg", None, 0),
    "ovseg_pc459_val": (459, 65535, "tif", "detectron2", None, None),
    "ovseg_voc20_val": (20, 255, "png", "detectron2", 5, None),
    "ovseg_voc20_train": (20, 255, "png", "detectron2", 5, None),
    "ovseg_voc20b_val": (21, 255, "png", "detectron2", None, 20),
    "ovseg_voc21_val": (21, 255, "png", "mmseg", None, 0),
    "ovseg_coco_stuff171_train": (171, 255, "png", "detectron2", 15, None),
    "ovseg_coco_stuff171_val": (171, 255, "png", "detectron2", 15, None),
    "ovseg_coco_object_val": (81, 255, "png", "mmseg", None, 0),
    "ovseg_cityscapes19_val": (19, 255, "png", "detectron2", None, None),
    "ovseg_voc20_seen_train": (15, 255, "png", "detectron2", None, None),
    "ovseg_pc59_seen_train": (49, 255, "png", "detectron2", None, None),
    "ovseg_coco_stuff171_seen_train": (156, 255, "png", "detectron2", None, None),
}
SCRIPTS = {  # first matching prefix wins
    "pascal5i": "prepare_fewshot_splits.py", "coco20i": "prepare_fewshot_splits.py",
    "ade150": "prepare_ade20k_150.py", "ade847": "prepare_ade20k_847.py",
    "pc59": "prepare_pascal_context_59.py", "pc60": "prepare_pascal_context_59.py",
    "pc459": "prepare_pascal_context_459.py", "voc2": "prepare_voc.py",
    "coco": "prepare_coco_stuff.py", "cityscapes": "prepare_cityscapes.py",
}


def _script(name: str) -> str:
    return next(s for key, s in SCRIPTS.items() if name.startswith(f"ovseg_{key}"))


def _write_image(path: Path, size=(32, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 128, np.uint8)).save(path)


def _write_gt(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values).save(path)


def _make_layout(root: Path, name: str, stems=("a", "sub/b")) -> list[np.ndarray]:
    """Two images + label maps in the registered folders of `name`; returns the label maps."""
    meta = MetadataCatalog.get(name)
    sixteen = meta.gt_ext == "tif"
    city = name.startswith("ovseg_cityscapes")
    labels = []
    for i, stem in enumerate(stems):
        gt = np.zeros((32, 32), np.uint16 if sixteen else np.uint8)
        gt[:, 16:] = (300 + i) if sixteen else i + 1
        gt[0, 0] = meta.ignore_label
        image_name = f"{stem}_leftImg8bit.png" if city else f"{stem}.jpg"
        gt_name = f"{stem}_gtFine_labelTrainIds.png" if city else f"{stem}.{meta.gt_ext}"
        _write_image(root / meta.image_root / image_name)
        _write_gt(root / meta.sem_seg_root / gt_name, gt)
        labels.append(gt.astype(np.int64))
    return labels


@pytest.fixture
def d2_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", sorted(SEMSEG))
def test_semseg_metadata(name):
    k, ignore, gt_ext, convention, n_unseen, background = SEMSEG[name]
    meta = MetadataCatalog.get(name)
    assert len(meta.stuff_classes) == k and len(set(meta.stuff_classes)) == k
    assert meta.ignore_label == ignore and meta.gt_ext == gt_ext
    assert meta.metric_convention == convention
    assert meta.evaluator_type == "ovseg_sem_seg"
    assert meta.prepare_hint == f"python datasets/{_script(name)}"
    assert meta.get("background_class", None) == background
    unseen = meta.get("unseen_classes", None)
    assert (len(unseen) if unseen is not None else None) == n_unseen
    if name != "ovseg_voc20b_val":
        assert len(meta.prompt_classes) == k


def test_voc20b_prompts_fold_to_background():
    meta = MetadataCatalog.get("ovseg_voc20b_val")
    assert len(meta.prompt_classes) == 59 and meta.prompt_classes[20] == "bag"
    assert meta.prompt_to_class == list(range(20)) + [20] * 39
    assert meta.stuff_classes[-1] == "background" and meta.background_class == 20


def test_ade847_prompts_keep_synonyms():
    meta = MetadataCatalog.get("ovseg_ade847_val")
    assert meta.prompt_classes[1] == "building, edifice" and meta.stuff_classes[1] == "building"


@pytest.mark.parametrize(
    "name,full,unseen_name",
    [("ovseg_voc20_seen_train", "ovseg_voc20_val", "sofa"),
     ("ovseg_pc59_seen_train", "ovseg_pc59_val", "keyboard"),
     ("ovseg_coco_stuff171_seen_train", "ovseg_coco_stuff171_val", "wall-concrete")],
)
def test_seen_sets_label_map(name, full, unseen_name):
    meta, full_meta = MetadataCatalog.get(name), MetadataCatalog.get(full)
    assert len(meta.label_map) == len(full_meta.stuff_classes)
    assert unseen_name not in meta.stuff_classes
    for old, new in enumerate(meta.label_map):
        if old in full_meta.unseen_classes:
            assert new == 255
        else:
            assert meta.stuff_classes[new] == full_meta.stuff_classes[old]


@pytest.mark.parametrize("name", sorted(SEMSEG))
def test_records_from_tiny_layout(d2_root, name):
    labels = _make_layout(d2_root, name)
    records = DatasetCatalog.get(name)
    assert [r["image_id"] for r in records] == ["a", "sub/b"]
    for record, expected in zip(records, labels):
        assert Path(record["file_name"]).is_file() and str(d2_root) in record["file_name"]
        np.testing.assert_array_equal(read_sem_seg(record["sem_seg_file_name"]), expected)
        assert record.get("dataset_name") == (name if "_seen_" in name else None)


@pytest.mark.parametrize("name", ["ovseg_ade847_val", "ovseg_pc459_val"])
def test_16bit_tiff_read_exactly(d2_root, name):
    _make_layout(d2_root, name)
    gt = read_sem_seg(DatasetCatalog.get(name)[1]["sem_seg_file_name"])
    assert gt.dtype == np.int64 and gt[0, 0] == 65535 and gt[0, 31] == 301


@pytest.mark.parametrize(
    "name", sorted(SEMSEG) + ["ovseg_pascal5i_fold0_val", "ovseg_coco20i_fold2_train"]
)
def test_missing_folder_names_dataset_path_and_script(d2_root, name):
    with pytest.raises(DatasetNotPreparedError) as err:
        DatasetCatalog.get(name)
    message = str(err.value)
    assert name in message and str(d2_root) in message
    assert f"python datasets/{_script(name)}" in message


def test_registration_is_lazy_and_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "missing"))
    register_all()  # no disk access: must not fail although nothing exists
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "later"))
    _make_layout(tmp_path / "later", "ovseg_voc20_val")
    assert len(DatasetCatalog.get("ovseg_voc20_val")) == 2


def test_shared_voc_images_without_label_are_fine_but_label_without_image_fails(d2_root):
    """VOC's JPEGImages holds every split; strict datasets: tests/data/test_dataset_errors.py."""
    _make_layout(d2_root, "ovseg_voc21_val")
    meta = MetadataCatalog.get("ovseg_voc21_val")
    _write_image(d2_root / meta.image_root / "extra.jpg")
    assert len(DatasetCatalog.get("ovseg_voc21_val")) == 2
    _write_gt(d2_root / meta.sem_seg_root / "orphan.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DatasetNotPreparedError, match="orphan"):
        DatasetCatalog.get("ovseg_voc21_val")


# ---- few-shot folds -------------------------------------------------------------------------


def _write_lists(root: Path, list_root: str, split: str, lines: dict[int, list[str]]) -> None:
    folder = root / list_root / split
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(4):
        (folder / f"fold{k}.txt").write_text("".join(f"{x}\n" for x in lines.get(k, [])))


def test_pascal5i_records_follow_hsnet(d2_root):
    _write_image(d2_root / "VOCdevkit/VOC2012/JPEGImages/x.jpg")
    (d2_root / "VOCdevkit/VOC2012/SegmentationClassAug").mkdir(parents=True)
    lists = "VOCdevkit/VOC2012/fewshot_splits"
    # HSNet files: trn/fold k lists the pairs whose class is in fold k
    _write_lists(d2_root, lists, "trn", {0: ["2007_000032__01", "2007_000033__05"],
                                         1: ["2007_000033__06"], 3: ["2008_000001__20"]})
    _write_lists(d2_root, lists, "val", {0: ["2007_000123__02"], 2: ["2007_000500__11"]})
    val0 = DatasetCatalog.get("ovseg_pascal5i_fold0_val")  # 1,000 episodes of the one val pair
    assert len(val0) == 1000 and {(r["image_id"], r["class_id"]) for r in val0} == {
        ("2007_000123__2", 1)
    }
    assert val0[0]["file_name"].endswith("VOCdevkit/VOC2012/JPEGImages/2007_000123.jpg")
    assert val0[0]["sem_seg_file_name"].endswith("SegmentationClassAug/2007_000123.png")
    train0 = DatasetCatalog.get("ovseg_pascal5i_fold0_train")
    assert [(r["image_id"], r["class_id"]) for r in train0] == [
        ("2007_000033__6", 5), ("2008_000001__20", 19),
    ]
    train3 = DatasetCatalog.get("ovseg_pascal5i_fold3_train")
    assert [r["class_id"] for r in train3] == [0, 4, 5]
    meta = MetadataCatalog.get("ovseg_pascal5i_fold2_val")
    assert meta.novel_classes == [10, 11, 12, 13, 14] and len(meta.base_classes) == 15
    assert meta.fold == 2 and meta.fold_convention == "contiguous" and len(meta.stuff_classes) == 20
    assert meta.evaluator_type == "ovseg_fewshot" and meta.split_classes == meta.novel_classes
    assert (meta.num_episodes, meta.shot, meta.episode_sampling) == (1000, 0, "sequential")
    train_meta = MetadataCatalog.get("ovseg_pascal5i_fold2_train")
    assert train_meta.evaluator_type == "ovseg_fewshot"
    assert train_meta.split_classes == train_meta.base_classes


def test_coco20i_conventions_and_dedup(d2_root):
    (d2_root / "COCO2014/annotations").mkdir(parents=True)
    lists = "COCO2014/fewshot_splits"
    pair = "val2014/COCO_val2014_000000000042__{}"
    # class 1-based 1 (person), 5 (airplane), 2 (bicycle); duplicates across files are merged
    val_lines = {0: [pair.format(1), pair.format(5)], 1: [pair.format(2), pair.format(1)]}
    _write_lists(d2_root, lists, "val", val_lines)
    _write_lists(d2_root, lists, "trn", {})
    def pairs(convention: str, fold: int, split: str = "val") -> list[dict]:
        meta = MetadataCatalog.get(f"ovseg_coco20i{convention}_fold{fold}_{split}")
        return load_fewshot_records("x", COCO20I_LAYOUT, split, meta.split_classes)

    inter = pairs("", 0)
    assert [r["class_id"] for r in inter] == [0, 4]
    assert inter[0]["file_name"].endswith("COCO2014/val2014/COCO_val2014_000000000042.jpg")
    assert inter[0]["sem_seg_file_name"].endswith(
        "COCO2014/annotations/val2014/COCO_val2014_000000000042.png"
    )
    contiguous = pairs("_contiguous", 0)
    assert [r["class_id"] for r in contiguous] == [0, 4, 1]
    assert MetadataCatalog.get("ovseg_coco20i_fold1_val").fold_convention == "interleaved"
    contiguous1 = MetadataCatalog.get("ovseg_coco20i_contiguous_fold1_val")
    assert contiguous1.novel_classes == list(range(20, 40))
    with pytest.raises(DatasetNotPreparedError, match="no pairs"):
        DatasetCatalog.get("ovseg_coco20i_fold0_train")
    # HSNet draws a COCO episode's class among all 20 of the fold: each needs pairs
    with pytest.raises(DatasetNotPreparedError, match=r"'ovseg_coco20i_fold0_val': classes \[8, "):
        DatasetCatalog.get("ovseg_coco20i_fold0_val")


def test_malformed_pair_line(d2_root):
    (d2_root / "COCO2014/annotations").mkdir(parents=True)
    _write_lists(d2_root, "COCO2014/fewshot_splits", "val", {0: ["no_class_here"]})
    with pytest.raises(ValueError, match="no_class_here"):
        DatasetCatalog.get("ovseg_coco20i_fold0_val")
