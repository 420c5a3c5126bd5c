"""Few-shot folds end to end on generated miniatures in the registered on-disk layout: list files
written by `datasets/prepare_fewshot_splits.py`, HSNet's episode draws, the binary mapper, and
FewShotEvaluator's mIoU / FB-IoU against hand-computed counts."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

import ovseg_d2.data  # noqa: F401  (registers)
from ovseg_d2.data.datasets import COCO20I_LAYOUT, register_fewshot_datasets, sample_episodes
from ovseg_d2.data.mappers import FewShotDatasetMapper
from ovseg_d2.evaluation import FewShotEvaluator, build_evaluator

DATASETS_DIR = Path(__file__).resolve().parents[2] / "datasets"
VOC = "VOCdevkit/VOC2012"

# PASCAL-5i fold 3 = 1-based classes 16..20 (pottedplant .. tvmonitor). Two val images (2 x 4):
# A holds classes 16 and 20, a class of another fold (1) and a void pixel; B holds class 20.
MASK_A = np.array([[16, 16, 20, 255], [0, 1, 20, 20]], np.uint8)
MASK_B = np.array([[20, 20, 0, 0], [0, 0, 0, 255]], np.uint8)
# Foreground predicted per (image, 1-based class) pair.
PRED_FG = {
    ("A", 16): [[1, 0, 0, 1], [0, 0, 0, 0]],  # 1 of 2 fg pixels, 1 false fg on void
    ("A", 20): [[0, 0, 1, 1], [0, 0, 1, 0]],  # 2 of 3 fg pixels, 1 false fg on void
    ("B", 20): [[1, 0, 0, 0], [0, 0, 0, 0]],  # 1 of 2 fg pixels
}
# HSNet's counts per episode, void excluded: (inter_bg, union_bg, inter_fg, union_fg); worked out
# pixel by pixel from the masks above. With SAZS's void_in_union the predictions on void count too.
AREAS = {("A", 16): (5, 6, 1, 2), ("A", 20): (4, 5, 2, 3), ("B", 20): (5, 6, 1, 2)}
AREAS_VOID = {("A", 16): (5, 6, 1, 3), ("A", 20): (4, 5, 2, 4), ("B", 20): (5, 7, 1, 2)}
IDS = {"A": "2007_000001", "B": "2007_000002"}
ONE_PAIR = {"file_name": "a.jpg", "sem_seg_file_name": "a.png", "image_id": "a__1", "class_id": 0}


def load_script(name: str):
    """Import `datasets/<name>.py` (not a package; the scripts import their siblings by name)."""
    if str(DATASETS_DIR) not in sys.path:
        sys.path.insert(0, str(DATASETS_DIR))
    return importlib.import_module(name)


def write(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def pascal_mini(tmp_path, monkeypatch) -> Path:
    """VOC2012 with SegmentationClassAug and the fold lists written by the preparation script."""
    voc = tmp_path / VOC
    sets = voc / "ImageSets/Segmentation"
    sets.mkdir(parents=True)
    (sets / "val.txt").write_text(f"{IDS['A']}\n{IDS['B']}\n")
    (sets / "train.txt").write_text("2007_000009\n")
    masks = {IDS["A"]: MASK_A, IDS["B"]: MASK_B, "2007_000009": np.full((2, 4), 3, np.uint8)}
    for image_id, mask in masks.items():
        write(voc / "SegmentationClassAug" / f"{image_id}.png", mask)
        write(voc / "JPEGImages" / f"{image_id}.jpg", np.full((2, 4, 3), 100, np.uint8))
    load_script("prepare_fewshot_splits").main(["--root", str(tmp_path), "--dataset", "pascal"])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    return tmp_path


def scores_for(image: str, cls: int) -> torch.Tensor:
    """(2, H, W) scores whose argmax is PRED_FG, with a bg/fg tie on a background pixel."""
    fg = torch.tensor(PRED_FG[(image, cls)], dtype=torch.float32)
    scores = torch.stack([1 - fg, fg])
    scores[:, 1, 0] = 0.5  # tie -> background (PRED_FG is 0 there)
    return scores


def evaluate(name: str, **options) -> dict[str, float]:
    evaluator = build_evaluator(name, distributed=False, **options)
    evaluator.reset()
    for record in DatasetCatalog.get(name):
        image = "A" if IDS["A"] in record["file_name"] else "B"
        output = {"sem_seg": scores_for(image, record["class_id"] + 1)}
        evaluator.process([dict(record, height=2, width=4)], [output])
    return evaluator.evaluate()["sem_seg"]


def expected(areas: dict, counts: dict) -> dict[str, float]:
    """mIoU and FB-IoU from per-episode counts times the number of episodes of each pair."""
    sums: dict[int, np.ndarray] = {}
    for pair, n in counts.items():
        sums[pair[1]] = sums.get(pair[1], np.zeros(4)) + n * np.array(areas[pair])
    fg_iou = {c: s[2] / s[3] for c, s in sums.items()}
    total = sum(sums.values())
    return {
        "mIoU": 100 * sum(fg_iou.values()) / 5,  # 5 fold classes; 17, 18, 19 never queried -> 0
        "FB-IoU": 100 * (total[0] / total[1] + total[2] / total[3]) / 2,
        "IoU-pottedplant": 100 * fg_iou[16],
        "IoU-tvmonitor": 100 * fg_iou[20],
    }


def test_pascal5i_fold3_val_is_scored_per_episode(pascal_mini):
    """The observed crash: `ovseg_pascal5i_fold3_val` went to the semantic evaluator (mask value
    20 >= K). Now 1,000 episodes walk the val list (334/333/333) and are scored 1-way."""
    name = "ovseg_pascal5i_fold3_val"
    assert MetadataCatalog.get(name).evaluator_type == "ovseg_fewshot"
    episodes = DatasetCatalog.get(name)
    assert len(episodes) == 1000 and [e["episode_id"] for e in episodes] == list(range(1000))
    order = [f"{IDS['A']}__16", f"{IDS['A']}__20", f"{IDS['B']}__20"]
    assert [e["image_id"] for e in episodes[:4]] == order + order[:1]
    assert [e["class_id"] for e in episodes[:3]] == [15, 19, 19]
    counts = {("A", 16): 334, ("A", 20): 333, ("B", 20): 333}

    res = evaluate(name)
    ref = expected(AREAS, counts)
    # 1 fg pixel of 2 for class 16; (2 + 1) * 333 of (3 + 2) * 333 for class 20
    assert ref["IoU-pottedplant"] == pytest.approx(50.0)
    assert ref["IoU-tvmonitor"] == pytest.approx(60.0)
    assert ref["mIoU"] == pytest.approx(22.0)
    for key, value in ref.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key
    for absent in ("sofa", "train", "sheep"):
        assert res[f"IoU-{absent}"] == 0.0
    assert "IoU-aeroplane" not in res  # not a fold-3 class

    void = evaluate(name, fewshot_void_in_union=True)
    ref_void = expected(AREAS_VOID, counts)
    assert ref_void["mIoU"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 5)
    for key, value in ref_void.items():
        assert void[key] == pytest.approx(value, abs=1e-9), key


def test_every_episode_must_be_evaluated(pascal_mini):
    name = "ovseg_pascal5i_fold3_val"
    evaluator = FewShotEvaluator(name, distributed=False)
    record = DatasetCatalog.get(name)[0]
    evaluator.process([record], [{"sem_seg": scores_for("A", 16)}])
    with pytest.raises(RuntimeError, match="1 of 1000 episodes"):
        evaluator.evaluate()


def test_prediction_format_is_checked(pascal_mini):
    name = "ovseg_pascal5i_fold3_val"
    record = DatasetCatalog.get(name)[0]
    evaluator = FewShotEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match=r"\(2, H, W\)"):
        evaluator.process([record], [{"sem_seg": torch.zeros(20, 2, 4)}])


def test_binary_mapper_query_and_supports(pascal_mini):
    pairs = DatasetCatalog.get("ovseg_pascal5i_fold3_val")[1:3]  # (A, 20), (B, 20)
    episode = sample_episodes(pairs, [19], num_episodes=1, shot=1)[0]
    assert [s["image_id"] for s in episode["support"]] == [f"{IDS['B']}__20"]

    test_mapper = FewShotDatasetMapper(is_train=False, augmentations=[])
    mapped = test_mapper(episode)
    assert "sem_seg" not in mapped and mapped["class_id"] == 19
    support = mapped["support"][0]
    assert support["image"].shape == (3, 2, 4)
    np.testing.assert_array_equal(support["sem_seg"].numpy(), [[1, 1, 0, 0], [0, 0, 0, 255]])

    train = FewShotDatasetMapper(is_train=True, augmentations=[])(episode)
    # class 20 -> 1; background, class 1 and class 16 -> 0; void stays 255
    np.testing.assert_array_equal(train["sem_seg"].numpy(), [[0, 0, 1, 255], [0, 0, 1, 1]])


def test_support_sampling_follows_hsnet():
    """HSNet draws each support with `np.random.choice(images of the class, 1, replace=False)`
    from the global RNG and redraws the query; a reference written that way must agree."""
    pairs = [
        {"file_name": f"{i}.jpg", "sem_seg_file_name": f"{i}.png", "image_id": f"{i}__{c + 1}",
         "class_id": c}
        for i, c in [(0, 3), (1, 3), (2, 3), (3, 7), (4, 7), (1, 7)]
    ]
    episodes = sample_episodes(pairs, [3, 7], num_episodes=9, shot=2, seed=5)

    np.random.seed(5)
    by_class = {3: ["0.jpg", "1.jpg", "2.jpg"], 7: ["3.jpg", "4.jpg", "1.jpg"]}
    for i, episode in enumerate(episodes):
        query = pairs[i % len(pairs)]
        assert episode["file_name"] == query["file_name"]
        supports = []
        while len(supports) < 2:
            name = np.random.choice(by_class[query["class_id"]], 1, replace=False)[0]
            if name != query["file_name"]:
                supports.append(name)
        assert [s["file_name"] for s in episode["support"]] == supports


def test_support_needs_another_image():
    pairs = [ONE_PAIR]
    with pytest.raises(ValueError, match="no image other than the query a.jpg"):
        sample_episodes(pairs, [0], num_episodes=1, shot=1)


def test_coco20i_episodes_follow_hsnet_class_uniform_draws(tmp_path, monkeypatch):
    """COCO-20i val episodes: a class uniformly over the fold's classes (in fold order), then an
    image of that class, from `np.random.seed(seed)`; compared with a reference of HSNet's calls."""
    fold0 = list(range(1, 81, 4))  # interleaved fold 0, 1-based: 1, 5, ..., 77
    contents = {"000001": fold0[:10], "000002": fold0[10:], "000003": [1, 41, 3]}
    coco = tmp_path / "COCO2014"
    for split in ("train2014", "val2014"):
        for stem, classes in contents.items():
            mask = np.zeros((2, 16), np.uint8)
            mask[0, : len(classes)] = classes
            write(coco / "annotations" / split / f"COCO_{split}_{stem}.png", mask)
    load_script("prepare_fewshot_splits").main(["--root", str(tmp_path), "--dataset", "coco"])
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))
    names = register_fewshot_datasets(
        "coco20i", COCO20I_LAYOUT, prefix="_test_coco20i", num_episodes=40, seed=3
    )
    try:
        episodes = DatasetCatalog.get("_test_coco20i_fold0_val")
        assert MetadataCatalog.get("_test_coco20i_fold0_val").episode_sampling == "class_uniform"
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    # HSNet's class-wise lists: the images holding the class, in list (= file name) order
    by_class = {c - 1: [s for s in sorted(contents) if c in contents[s]] for c in fold0}
    np.random.seed(3)
    for episode in episodes:
        cls = np.random.choice([c - 1 for c in fold0], 1, replace=False)[0]
        stem = np.random.choice(by_class[cls], 1, replace=False)[0]
        assert episode["class_id"] == cls
        assert episode["file_name"].endswith(f"COCO2014/val2014/COCO_val2014_{stem}.jpg")
    assert len({e["class_id"] for e in episodes}) > 5  # the draws do vary


def test_class_uniform_needs_pairs_of_every_class():
    pairs = [ONE_PAIR]
    with pytest.raises(ValueError, match=r"classes \[4\] have no pairs"):
        sample_episodes(pairs, [0, 4], num_episodes=1, sampling="class_uniform")
