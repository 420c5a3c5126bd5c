"""End-to-end: tools/train_net.py with configs/catseg/catseg_fb_toy.py (pre-CVPR CAT-Seg with a tiny
Detectron2 ResNet and the tiny CLIP, random weights): 2-process CPU training, and one `--eval-only` run
over several real benchmark names (miniatures prepared by the real `datasets/prepare_*.py`)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .test_train_net import REPO, _copypaste_block, _env, benchmark_root, toy_datasets_root  # noqa: F401

CONFIG = "configs/catseg/catseg_fb_toy.py"
EVAL_DATASETS = ["ovseg_voc20_val", "ovseg_voc20b_val", "ovseg_ade150_val", "ovseg_pc59_val"]


def _train_net(flags: list[str], overrides: list[str], datasets_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *flags, *overrides],
        env=_env(datasets_root),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=540,
    )


@pytest.mark.timeout(600)
def test_feature_backbone_trains_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    max_iter = 2
    proc = _train_net(
        ["--num-gpus", "2"],
        [
            "train.device=cpu",
            f"train.output_dir={tmp_path}",
            f"train.max_iter={max_iter}",
            "train.log_period=1",
            "train.checkpointer.period=100",
            "dataloader.train.total_batch_size=4",
        ],
        toy_datasets_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "Rank of current process: 0. World size: 2" in out, out
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = {r["iteration"]: r["total_loss"] for r in records if "total_loss" in r}
    assert sorted(losses) == list(range(max_iter)) and all(math.isfinite(v) for v in losses.values()), records

    # The final weights load strictly into a fresh model built from the config; the trained backbone moved.
    from ovseg_d2.engine import build_model, load_config

    checkpoint = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    model = build_model(load_config(str(REPO / CONFIG), ["train.device=cpu"]))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(checkpoint["model"], strict=True)
    key = "feature_backbone.stem.conv1.weight"
    assert key in checkpoint["model"] and not torch.equal(checkpoint["model"][key], initial[key])


@pytest.mark.timeout(600)
def test_feature_backbone_eval_only_reports_every_benchmark(benchmark_root: Path, tmp_path: Path) -> None:
    proc = _train_net(
        ["--eval-only"],
        [
            "train.device=cpu",
            f"train.output_dir={tmp_path}",
            "train.init_checkpoint=none",
            f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]",
        ],
        benchmark_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    for name in EVAL_DATASETS:
        printed = _copypaste_block(out, name)
        saved = torch.load(tmp_path / "inference" / name / "sem_seg_evaluation.pth", weights_only=False)
        for key, value in printed.items():
            assert value == pytest.approx(saved["metrics"][key], abs=1e-4), (name, key)
