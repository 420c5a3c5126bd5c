"""The stages of the main job `make demo` (tools/run_demo.py -> ovseg_d2/data/toy/demo.py) on a tiny
96x96 toy world with a randomly initialised tiny CLIP (configs/toy/tiny_clip.json, the demo's CLIP):

- the training-free dense baseline and the trained CAT-Seg report exactly the metrics of their own
  predictions on toy_val, recomputed here from a confusion matrix (detectron2's convention: a class
  counts where it has ground truth);
- CAT-Seg trains without evaluating during training (EvalHook would duplicate the reported
  evaluation), and a second call reuses the cached model_final.pth;
- both stages record in run.json what rebuilds their model (the records tools/web_demo.py lists);
- the overlays are image | prediction | ground truth | legend mosaics, upscaled 4x.

The datasets are found as in tools/run_demo.py: the default `toy_*` registration, resolved under
$DETECTRON2_DATASETS/toy_world when a dataset is loaded; the configs work from any directory.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from torch import nn

from ovseg_d2.data.mappers import read_image, read_sem_seg
from ovseg_d2.data.toy import UNSEEN_CLASS_IDS
from ovseg_d2.data.toy.demo import (
    CATSEG_CONFIG,
    baseline_config,
    evaluate_baseline,
    train_and_evaluate_catseg,
    write_overlays,
)
from ovseg_d2.engine import build_model, load_config
from tests.toy.demo_world import REPO, WORLD, demo_environment, write_demo_world

METRIC_KEYS = {"mIoU", "mIoU-seen", "mIoU-unseen", "hIoU", "pACC"}
MAX_ITER = 2


@torch.no_grad()
def _metrics_of_predictions(model: nn.Module, mapper_cfg) -> dict[str, float]:
    """mIoU, seen / unseen mIoU, hIoU and pixel accuracy of `model` on toy_val, from a numpy
    confusion matrix of its argmax predictions (ignore pixels excluded; a class's IoU counts where the
    class has ground truth)."""
    meta = MetadataCatalog.get("toy_val")
    num_classes = len(meta.stuff_classes)
    model.eval().set_vocabulary(meta.get("prompt_classes", meta.stuff_classes))
    mapper = instantiate(mapper_cfg)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for record in DatasetCatalog.get("toy_val"):
        prediction = model([mapper(dict(record))])[0]["sem_seg"].argmax(0).numpy().ravel()
        gt = read_sem_seg(record["sem_seg_file_name"]).ravel()
        keep = gt != meta.ignore_label
        np.add.at(confusion, (gt[keep], prediction[keep]), 1)
    tp = np.diag(confusion)
    has_gt = confusion.sum(1) > 0
    iou = tp / np.maximum(confusion.sum(1) + confusion.sum(0) - tp, 1)
    unseen = np.isin(np.arange(num_classes), list(UNSEEN_CLASS_IDS))
    seen_miou, unseen_miou = 100 * iou[has_gt & ~unseen].mean(), 100 * iou[has_gt & unseen].mean()
    return {
        "mIoU": 100 * iou[has_gt].mean(), "mIoU-seen": seen_miou, "mIoU-unseen": unseen_miou,
        "hIoU": 2 * seen_miou * unseen_miou / (seen_miou + unseen_miou) if seen_miou + unseen_miou else 0.0,
        "pACC": 100 * tp.sum() / confusion.sum(),
    }


def _assert_metrics_equal(reported: dict[str, float], expected: dict[str, float]) -> None:
    assert set(reported) == set(expected), reported
    for key, value in expected.items():
        assert reported[key] == pytest.approx(value, abs=1e-6), (key, reported, expected)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo's output folder: $DETECTRON2_DATASETS/toy_world and a tiny CLIP exported as
    tools/pretrain_toy_clip.py does (trainer checkpoint -> open_clip checkpoint), untrained."""
    output = tmp_path_factory.mktemp("demo")
    weights = write_demo_world(output, output / "clip_pretrain" / "model_final.pth", output / "tiny_clip.pt")
    with demo_environment(output) as mp:
        mp.chdir(output)  # the stages work from any directory
        yield SimpleNamespace(output=output, weights=str(weights))


@pytest.fixture(scope="module")
def catseg(demo):
    """The first call of the CAT-Seg stage: trains MAX_ITER iterations, then evaluates."""
    output_dir = demo.output / "catseg"
    assert not (output_dir / "model_final.pth").exists()
    model, metrics = train_and_evaluate_catseg(demo.weights, output_dir, MAX_ITER)
    return SimpleNamespace(output_dir=output_dir, model=model, metrics=metrics)


