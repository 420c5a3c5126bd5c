"""End-to-end: tools/train_net.py with configs/sazs/sazs_tiny.py (tiny widths, random weights).

1. Training in 2 CPU processes (gloo) on a PASCAL-5i miniature writes a loadable model_final.pth.
2. One `--eval-only` run scores the four PASCAL-5i folds and the four COCO-20i folds (1000 episodes
   each), read from miniatures prepared by the real `datasets/prepare_fewshot_splits.py`.
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

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/sazs/sazs_tiny.py"
TEST_PREPARE = REPO / "tests" / "data" / "test_prepare.py"
FOLDS = [f"ovseg_pascal5i_fold{f}_val" for f in range(4)] + [f"ovseg_coco20i_fold{f}_val" for f in range(4)]


def _load_test_prepare():
    spec = importlib.util.spec_from_file_location("_ovseg_test_prepare_helpers_sazs", TEST_PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fewshot_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PASCAL (SegmentationClassAug) and COCO 2014 miniatures with a class of every fold in val, prepared
    into the registered few-shot layout by the real script."""
    prep = _load_test_prepare()
    root = tmp_path_factory.mktemp("fewshot")
    prep.make_fewshot(root)
    coco = root / "COCO2014"
    # COCO-20i episodes draw a class uniformly among the fold's 20: every class needs a val image.
    for fold in range(4):
        name = f"COCO_val2014_00000000002{fold}"
        classes = [0] + [c for c in range(1, 81) if (c - 1) % 4 == fold] + [255]
        prep.write_gray(coco / "annotations" / "val2014" / f"{name}.png", prep.rows(classes))
        prep.write_rgb(coco / "val2014" / f"{name}.jpg")
    assert prep.run("prepare_fewshot_splits", root, "--min-area", "2")["written"] > 0
    return root


def _train_net(flags: list[str], overrides: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECTRON2_DATASETS": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *flags, *overrides],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )


@pytest.mark.timeout(600)
def test_sazs_trains_in_two_cpu_processes(fewshot_root: Path, tmp_path: Path) -> None:
    max_iter = 3
    proc = _train_net(
        ["--num-gpus", "2"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", f"train.max_iter={max_iter}",
         "dataloader.train.total_batch_size=2", "dataloader.test_datasets=[]"],
        fewshot_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = {r["iteration"]: r for r in records if "total_loss" in r}
    assert sorted(losses) == list(range(max_iter)), records
    for r in losses.values():
        assert math.isfinite(r["total_loss"]) and r["loss_seg"] > 0, r
        assert {"loss_edge", "loss_edge_att"} <= set(r), r
    # SGD with the epoch-poly schedule: lr stays the base lr within the first epoch.
    assert losses[0]["lr"] == pytest.approx(1e-3)

    checkpoint = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    from ovseg_d2.engine import build_model, load_config

    model = build_model(load_config(str(REPO / CONFIG), ["train.device=cpu"]))
    model.load_state_dict(checkpoint["model"], strict=True)
    # The frozen CLIP text tower did not move; the pixel embedder did.
    fresh = build_model(load_config(str(REPO / CONFIG), ["train.device=cpu"])).state_dict()
    assert not torch.equal(checkpoint["model"]["pixel_embedder.edge_head.weight"], fresh["pixel_embedder.edge_head.weight"])


def _copypaste(out: str, name: str) -> dict[str, float]:
    match = re.search(
        rf"Evaluation results for {re.escape(name)}:\n.*copypaste: Task: sem_seg\n"
        r".*copypaste: (?P<keys>\S+)\n.*copypaste: (?P<values>\S+)\n",
        out,
    )
    assert match, f"no results printed for {name}:\n{out[-3000:]}"
    return dict(zip(match["keys"].split(","), map(float, match["values"].split(","))))


@pytest.mark.timeout(600)
def test_eval_only_scores_every_fold(fewshot_root: Path, tmp_path: Path) -> None:
    proc = _train_net(
        ["--eval-only", "--num-gpus", "2"],  # episodes split over 2 processes, sums gathered
        ["train.device=cpu", f"train.output_dir={tmp_path}", "train.init_checkpoint=none"],
        fewshot_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    positions = [out.find(f"Evaluation results for {name}:") for name in FOLDS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out[-3000:]
    for name in FOLDS:
        printed = _copypaste(out, name)
        saved = torch.load(tmp_path / "inference" / name / "fewshot_evaluation.pth", weights_only=False)
        assert printed["mIoU"] == pytest.approx(saved["metrics"]["mIoU"], abs=1e-4)
        union = saved["union"].numpy()
        # 1000 episodes of 24x32 images; SAZS's count keeps void predictions in the union, so the
        # bg + fg unions are at least the image area of every episode.
        assert union[:, saved["classes"]].sum() >= 1000 * 24 * 32, name
