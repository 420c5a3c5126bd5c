"""End-to-end: tools/train_net.py with configs/ovsegmentor/ovsegmentor_tiny.py (the paper's stage-2
recipe at tiny width, random weights).

1. Training in 2 CPU processes (gloo) on a generated toy world's captions, with all three losses
   (matching, entity completion, cross-image mask consistency through the momentum encoder).
2. One `--eval-only` run scores the paper's benchmarks (VOC-21, PASCAL Context-60, COCO-Object with
   their background thresholds; ADE-150 without background) on miniatures prepared by the real
   `datasets/prepare_*.py` scripts.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests import e2e

CONFIG = "configs/ovsegmentor/ovsegmentor_tiny.py"
EVAL_DATASETS = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val", "ovseg_ade150_val"]


@pytest.fixture(scope="module")
def toy_world_with_cross_image_lists(toy_datasets_root: Path) -> Path:
    """The session's toy world plus its cross-image lists (what tools/build_cross_image_lists.py writes)."""
    from ovseg_d2.data.image_text import write_cross_image_lists

    world = toy_datasets_root / "toy_world"
    write_cross_image_lists(world / "captions/train.jsonl", world / "cross_image",
                            str(e2e.REPO / "configs/ovsegmentor/toy_entities.json"))
    return toy_datasets_root


@pytest.mark.timeout(600)
def test_tiny_config_trains_in_two_cpu_processes(toy_world_with_cross_image_lists: Path, tmp_path: Path) -> None:
    max_iter = 3
    e2e.run_train_net(
        CONFIG,
        [*e2e.two_process_training(max_iter), "dataloader.test_datasets=[]"],  # evaluation: the --eval-only test below
        datasets_root=toy_world_with_cross_image_lists, output_dir=tmp_path,
    )
    e2e.assert_rank1_joined_two_processes(tmp_path)
    losses = e2e.training_records(tmp_path, max_iter)
    for r in losses.values():  # the three losses of stage 2, weighted as the paper (mask x 0.1)
        assert {"loss_matching", "loss_entity", "loss_mask"} <= set(r), r
        assert all(math.isfinite(r[k]) for k in ("loss_matching", "loss_entity", "loss_mask")), r
        assert 0 < r["loss_mask"] <= 0.1 * 2 / 8  # 0.1 x (Dice <= 1) x 2 samples per process / 8 groups

    checkpoint = e2e.final_checkpoint(tmp_path)
    e2e.build_fresh_model(CONFIG).load_state_dict(checkpoint["model"], strict=True)
    weights = checkpoint["model"]
    # The momentum encoder was synced to the online one at the first step, then followed it by EMA:
    # it moved, but differs from the online encoder (momentum 0.99).
    assert bool(weights["momentum_synced"])
    online, momentum = weights["image_encoder.group_token"], weights["momentum_encoder.group_token"]
    assert not torch.equal(online, momentum)
    assert (online - momentum).abs().max() < 0.1 * online.abs().max()


@pytest.mark.timeout(600)
def test_eval_only_scores_the_papers_benchmarks(benchmark_root: Path, tmp_path: Path, monkeypatch) -> None:
    out = e2e.run_train_net(
        CONFIG, ["--eval-only", "train.init_checkpoint=none", "train.seed=0"], datasets_root=benchmark_root, output_dir=tmp_path
    )
    e2e.assert_evaluated_in_order(out, EVAL_DATASETS)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EVAL_DATASETS:
        saved = e2e.checked_sem_seg_evaluation(out, tmp_path, name)  # the printed summary is the saved one
        e2e.assert_every_gt_pixel_scored_once(saved["conf_matrix"].numpy(), name)