@pytest.mark.parametrize("config", ["toy/dense_baseline.py", "toy/clip_pretrain.py", "catseg/catseg_toy.py"])
def test_configs_do_not_depend_on_the_working_directory(config: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(str(REPO / "configs" / config), [])
    assert Path(cfg.model.clip_model).is_file(), cfg.model.clip_model


def test_world_is_found_through_detectron2_datasets(demo) -> None:
    assert len(DatasetCatalog.get("toy_val")) == WORLD.num_val
    assert len(DatasetCatalog.get("toy_seen_train")) == WORLD.num_train
    for record in DatasetCatalog.get("toy_val"):
        assert Path(record["file_name"]).is_relative_to(demo.output / "toy_world")


def test_baseline_reports_the_metrics_of_its_predictions(demo) -> None:
    metrics = evaluate_baseline(demo.weights, demo.output / "baseline")
    cfg = baseline_config(demo.weights, demo.output / "baseline")
    _assert_metrics_equal(metrics, _metrics_of_predictions(build_model(cfg), cfg.dataloader.test.mapper))
    record = json.loads((demo.output / "baseline" / "run.json").read_text())
    assert record == {
        "name": "dense CLIP baseline (training-free)", "config": "configs/toy/dense_baseline.py",
        "overrides": ["model.head=none", f"model.clip_weights={demo.weights}"], "weights": None, "dataset": "toy_val",
    }


def test_catseg_trains_without_evaluating_during_training(demo, catseg) -> None:
    mapper_cfg = load_config(str(CATSEG_CONFIG), []).dataloader.test.mapper
    _assert_metrics_equal(catseg.metrics, _metrics_of_predictions(catseg.model, mapper_cfg))
    checkpoint = torch.load(catseg.output_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == MAX_ITER - 1
    records = [json.loads(line) for line in (catseg.output_dir / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r and math.isfinite(r["total_loss"]) for r in records), records
    # Training ran with `dataloader.test_datasets=[]`: EvalHook's final evaluation stored nothing.
    assert not any(key.startswith("toy_val/") for r in records for key in r), records
    record = json.loads((catseg.output_dir / "run.json").read_text())
    assert (record["config"], record["overrides"], record["weights"]) == (
        "configs/catseg/catseg_toy.py", [f"model.clip_weights={demo.weights}"], str(catseg.output_dir / "model_final.pth")
    )


def test_catseg_second_call_reuses_the_cached_model(demo, catseg) -> None:
    final = catseg.output_dir / "model_final.pth"
    metrics_file = catseg.output_dir / "metrics.json"
    before = (final.stat().st_mtime_ns, metrics_file.read_text())
    model, metrics = train_and_evaluate_catseg(demo.weights, catseg.output_dir, MAX_ITER)
    assert (final.stat().st_mtime_ns, metrics_file.read_text()) == before  # no training, no new checkpoint
    assert model is not catseg.model
    trained = catseg.model.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, trained[name]), name
    assert metrics == catseg.metrics  # the same weights, deterministic evaluation


def test_overlays_are_upscaled_image_prediction_ground_truth_legend(catseg) -> None:
    count = 3
    out = catseg.output_dir.parent / "overlays"  # as tools/run_demo.py: OUTPUT/overlays
    paths = write_overlays(catseg.model, out, count)
    records = DatasetCatalog.get("toy_val")[:count]
    assert [p.name for p in paths] == [f"{Path(r['file_name']).stem}.png" for r in records]
    assert sorted(out.glob("*.png")) == sorted(paths)
    side, gap = 4 * WORLD.image_size, 4  # 96 px drawn 4x (nearest), panels 4 px apart
    for path, record in zip(paths, records):
        mosaic = np.asarray(Image.open(path).convert("RGB"))
        # + the legend (taller than the image when many classes are predicted: panels padded below)
        assert mosaic.shape[0] >= side and mosaic.shape[1] > 3 * (side + gap), path
        image = read_image(record["file_name"], format="RGB").repeat(4, 0).repeat(4, 1)
        assert np.array_equal(mosaic[:side, :side], image)  # left panel: the image itself
        truth = mosaic[:side, 2 * (side + gap): 2 * (side + gap) + side]
        assert not np.array_equal(truth, image)  # the ground truth panel has objects drawn over it
