"""The stages of the main job `make demo` (tools/run_demo.py -> ovseg_d2/engine/toy_demo.py) on a tiny
96x96 toy world with a randomly initialised tiny CLIP (configs/toy/tiny_clip.json, the demo's CLIP):

- the training-free dense baseline reports the five demo metrics;
- CAT-Seg trains (without evaluating during training: EvalHook would duplicate the reported
  evaluation), reports the same metrics, and a second call reuses the cached model_final.pth;
- the overlays are image | prediction | ground truth mosaics of the first validation images.

The datasets are found as in tools/run_demo.py: the default `toy_*` registration, resolved under
$DETECTRON2_DATASETS/toy_world when a dataset is loaded.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, detection_utils
from PIL import Image

from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world, register_toy_world
from ovseg_d2.engine.toy_demo import evaluate_baseline, train_and_evaluate_catseg, write_overlays
from ovseg_d2.modeling.contrastive_clip import ContrastiveCLIP, export_clip_checkpoint

REPO = Path(__file__).resolve().parents[2]
METRIC_KEYS = {"mIoU", "mIoU-seen", "mIoU-unseen", "hIoU", "pACC"}
# The demo's world is 96x96 (configs/catseg/catseg_toy.py: clip_resolution and crop 96), unlike the
# 64x64 world of conftest.py.
WORLD = ToyWorldConfig(num_train=8, num_val=4, num_retrieval=30, image_size=96, seed=3, shard_size=10)
MAX_ITER = 2


def _assert_metrics(metrics: dict[str, float]) -> None:
    assert set(metrics) == METRIC_KEYS, metrics
    for key, value in metrics.items():
        assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 100.0, (key, metrics)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo's output folder: $DETECTRON2_DATASETS/toy_world and a tiny CLIP exported as
    tools/pretrain_toy_clip.py does (trainer checkpoint -> open_clip checkpoint), untrained."""
    output = tmp_path_factory.mktemp("demo")
    generate_toy_world(output / "toy_world", WORLD, progress=False)
    torch.manual_seed(0)
    clip = ContrastiveCLIP(clip_model=REPO / "configs/toy/tiny_clip.json")
    (output / "clip_pretrain").mkdir()
    torch.save({"model": clip.state_dict(), "iteration": 0}, output / "clip_pretrain" / "model_final.pth")
    weights = export_clip_checkpoint(output / "clip_pretrain" / "model_final.pth", output / "tiny_clip.pt")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(output))  # as tools/run_demo.py does
        mp.chdir(REPO)  # the configs name the CLIP config relative to the repository root
        register_toy_world()  # the default registration (another test may have pointed it elsewhere)
        # One intra-op thread: small ops on a shared 2-core machine (see tests/catseg/conftest.py).
        torch.set_num_threads(1)
        try:
            yield SimpleNamespace(output=output, weights=str(weights))
        finally:
            torch.set_num_threads(threads)
            register_toy_world()


@pytest.fixture(scope="module")
def catseg(demo):
    """The first call of the CAT-Seg stage: trains MAX_ITER iterations, then evaluates."""
    output_dir = demo.output / "catseg"
    assert not (output_dir / "model_final.pth").exists()
    model, metrics = train_and_evaluate_catseg(demo.weights, output_dir, MAX_ITER)
    return SimpleNamespace(output_dir=output_dir, model=model, metrics=metrics)


def test_world_is_found_through_detectron2_datasets(demo) -> None:
    assert len(DatasetCatalog.get("toy_val")) == WORLD.num_val
    assert len(DatasetCatalog.get("toy_seen_train")) == WORLD.num_train
    for record in DatasetCatalog.get("toy_val"):
        assert Path(record["file_name"]).is_relative_to(demo.output / "toy_world")


def test_baseline_reports_the_demo_metrics(demo) -> None:
    metrics = evaluate_baseline(demo.weights, demo.output / "baseline")
    _assert_metrics(metrics)


def test_catseg_trains_without_evaluating_during_training(catseg) -> None:
    _assert_metrics(catseg.metrics)
    checkpoint = torch.load(catseg.output_dir / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == MAX_ITER - 1
    records = [json.loads(line) for line in (catseg.output_dir / "metrics.json").read_text().splitlines()]
    assert any("total_loss" in r and math.isfinite(r["total_loss"]) for r in records), records
    # Training ran with `dataloader.test_datasets=[]`: EvalHook's final evaluation stored nothing.
    assert not any(key.startswith("toy_val/") for r in records for key in r), records


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


def test_overlays_are_image_prediction_ground_truth(catseg) -> None:
    count = 3
    out = catseg.output_dir.parent / "overlays"  # as tools/run_demo.py: OUTPUT/overlays
    paths = write_overlays(catseg.model, out, count)
    records = DatasetCatalog.get("toy_val")[:count]
    assert [p.name for p in paths] == [f"{Path(r['file_name']).stem}.png" for r in records]
    assert sorted(out.glob("*.png")) == sorted(paths)
    size = WORLD.image_size
    for path, record in zip(paths, records):
        mosaic = np.asarray(Image.open(path).convert("RGB"))
        assert mosaic.shape == (size, 3 * size, 3), path
        image = detection_utils.read_image(record["file_name"], format="RGB")
        assert np.array_equal(mosaic[:, :size], image)  # left panel: the image itself
        # The ground truth panel has objects drawn over the image.
        assert not np.array_equal(mosaic[:, 2 * size:], image)
