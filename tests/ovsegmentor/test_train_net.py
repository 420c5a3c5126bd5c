"""End-to-end: tools/train_net.py with configs/ovsegmentor/ovsegmentor_tiny.py (the paper's stage-2
recipe at tiny width, random weights).

1. Training in 2 CPU processes (gloo) on a generated toy world's captions, with all three losses
   (matching, entity completion, cross-image mask consistency through the momentum encoder).
2. One `--eval-only` run scores the paper's benchmarks (VOC-21, PASCAL Context-60, COCO-Object with
   their background thresholds; ADE-150 without background) on miniatures prepared by the real
   `datasets/prepare_*.py` scripts.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/ovsegmentor/ovsegmentor_tiny.py"
TEST_PREPARE = REPO / "tests" / "data" / "test_prepare.py"
EVAL_DATASETS = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val", "ovseg_ade150_val"]


def _train_net(flags: list[str], overrides: list[str], datasets_root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets_root), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *flags, *overrides],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )


@pytest.fixture(scope="module")
def toy_datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy world plus its cross-image lists (what tools/build_cross_image_lists.py writes)."""
    from ovseg_d2.data.image_text import write_cross_image_lists
    from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

    root = tmp_path_factory.mktemp("toy_datasets")
    world = root / "toy_world"
    generate_toy_world(world, ToyWorldConfig(num_train=16, num_val=4, num_retrieval=4), progress=False)
    write_cross_image_lists(world / "captions/train.jsonl", world / "cross_image",
                            str(REPO / "configs/ovsegmentor/toy_entities.json"))
    return root


@pytest.mark.timeout(600)
def test_tiny_config_trains_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    max_iter = 3
    proc = _train_net(
        ["--num-gpus", "2"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", f"train.max_iter={max_iter}", "train.log_period=1",
         "dataloader.test_datasets=[]"],  # evaluation: the --eval-only test below
        toy_datasets_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = {r["iteration"]: r for r in records if "total_loss" in r}
    assert sorted(losses) == list(range(max_iter)), records
    for r in losses.values():  # the three losses of stage 2, weighted as the paper (mask x 0.1)
        assert {"loss_matching", "loss_entity", "loss_mask"} <= set(r), r
        assert all(math.isfinite(r[k]) for k in ("loss_matching", "loss_entity", "loss_mask")), r
        assert 0 < r["loss_mask"] <= 0.1 * 2 / 8  # 0.1 x (Dice <= 1) x 2 samples per process / 8 groups

    from ovseg_d2.engine import build_model, load_config

    checkpoint = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    model = build_model(load_config(str(REPO / CONFIG), ["train.device=cpu"]))
    model.load_state_dict(checkpoint["model"], strict=True)
    weights = checkpoint["model"]
    # The momentum encoder was synced to the online one at the first step, then followed it by EMA:
    # it moved, but differs from the online encoder (momentum 0.99).
    assert bool(weights["momentum_synced"])
    online, momentum = weights["image_encoder.group_token"], weights["momentum_encoder.group_token"]
    assert not torch.equal(online, momentum)
    assert (online - momentum).abs().max() < 0.1 * online.abs().max()


def _load_test_prepare():
    spec = importlib.util.spec_from_file_location("_ovseg_test_prepare_helpers", TEST_PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC 2012 / PASCAL Context / COCO (stuff + object) / ADE20K miniatures, prepared by the real scripts."""
    prep = _load_test_prepare()
    root = tmp_path_factory.mktemp("benchmarks")
    prep.make_voc(root, aug=True)
    prep.make_pc59(root)
    prep.make_ade150(root)
    prep.make_coco_stuff(root)
    for script in ("prepare_voc", "prepare_pascal_context_59", "prepare_ade20k_150", "prepare_coco_stuff"):
        assert prep.run(script, root)["written"] > 0
    return root


def _copypaste_block(out: str, name: str) -> dict[str, float]:
    match = re.search(
        rf"Evaluation results for {re.escape(name)}:\n.*copypaste: Task: sem_seg\n"
        r".*copypaste: (?P<keys>\S+)\n.*copypaste: (?P<values>\S+)\n",
        out,
    )
    assert match, f"no results printed for {name}:\n{out[-3000:]}"
    return dict(zip(match["keys"].split(","), map(float, match["values"].split(","))))


@pytest.mark.timeout(600)
def test_eval_only_scores_the_papers_benchmarks(benchmark_root: Path, tmp_path: Path, monkeypatch) -> None:
    proc = _train_net(
        ["--eval-only"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", "train.init_checkpoint=none"],
        benchmark_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    positions = [out.find(f"Evaluation results for {name}:") for name in EVAL_DATASETS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out[-3000:]

    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ovseg_d2.data.mappers import read_sem_seg

    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EVAL_DATASETS:
        printed = _copypaste_block(out, name)
        saved = torch.load(tmp_path / "inference" / name / "sem_seg_evaluation.pth", weights_only=False)
        for key, value in printed.items():
            assert value == pytest.approx(saved["metrics"][key], abs=1e-4), (name, key)
        meta = MetadataCatalog.get(name)
        k = len(meta.stuff_classes)
        hist = np.zeros(k + 1, np.int64)
        for record in DatasetCatalog.get(name):
            gt = read_sem_seg(record["sem_seg_file_name"])
            hist += np.bincount(np.where(gt == meta.ignore_label, k, gt).ravel(), minlength=k + 1)
        conf = saved["conf_matrix"].numpy()
        np.testing.assert_array_equal(conf.sum(axis=0), hist, err_msg=name)  # every GT pixel scored once
