"""End-to-end: tools/train_net.py with configs/catseg/catseg_fb_toy.py (pre-CVPR CAT-Seg with a tiny
Detectron2 ResNet and the tiny CLIP, random weights): 2-process CPU training, and one `--eval-only` run
over several real benchmark names (miniatures prepared by the real `datasets/prepare_*.py`)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests import e2e

CONFIG = "configs/catseg/catseg_fb_toy.py"
EVAL_DATASETS = ["ovseg_voc20_val", "ovseg_voc20b_val", "ovseg_ade150_val", "ovseg_pc59_val"]


@pytest.mark.timeout(600)
def test_feature_backbone_trains_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    max_iter = 2
    out = e2e.run_train_net(
        CONFIG,
        [*e2e.two_process_training(max_iter), "train.checkpointer.period=100", "dataloader.train.total_batch_size=4"],
        datasets_root=toy_datasets_root, output_dir=tmp_path,
    )
    assert "Rank of current process: 0. World size: 2" in out, out
    e2e.assert_rank1_joined_two_processes(tmp_path)
    losses = [r["total_loss"] for r in e2e.training_records(tmp_path, max_iter).values()]
    assert all(math.isfinite(v) for v in losses), losses

    # The final weights load strictly into a fresh model built from the config; the trained backbone moved.
    checkpoint = e2e.final_checkpoint(tmp_path)
    model = e2e.build_fresh_model(CONFIG)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(checkpoint["model"], strict=True)
    key = "feature_backbone.stem.conv1.weight"
    assert key in checkpoint["model"] and not torch.equal(checkpoint["model"][key], initial[key])


@pytest.mark.timeout(600)
def test_feature_backbone_eval_only_reports_every_benchmark(benchmark_root: Path, tmp_path: Path) -> None:
    out = e2e.run_train_net(
        CONFIG,
        ["--eval-only", "train.init_checkpoint=none", "train.seed=0", f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]"],
        datasets_root=benchmark_root, output_dir=tmp_path,
    )
    for name in EVAL_DATASETS:
        e2e.checked_sem_seg_evaluation(out, tmp_path, name)  # the printed summary is the saved one
