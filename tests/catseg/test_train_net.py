"""End-to-end: tools/train_net.py with configs/catseg/catseg_toy.py (tiny CLIP, random weights).

1. Training in 2 CPU processes (gloo) on a generated toy world writes a loadable model_final.pth.
2. One `--eval-only` run evaluates several real benchmark names, read from miniatures in the
   registered on-disk layouts (raw miniatures of tests/data/test_prepare.py, converted by the real
   `datasets/prepare_*.py` scripts), and scores every ground-truth pixel of each exactly once.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests import e2e

CONFIG = "configs/catseg/catseg_toy.py"

# voc20 / pc59 have a zero-shot split (seen/unseen/hIoU); voc20b folds 39 background prompts into
# class 20; voc21 / pc60 use the mmseg convention with background class 0.
EVAL_DATASETS = [
    "ovseg_voc20_val", "ovseg_voc20b_val", "ovseg_voc21_val",
    "ovseg_ade150_val", "ovseg_pc59_val", "ovseg_pc60_val",
]
WITH_UNSEEN = {"ovseg_voc20_val", "ovseg_pc59_val"}


@pytest.mark.timeout(600)
def test_catseg_trains_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    max_iter = 3
    out = e2e.run_train_net(
        CONFIG,
        [*e2e.two_process_training(max_iter), "train.checkpointer.period=100",
         "dataloader.train.total_batch_size=4"],  # 2 images per process
        datasets_root=toy_datasets_root, output_dir=tmp_path,
    )

    # Both ranks joined one process group of size 2 (rank 1 logs to its own file).
    assert "Rank of current process: 0. World size: 2" in out, out
    e2e.assert_rank1_joined_two_processes(tmp_path)

    # Every iteration ran and logged a finite loss.
    losses = [r["total_loss"] for r in e2e.training_records(tmp_path, max_iter).values()]
    assert all(math.isfinite(v) for v in losses), losses

    # The final evaluation (EvalHook after the last iteration) ran on toy_val, split over 2 ranks.
    assert "on 2 devices" in out
    records = e2e.metrics_records(tmp_path)
    final = [r for r in records if "toy_val/sem_seg/mIoU" in r]
    assert len(final) == 1 and final[0]["iteration"] == max_iter, records
    saved = e2e.saved_evaluation(tmp_path, "toy_val")
    for key in ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU"):  # the logged numbers are the evaluator's
        assert final[0][f"toy_val/sem_seg/{key}"] == pytest.approx(saved["metrics"][key], abs=1e-4), final[0]

    # model_final.pth holds the last iteration and loads strictly into a fresh CAT-Seg.
    checkpoint = e2e.final_checkpoint(tmp_path)
    assert checkpoint["iteration"] == max_iter - 1
    assert {"optimizer", "hooks"} <= set(checkpoint["trainer"])  # the LR scheduler is in hooks
    e2e.build_fresh_model(CONFIG).load_state_dict(checkpoint["model"], strict=True)
    assert any(k.startswith("aggregator.") for k in checkpoint["model"])


@pytest.mark.timeout(600)
def test_eval_only_reports_every_benchmark(
    benchmark_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = e2e.run_train_net(
        CONFIG,
        ["--eval-only", "train.init_checkpoint=none", "train.seed=0",  # random weights, drawn the same every run
         f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]"],
        datasets_root=benchmark_root, output_dir=tmp_path,
    )
    e2e.assert_evaluated_in_order(out, EVAL_DATASETS)
    assert "seen (background)" in out  # VOC-20b's table marks class 20 as the background class

    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import MetadataCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EVAL_DATASETS:
        saved = e2e.checked_sem_seg_evaluation(out, tmp_path, name)  # the printed summary is the saved one
        metrics, conf = saved["metrics"], saved["conf_matrix"].numpy()
        scored = conf[:-1, :-1]  # pixel accuracy from the matrix itself (last row/column: ignored)
        assert metrics["pACC"] == pytest.approx(100 * np.trace(scored) / scored.sum(), abs=1e-6), (name, metrics)
        if name in WITH_UNSEEN:
            assert {"mIoU-seen", "mIoU-unseen", "hIoU"} <= set(metrics), (name, metrics)
            seen, unseen = metrics["mIoU-seen"], metrics["mIoU-unseen"]
            harmonic = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
            assert e2e.copypaste_block(out, name)["hIoU"] == pytest.approx(harmonic, abs=1e-4), (name, metrics)
        else:
            assert "hIoU" not in metrics, (name, metrics)

        # Every ground-truth pixel of every registered record was scored exactly once, and every
        # prediction (prompt channels folded) is one of the K classes.
        k = len(MetadataCatalog.get(name).stuff_classes)
        assert conf.shape == (k + 1, k + 1), name
        e2e.assert_every_gt_pixel_scored_once(conf, name)
        assert conf[k].sum() == 0, name

    # The background column of VOC-20b (raw 0 -> 20) and PC-60 / VOC-21 (class 0) was scored.
    for name, background in (("ovseg_voc20b_val", 20), ("ovseg_voc21_val", 0), ("ovseg_pc60_val", 0)):
        assert e2e.saved_evaluation(tmp_path, name)["conf_matrix"][:, background].sum() > 0, name
