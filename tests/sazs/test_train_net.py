"""End-to-end: tools/train_net.py with configs/sazs/sazs_tiny.py (tiny widths, random weights).

1. Training in 2 CPU processes (gloo) on a PASCAL-5i miniature writes a loadable model_final.pth.
2. One `--eval-only` run scores the four PASCAL-5i folds and the four COCO-20i folds (1000 episodes
   each), read from miniatures prepared by the real `datasets/prepare_fewshot_splits.py`.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests import e2e
from tests.data.test_prepare import make_fewshot, rows, run, write_gray, write_rgb

CONFIG = "configs/sazs/sazs_tiny.py"
FOLDS = [f"ovseg_pascal5i_fold{f}_val" for f in range(4)] + [f"ovseg_coco20i_fold{f}_val" for f in range(4)]


@pytest.fixture(scope="module")
def fewshot_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """PASCAL (SegmentationClassAug) and COCO 2014 miniatures with a class of every fold in val, prepared
    into the registered few-shot layout by the real script."""
    root = tmp_path_factory.mktemp("fewshot")
    make_fewshot(root)
    coco = root / "COCO2014"
    # COCO-20i episodes draw a class uniformly among the fold's 20: every class needs a val image.
    for fold in range(4):
        name = f"COCO_val2014_00000000002{fold}"
        classes = [0] + [c for c in range(1, 81) if (c - 1) % 4 == fold] + [255]
        write_gray(coco / "annotations" / "val2014" / f"{name}.png", rows(classes))
        write_rgb(coco / "val2014" / f"{name}.jpg")
    assert run("prepare_fewshot_splits", root, "--min-area", "2")["written"] > 0
    return root


@pytest.mark.timeout(600)
def test_sazs_trains_in_two_cpu_processes(fewshot_root: Path, tmp_path: Path) -> None:
    max_iter = 3
    e2e.run_train_net(
        CONFIG,
        ["--num-gpus", "2", f"train.max_iter={max_iter}",
         "dataloader.train.total_batch_size=2", "dataloader.test_datasets=[]"],
        datasets_root=fewshot_root, output_dir=tmp_path,
    )
    e2e.assert_rank1_joined_two_processes(tmp_path)
    losses = e2e.training_records(tmp_path, max_iter)
    for r in losses.values():
        assert math.isfinite(r["total_loss"]) and r["loss_seg"] > 0, r
        assert {"loss_edge", "loss_edge_att"} <= set(r), r
    # SGD with the epoch-poly schedule: lr stays the base lr within the first epoch.
    assert losses[0]["lr"] == pytest.approx(1e-3)

    checkpoint = e2e.final_checkpoint(tmp_path)
    e2e.build_fresh_model(CONFIG).load_state_dict(checkpoint["model"], strict=True)
    # The frozen CLIP text tower did not move; the pixel embedder did.
    fresh = e2e.build_fresh_model(CONFIG).state_dict()
    assert not torch.equal(checkpoint["model"]["pixel_embedder.edge_head.weight"], fresh["pixel_embedder.edge_head.weight"])


@pytest.mark.timeout(600)
def test_eval_only_scores_every_fold(fewshot_root: Path, tmp_path: Path) -> None:
    out = e2e.run_train_net(
        CONFIG,
        ["--eval-only", "--num-gpus", "2",  # episodes split over 2 processes, sums gathered
         "train.init_checkpoint=none", "train.seed=0"],
        datasets_root=fewshot_root, output_dir=tmp_path,
    )
    e2e.assert_evaluated_in_order(out, FOLDS)
    for name in FOLDS:
        saved = e2e.saved_evaluation(tmp_path, name, "fewshot_evaluation.pth")
        assert e2e.copypaste_block(out, name)["mIoU"] == pytest.approx(saved["metrics"]["mIoU"], abs=1e-4)
        union = saved["union"].numpy()
        # 1000 episodes of 24x32 images; SAZS's count keeps void predictions in the union, so the
        # bg + fg unions are at least the image area of every episode.
        assert union[:, saved["classes"]].sum() >= 1000 * 24 * 32, name
