"""The paper-oracle mode of FewShotEvaluator (SAZS's ground-truth selection), clearly labelled."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import ovseg_d2.data  # noqa: F401  (registers)

REPO = Path(__file__).resolve().parents[2]
NAME = "ovseg_pascal5i_fold0_val"
MASK = np.array([[0, 1, 1, 255], [0, 1, 0, 0]], np.uint8)  # class 1 (aeroplane), one void pixel


@pytest.fixture
def pascal_one_image(tmp_path, monkeypatch):
    voc = tmp_path / "VOCdevkit/VOC2012"
    (voc / "ImageSets/Segmentation").mkdir(parents=True)
    (voc / "ImageSets/Segmentation/val.txt").write_text("2007_000001\n")
    (voc / "ImageSets/Segmentation/train.txt").write_text("")
    for folder, array in (("SegmentationClassAug", MASK), ("JPEGImages", np.full((2, 4, 3), 90, np.uint8))):
        (voc / folder).mkdir()
        Image.fromarray(array).save(voc / folder / f"2007_000001.{'png' if folder.startswith('Seg') else 'jpg'}")
    sys.path.insert(0, str(REPO / "datasets"))
    try:
        importlib.import_module("prepare_fewshot_splits").main(["--root", str(tmp_path), "--dataset", "pascal"])
    finally:
        sys.path.remove(str(REPO / "datasets"))
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path))


def _run(evaluator, candidates: torch.Tensor | None):
    from detectron2.data import DatasetCatalog

    evaluator.reset()
    background = torch.stack([torch.ones(2, 4), torch.zeros(2, 4)])  # predicts no aeroplane at all
    for record in DatasetCatalog.get(NAME):
        output = {"sem_seg": background} if candidates is None else {"sem_seg": background, "candidates": candidates}
        evaluator.process([dict(record, height=2, width=4)], [output])
    return evaluator.evaluate()["sem_seg"]


def test_oracle_keeps_the_best_candidate_against_the_ground_truth(pascal_one_image):
    from ovseg_d2.evaluation import build_evaluator

    exact = torch.from_numpy(MASK == 1).long()
    candidates = torch.stack([torch.zeros(2, 4, dtype=torch.long), exact])
    oracle = _run(build_evaluator(NAME, distributed=False, fewshot_paper_oracle=True), candidates)
    assert set(oracle) >= {"oracle-mIoU", "oracle-FB-IoU", "oracle-IoU-aeroplane"} and "mIoU" not in oracle
    assert oracle["oracle-IoU-aeroplane"] == pytest.approx(100.0)
    assert oracle["oracle-mIoU"] == pytest.approx(20.0)  # 1 of the 5 fold classes, the others never queried
    model_only = _run(build_evaluator(NAME, distributed=False), None)
    assert model_only["IoU-aeroplane"] == 0.0


def test_candidates_and_oracle_must_go_together(pascal_one_image):
    from ovseg_d2.evaluation import build_evaluator

    with pytest.raises(ValueError, match="paper_oracle=True"):
        _run(build_evaluator(NAME, distributed=False), torch.zeros(1, 2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="needs 'candidates'"):
        _run(build_evaluator(NAME, distributed=False, fewshot_paper_oracle=True), None)
