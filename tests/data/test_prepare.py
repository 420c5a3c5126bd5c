"""Tests of `datasets/prepare_*.py` on tiny raw miniatures of each official layout.

Each script is run through its `main(argv)` on a miniature written into tmp_path; outputs are
checked value by value against the mapping tables, then a second run must write nothing, and an
empty root must fail with an error naming the archive to download. The last section loads the
prepared miniatures through the project's registrations (`ovseg_d2.data`).
"""
from __future__ import annotations

import importlib
import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import scipy.io
from PIL import Image

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"


# ----------------------------------------------------------------------------- helpers


def load_script(name: str) -> ModuleType:
    """Import `datasets/<name>.py` (not a package; the scripts import their siblings by name)."""
    if str(DATASETS_DIR) not in sys.path:
        sys.path.insert(0, str(DATASETS_DIR))
    return importlib.import_module(name)


def run(name: str, root: Path, *extra: str, workers: int = 1):
    return load_script(name).main(["--root", str(root), "--workers", str(workers), *extra])


def write_gray(path: Path, array: np.ndarray) -> Path:
    """Single-channel PNG, as ADE, SegmentationClassAug, stuffthingmaps, Cityscapes store them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def write_palette(path: Path, array: np.ndarray) -> Path:
    """Palette PNG whose indices are the labels (VOC SegmentationClass); the colours differ from the
    indices, so a script reading colours instead of indices fails the checks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="P")
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:, 0] = np.arange(256)[::-1]
    palette[:, 1] = 77
    img.putpalette(palette.ravel().tolist())
    img.save(path)
    return path


def write_rgb(path: Path, height: int = 24, width: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def rows(values: list[int], height: int = 24, width: int = 32) -> np.ndarray:
    """A small map whose rows cycle through `values` (so every value is present)."""
    return np.repeat(np.resize(np.asarray(values), height)[:, None], width, axis=1)


def mapped(raw: np.ndarray, table: dict[int, int], default: int) -> np.ndarray:
    """Expected output computed independently of the scripts' lookup tables."""
    out = np.full(raw.shape, default, dtype=np.int64)
    for k, v in table.items():
        out[raw == k] = v
    return out


def assert_rerun_writes_nothing(name: str, root: Path, *extra: str) -> None:
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    summary = run(name, root, *extra)
    assert summary["written"] == 0
    assert summary["skipped"] > 0
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before


def assert_missing_raw(name: str, root: Path, archive: str, *extra: str) -> None:
    common = load_script("_prepare_common")
    with pytest.raises(common.MissingRawDataError, match=archive.replace(".", r"\.")):
        run(name, root, *extra)


# ----------------------------------------------------------------------------- common plumbing


def test_atomic_write_leaves_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = load_script("_prepare_common")
    out = tmp_path / "x.png"

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(common.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        common.save_array(out, np.zeros((2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_png_refuses_16bit_values(tmp_path: Path) -> None:
    common = load_script("_prepare_common")
    with pytest.raises(TypeError, match="uint8"):
        common.save_array(tmp_path / "x.png", np.full((2, 2), 300, np.uint16))


def test_default_root_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    common = load_script("_prepare_common")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    assert common.parse_args("x", []).root == tmp_path
    monkeypatch.delenv("DETECTRON2_DATASETS")
    assert common.parse_args("x", []).root == Path("datasets")


def test_cli_reports_missing_archive(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(DATASETS_DIR / "prepare_voc.py"), "--root", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "VOCtrainval_11-May-2012.tar" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- ADE20K-150


def make_ade150(root: Path) -> dict[str, np.ndarray]:
    base = root / "ADEChallengeData2016"
    raws = {}
    for split, stem in (("training", "ADE_train_00000001"), ("validation", "ADE_val_00000001"),
                        ("validation", "ADE_val_00000002")):
        raws[f"{split}/{stem}"] = raw = rows([0, 1, 2, 75, 150])
        write_gray(base / "annotations" / split / f"{stem}.png", raw)
        write_rgb(base / "images" / split / f"{stem}.jpg")
    return raws


@pytest.mark.parametrize("workers", [1, 2])
def test_ade150(tmp_path: Path, workers: int) -> None:
    raws = make_ade150(tmp_path)
    summary = run("prepare_ade20k_150", tmp_path, workers=workers)
    assert summary["written"] == 3
    table = {0: 255, **{k: k - 1 for k in range(1, 151)}}
    for key, raw in raws.items():
        out = read(tmp_path / "ADEChallengeData2016/annotations_detectron2" / f"{key}.png")
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, mapped(raw, table, 255))
    assert_rerun_writes_nothing("prepare_ade20k_150", tmp_path)


def test_ade150_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_ade20k_150", tmp_path, "ADEChallengeData2016.zip")


# ----------------------------------------------------------------------------- ADE20K-847


def encode_ade(object_index: np.ndarray) -> np.ndarray:
    """ADE full-release `_seg.png` colours: R = (index // 256) * 10 (+ up to 9), G = index % 256."""
    seg = np.zeros((*object_index.shape, 3), dtype=np.uint8)
    seg[..., 0] = (object_index // 256) * 10 + 3  # the +3 checks that R is floor-divided by 10
    seg[..., 1] = object_index % 256
    seg[..., 2] = 7  # instance channel, ignored
    return seg


def make_ade847(root: Path) -> dict[str, np.ndarray]:
    """Two validation images (one small, one whose short side 520 > 512 must be resized) and one
    training image that must be skipped. Object indices: 2978 wall -> 0, 3148 adding machine ->
    846, 312 building -> 1, 5 (not one of the 847) -> 65535."""
    base = root / "ADE20K_2021_17_01"
    folder_val = "ADE20K_2021_17_01/images/ADE/validation/cultural/apse"
    folder_train = "ADE20K_2021_17_01/images/ADE/training/cultural/apse"
    cases = {
        "ADE_val_00000001": (folder_val, rows([2978, 3148, 312, 5])),
        "ADE_val_00000002": (folder_val, np.full((520, 600), 3148)),
        "ADE_train_00000001": (folder_train, rows([2978])),
    }
    for stem, (folder, index) in cases.items():
        write_rgb(root / folder / f"{stem}.jpg", *index.shape)
        Image.fromarray(encode_ade(index)).save(root / folder / f"{stem}_seg.png")
    base.mkdir(parents=True, exist_ok=True)
    with open(base / "index_ade20k.pkl", "wb") as f:
        pickle.dump({"folder": [c[0] for c in cases.values()],
                     "filename": [f"{s}.jpg" for s in cases], "objectnames": ["-"] * 3688}, f)
    return {stem: index for stem, (_, index) in cases.items()}


def test_ade847(tmp_path: Path) -> None:
    raws = make_ade847(tmp_path)
    summary = run("prepare_ade20k_847", tmp_path)
    assert summary["written"] == 4  # 2 validation images x (image, label)
    base = tmp_path / "ADE20K_2021_17_01"
    label = read(base / "annotations_detectron2/validation/ADE_val_00000001.tif")
    assert label.dtype == np.uint16
    np.testing.assert_array_equal(
        label, mapped(raws["ADE_val_00000001"], {2978: 0, 3148: 846, 312: 1}, 65535))
    assert read(base / "images_detectron2/validation/ADE_val_00000001.jpg").shape == (24, 32, 3)
    # short side 520 > 512 -> 512 x round(600 / 520 * 512) = 512 x 591, label resized alike
    big = read(base / "annotations_detectron2/validation/ADE_val_00000002.tif")
    assert big.shape == (512, 591) and set(np.unique(big)) == {846}
    assert read(base / "images_detectron2/validation/ADE_val_00000002.jpg").shape == (512, 591, 3)
    assert not (base / "annotations_detectron2/training").exists()
    assert_rerun_writes_nothing("prepare_ade20k_847", tmp_path)


def test_ade847_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_ade20k_847", tmp_path, "ADE20K_2021_17_01.zip")


# ----------------------------------------------------------------------------- PASCAL-Context


def rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode("ascii")}


def make_pc59(root: Path) -> dict[str, np.ndarray]:
    """trainval_merged.json with two val images and one train image. Category ids (full label
    space): 2 aeroplane (pc59 0), 458 wood (pc59 58), 5 (not among the 59). The second annotation
    overlaps the first and must win (painting order)."""
    voc = root / "VOCdevkit/VOC2010"
    h, w = 24, 32
    a = np.zeros((h, w), bool)
    a[:12] = True
    b = np.zeros((h, w), bool)
    b[8:16] = True
    c = np.zeros((h, w), bool)
    c[20:] = True
    images, annos, expected = [], [], {}
    for image_id, (name, phase) in enumerate(
        [("2008_000001", "val"), ("2008_000002", "val"), ("2008_000003", "train")]
    ):
        images.append({"image_id": image_id, "file_name": f"{name}.jpg", "phase": phase,
                       "height": h, "width": w})
        write_rgb(voc / "JPEGImages" / f"{name}.jpg")
        for cat, m in ((2, a), (458, b), (5, c)):
            annos.append({"image_id": image_id, "category_id": cat, "segmentation": rle(m)})
        full = np.zeros((h, w), np.int64)
        full[a], full[b], full[c] = 2, 458, 5
        expected[name] = full
    voc.mkdir(parents=True, exist_ok=True)
    (voc / "trainval_merged.json").write_text(json.dumps(
        {"images": images, "annos_segmentation": annos, "categories": []}))
    return expected


def test_pascal_context_59_60(tmp_path: Path) -> None:
    full = make_pc59(tmp_path)
    summary = run("prepare_pascal_context_59", tmp_path)
    assert summary["written"] == 2 * 2 + 1
    out = tmp_path / "VOCdevkit/VOC2010/annotations_detectron2"
    for name in ("2008_000001", "2008_000002"):
        pc59, pc60 = read(out / "pc59_val" / f"{name}.png"), read(out / "pc60_val" / f"{name}.png")
        assert pc59.dtype == pc60.dtype == np.uint8
        np.testing.assert_array_equal(pc59, mapped(full[name], {2: 0, 458: 58}, 255))
        np.testing.assert_array_equal(pc60, mapped(full[name], {2: 1, 458: 59}, 0))
    np.testing.assert_array_equal(read(out / "pc59_train/2008_000003.png"),
                                  mapped(full["2008_000003"], {2: 0, 458: 58}, 255))
    assert sorted(p.stem for p in (out / "pc59_val").iterdir()) == ["2008_000001", "2008_000002"]
    assert not (out / "pc60_train").exists()
    assert_rerun_writes_nothing("prepare_pascal_context_59", tmp_path)


def test_pascal_context_59_missing(tmp_path: Path) -> None:
    (tmp_path / "VOCdevkit/VOC2010").mkdir(parents=True)
    assert_missing_raw("prepare_pascal_context_59", tmp_path, "trainval_merged.json")


def make_pc459(root: Path) -> dict[str, np.ndarray]:
    voc = root / "VOCdevkit/VOC2010"
    maps = {"2008_000001": rows([1, 256, 300, 459]).astype(np.uint16),
            "2008_000002": rows([0, 1, 2]).astype(np.uint16)}
    for name, label_map in maps.items():
        (voc / "trainval").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(voc / "trainval" / f"{name}.mat", {"LabelMap": label_map})
        write_rgb(voc / "JPEGImages" / f"{name}.jpg")
    # one listed id without a .mat file: skipped and counted, as upstream
    (voc / "pascalcontext_val.txt").write_text("2008_000001\n2008_000002\n2008_000404\n")
    return maps


def test_pascal_context_459(tmp_path: Path) -> None:
    maps = make_pc459(tmp_path)
    summary = run("prepare_pascal_context_459", tmp_path)
    assert (summary["written"], summary["missing"]) == (2, 1)
    out = tmp_path / "VOCdevkit/VOC2010/annotations_detectron2/pc459_val"
    for name, label_map in maps.items():
        label = read(out / f"{name}.tif")
        assert label.dtype == np.uint16
        expected = np.where(label_map == 0, 65535, label_map.astype(int) - 1)
        np.testing.assert_array_equal(label, expected)
    assert read(out / "2008_000001.tif").max() == 458  # > 255 survives
    assert_rerun_writes_nothing("prepare_pascal_context_459", tmp_path)


def test_pascal_context_459_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_pascal_context_459", tmp_path, "trainval.tar.gz")
    (tmp_path / "VOCdevkit/VOC2010/trainval").mkdir(parents=True)
    assert_missing_raw("prepare_pascal_context_459", tmp_path, "pascalcontext_val.txt")


# ----------------------------------------------------------------------------- PASCAL VOC

VOC20 = {0: 255, **{k: k - 1 for k in range(1, 21)}}
VOC20B = {0: 20, **{k: k - 1 for k in range(1, 21)}}
VOC21 = {k: k for k in range(21)}


def make_voc(root: Path, aug: bool) -> dict[str, np.ndarray]:
    """val: a mask with 0/1/15/20/255 and one with only background + void (its VOC-20 map is all
    ignore); train: one mask. With `aug`, SegmentationClassAug (grayscale) + a trainaug list
    naming an extra image; without, official palette PNGs."""
    voc = root / "VOCdevkit/VOC2012"
    masks = {"2007_000001": rows([0, 1, 15, 20, 255]), "2007_000002": rows([0, 255]),
             "2007_000003": rows([3, 4]), "2011_000004": rows([7, 0])}
    sets = voc / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text("2007_000001\n2007_000002\n")
    (sets / "train.txt").write_text("2007_000003\n")
    for name, mask in masks.items():
        write_rgb(voc / "JPEGImages" / f"{name}.jpg")
        if aug:
            write_gray(voc / "SegmentationClassAug" / f"{name}.png", mask)
        elif name != "2011_000004":
            write_palette(voc / "SegmentationClass" / f"{name}.png", mask)
    if aug:
        lists = voc / "ImageSets/SegmentationAug"
        lists.mkdir(parents=True)
        (lists / "train_aug.txt").write_text(
            "/JPEGImages/2007_000003.jpg /SegmentationClassAug/2007_000003.png\n"
            "/JPEGImages/2011_000004.jpg /SegmentationClassAug/2011_000004.png\n")
    return masks


@pytest.mark.parametrize("aug", [False, True], ids=["palette", "aug"])
def test_voc(tmp_path: Path, aug: bool) -> None:
    masks = make_voc(tmp_path, aug)
    summary = run("prepare_voc", tmp_path)
    voc = tmp_path / "VOCdevkit/VOC2012"
    for name in ("2007_000001", "2007_000002"):
        np.testing.assert_array_equal(read(voc / f"annotations_detectron2_bg/val/{name}.png"),
                                      mapped(masks[name], VOC20B, 255))
        np.testing.assert_array_equal(read(voc / f"annotations_detectron2_21/val/{name}.png"),
                                      mapped(masks[name], VOC21, 255))
    np.testing.assert_array_equal(read(voc / "annotations_detectron2/val/2007_000001.png"),
                                  mapped(masks["2007_000001"], VOC20, 255))
    assert not (voc / "annotations_detectron2/val/2007_000002.png").exists()  # all ignore
    train = sorted(p.stem for p in (voc / "annotations_detectron2/train").iterdir())
    assert train == (["2007_000003", "2011_000004"] if aug else ["2007_000003"])
    np.testing.assert_array_equal(read(voc / "annotations_detectron2/train/2007_000003.png"),
                                  mapped(masks["2007_000003"], VOC20, 255))
    assert summary["dropped"] == 1
    assert_rerun_writes_nothing("prepare_voc", tmp_path)


def test_voc_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_voc", tmp_path, "VOCtrainval_11-May-2012.tar")


# ----------------------------------------------------------------------------- COCO-Stuff / Object


def make_coco_stuff(root: Path) -> None:
    """A COCO-Stuff 2017 miniature (train + val image): person, toothbrush, an unused id, banner, wood, unlabelled."""
    base = root / "coco-stuff"
    for split in ("train2017", "val2017"):
        write_gray(base / "annotations" / split / "000000000139.png", rows([0, 89, 11, 91, 181, 255]))
        write_rgb(base / "images" / split / "000000000139.jpg")


def test_coco_stuff_and_object(tmp_path: Path) -> None:
    base = tmp_path / "coco-stuff"
    # 0 person, 89 toothbrush, 11 (unused COCO id 12), 91 banner, 181 wood, 255 unlabelled
    raw = rows([0, 89, 11, 91, 181, 255])
    for split in ("train2017", "val2017"):
        write_gray(base / "annotations" / split / "000000000139.png", raw)
        write_rgb(base / "images" / split / "000000000139.jpg")
    write_gray(base / "annotations/val2017/000000000139_labelTrainIds.png", raw)  # mmseg output
    summary = run("prepare_coco_stuff", tmp_path)
    assert summary["written"] == 4
    for split in ("train2017", "val2017"):
        stuff = read(base / "annotations_detectron2" / split / "000000000139.png")
        obj = read(base / "annotations_detectron2_object" / split / "000000000139.png")
        np.testing.assert_array_equal(stuff, mapped(raw, {0: 0, 89: 79, 91: 80, 181: 170}, 255))
        np.testing.assert_array_equal(obj, mapped(raw, {0: 1, 89: 80}, 0))
    coco = load_script("prepare_coco_stuff")
    assert sorted(set(coco.STUFF171_LUT.tolist()) - {255}) == list(range(171))
    assert sorted(set(coco.OBJECT_LUT.tolist())) == list(range(81))
    assert_rerun_writes_nothing("prepare_coco_stuff", tmp_path)


def test_coco_stuff_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_coco_stuff", tmp_path, "stuffthingmaps_trainval2017.zip")


# ----------------------------------------------------------------------------- Cityscapes


def make_cityscapes(root: Path) -> None:
    """A Cityscapes val miniature (one frankfurt image) in the official gtFine layout."""
    base = root / "cityscapes"
    stem = "frankfurt_000000_000019"
    write_gray(base / f"gtFine/val/frankfurt/{stem}_gtFine_labelIds.png", rows([7, 33, 0, 6, 24, 26, 34]))
    write_rgb(base / f"leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png")
    (base / "gtFine/train").mkdir(exist_ok=True)


def test_cityscapes(tmp_path: Path) -> None:
    base = tmp_path / "cityscapes"
    raw = rows([7, 33, 0, 6, 24, 26, 34])
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        stem = f"{city}_000000_000019"
        write_gray(base / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", raw)
        write_rgb(base / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
    summary = run("prepare_cityscapes", tmp_path)
    assert summary["written"] == 2
    out = read(base / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelTrainIds.png")
    np.testing.assert_array_equal(out, mapped(raw, {7: 0, 33: 18, 24: 11, 26: 13}, 255))
    lut = load_script("prepare_cityscapes").TRAIN_ID_LUT
    assert sorted(set(lut.tolist()) - {255}) == list(range(19))
    assert_rerun_writes_nothing("prepare_cityscapes", tmp_path)


def test_cityscapes_missing(tmp_path: Path) -> None:
    assert_missing_raw("prepare_cityscapes", tmp_path, "gtFine_trainvaltest.zip")


# ----------------------------------------------------------------------------- few-shot lists


def make_fewshot(root: Path) -> None:
    """PASCAL (SegmentationClassAug, trainaug list) and COCO2014 per-image masks."""
    make_voc(root, aug=True)
    voc = root / "VOCdevkit/VOC2012"
    tiny = rows([0, 6])
    tiny[0, 0] = 20  # class 20 on one pixel: dropped with --min-area 2
    write_gray(voc / "SegmentationClassAug/2007_000002.png", tiny)
    coco = root / "COCO2014"
    for split, cls in (("train2014", [1, 2, 80, 255]), ("val2014", [0, 5, 4])):
        name = f"COCO_{split}_000000000009"
        write_gray(coco / "annotations" / split / f"{name}.png", rows(cls))
        write_rgb(coco / split / f"{name}.jpg")


def fold_files(base: Path) -> dict[str, list[str]]:
    return {f"{s}/{f}": (base / s / f"fold{f}.txt").read_text().split()
            for s in ("trn", "val") for f in range(4)}


def test_fewshot_splits(tmp_path: Path) -> None:
    make_fewshot(tmp_path)
    summary = run("prepare_fewshot_splits", tmp_path, "--min-area", "2")
    assert summary["written"] == 16
    pascal = fold_files(tmp_path / "VOCdevkit/VOC2012/fewshot_splits")
    assert pascal == {
        "trn/0": ["2007_000003__03", "2007_000003__04"], "trn/1": ["2011_000004__07"],
        "trn/2": [], "trn/3": [],
        # 2007_000001: classes 1, 15, 20; 2007_000002: class 6 (its single-pixel 20 is dropped)
        "val/0": ["2007_000001__01"], "val/1": ["2007_000002__06"],
        "val/2": ["2007_000001__15"], "val/3": ["2007_000001__20"],
    }
    coco = fold_files(tmp_path / "COCO2014/fewshot_splits")
    t, v = "train2014/COCO_train2014_000000000009", "val2014/COCO_val2014_000000000009"
    assert coco == {  # interleaved folds: class c in fold (c - 1) % 4
        "trn/0": [f"{t}__01"], "trn/1": [f"{t}__02"], "trn/2": [], "trn/3": [f"{t}__80"],
        "val/0": [f"{v}__05"], "val/1": [], "val/2": [], "val/3": [f"{v}__04"],
    }
    assert_rerun_writes_nothing("prepare_fewshot_splits", tmp_path)


def test_fewshot_from_hsnet_lists(tmp_path: Path) -> None:
    splits = tmp_path / "hsnet/data/splits"
    for split in ("trn", "val"):
        for k in range(4):
            (splits / "pascal" / split).mkdir(parents=True, exist_ok=True)
            line = f"2007_00000{k}__{5 * k + 1:02d}\n"
            (splits / "pascal" / split / f"fold{k}.txt").write_text(line)
            (splits / "coco" / split).mkdir(parents=True, exist_ok=True)
            per_class = {k: [f"{split}2014/COCO_{split}2014_00000000000{k}.jpg"], 79: []}
            with open(splits / "coco" / split / f"fold{k}.pkl", "wb") as f:
                pickle.dump(per_class, f)
    summary = run("prepare_fewshot_splits", tmp_path, "--hsnet-splits", str(splits))
    assert summary["written"] == 16
    pascal = fold_files(tmp_path / "VOCdevkit/VOC2012/fewshot_splits")
    assert pascal["val/2"] == ["2007_000002__11"] and pascal["trn/0"] == ["2007_000000__01"]
    coco = fold_files(tmp_path / "COCO2014/fewshot_splits")
    assert coco["trn/3"] == ["trn2014/COCO_trn2014_000000000003__04"]
    assert_rerun_writes_nothing("prepare_fewshot_splits", tmp_path, "--hsnet-splits", str(splits))


def test_fewshot_missing(tmp_path: Path) -> None:
    make_voc(tmp_path, aug=False)
    assert_missing_raw("prepare_fewshot_splits", tmp_path, "SegmentationClassAug.zip",
                       "--dataset", "pascal")
    assert_missing_raw("prepare_fewshot_splits", tmp_path, "train2014.zip", "--dataset", "coco")


# ----------------------------------------------------------------------------- registrations
# The prepared miniatures, loaded through ovseg_d2.data's registrations (DatasetCatalog).


@pytest.fixture
def catalogs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    pytest.importorskip("ovseg_d2.data.datasets.builtin")
    from detectron2.data import DatasetCatalog, MetadataCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return DatasetCatalog, MetadataCatalog


@pytest.mark.parametrize(
    "name, records, num_classes, ignore",
    [("ovseg_ade150_val", 2, 150, 255), ("ovseg_ade150_train", 1, 150, 255)],
)
def test_registered_ade150(catalogs, tmp_path, name, records, num_classes, ignore) -> None:
    make_ade150(tmp_path)
    run("prepare_ade20k_150", tmp_path)
    check_registration(catalogs, name, records, num_classes, ignore)


def check_registration(catalogs, name: str, records: int, num_classes: int, ignore: int) -> list:
    dataset_catalog, metadata_catalog = catalogs
    dicts = dataset_catalog.get(name)
    meta = metadata_catalog.get(name)
    assert len(dicts) == records
    assert len(meta.stuff_classes) == num_classes and meta.ignore_label == ignore
    for d in dicts:
        assert Path(d["file_name"]).is_file() and Path(d["sem_seg_file_name"]).is_file()
    return dicts


def test_registered_ade847(catalogs, tmp_path) -> None:
    make_ade847(tmp_path)
    run("prepare_ade20k_847", tmp_path)
    check_registration(catalogs, "ovseg_ade847_val", 2, 847, 65535)


def test_registered_pascal_context(catalogs, tmp_path) -> None:
    make_pc59(tmp_path)
    make_pc459(tmp_path)
    run("prepare_pascal_context_59", tmp_path)
    run("prepare_pascal_context_459", tmp_path)
    check_registration(catalogs, "ovseg_pc59_val", 2, 59, 255)
    check_registration(catalogs, "ovseg_pc59_train", 1, 59, 255)
    check_registration(catalogs, "ovseg_pc60_val", 2, 60, 255)
    check_registration(catalogs, "ovseg_pc459_val", 2, 459, 65535)


def test_registered_voc(catalogs, tmp_path) -> None:
    make_voc(tmp_path, aug=True)
    run("prepare_voc", tmp_path)
    check_registration(catalogs, "ovseg_voc20_val", 1, 20, 255)  # the all-ignore map is dropped
    check_registration(catalogs, "ovseg_voc20b_val", 2, 21, 255)
    check_registration(catalogs, "ovseg_voc21_val", 2, 21, 255)
    check_registration(catalogs, "ovseg_voc20_train", 2, 20, 255)


def test_registered_coco(catalogs, tmp_path) -> None:
    base = tmp_path / "coco-stuff"
    for split in ("train2017", "val2017"):
        write_gray(base / "annotations" / split / "000000000139.png", rows([0, 91, 255]))
        write_rgb(base / "images" / split / "000000000139.jpg")
    run("prepare_coco_stuff", tmp_path)
    check_registration(catalogs, "ovseg_coco_stuff171_val", 1, 171, 255)
    check_registration(catalogs, "ovseg_coco_stuff171_train", 1, 171, 255)
    check_registration(catalogs, "ovseg_coco_object_val", 1, 81, 255)


def test_registered_cityscapes(catalogs, tmp_path) -> None:
    base = tmp_path / "cityscapes"
    for stem in ("frankfurt_000000_000019", "frankfurt_000000_000020"):
        write_gray(base / f"gtFine/val/frankfurt/{stem}_gtFine_labelIds.png", rows([7, 0]))
        write_gray(base / f"gtFine/val/frankfurt/{stem}_gtFine_color.png", rows([7, 0]))
        write_rgb(base / f"leftImg8bit/val/frankfurt/{stem}_leftImg8bit.png")
    (base / "gtFine/train").mkdir()
    run("prepare_cityscapes", tmp_path)
    dicts = check_registration(catalogs, "ovseg_cityscapes19_val", 2, 19, 255)
    assert all(d["sem_seg_file_name"].endswith("_gtFine_labelTrainIds.png") for d in dicts)


def test_registered_fewshot(catalogs, tmp_path) -> None:
    make_fewshot(tmp_path)
    run("prepare_fewshot_splits", tmp_path)
    dataset_catalog, _ = catalogs
    val0 = dataset_catalog.get("ovseg_pascal5i_fold0_val")  # 1,000 episodes of the one val pair
    assert len(val0) == 1000
    assert {(Path(d["file_name"]).name, d["class_id"]) for d in val0} == {("2007_000001.jpg", 0)}
    train3 = dataset_catalog.get("ovseg_pascal5i_fold3_train")  # classes of folds 0-2
    assert {d["class_id"] for d in train3} == {2, 3, 6}
    from ovseg_d2.data.datasets import COCO20I_LAYOUT, load_fewshot_records

    coco_val0 = load_fewshot_records("coco", COCO20I_LAYOUT, "val", range(0, 80, 4))  # the pairs
    assert [(Path(d["file_name"]).name, d["class_id"]) for d in coco_val0] == [
        ("COCO_val2014_000000000009.jpg", 4)]
    with pytest.raises(FileNotFoundError, match="have no pairs"):  # episodes draw from all 20
        dataset_catalog.get("ovseg_coco20i_fold0_val")
    for d in dataset_catalog.get("ovseg_coco20i_fold1_train"):
        assert Path(d["file_name"]).is_file() and Path(d["sem_seg_file_name"]).is_file()
