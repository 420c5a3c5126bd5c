"""End-to-end through tools/train_net.py:

1. configs/tcl/tcl_toy.py trains in 2 CPU processes (gloo) on the captions of a generated toy world,
   unfreezes the masker block mid-run in both processes, and writes a strictly loadable model.
2. One `--eval-only` run of configs/tcl/tcl_vitb16.py (tiny CLIP, random weights) scores all eight
   benchmarks of the paper, read from miniatures converted by the real `datasets/prepare_*.py`,
   with background by threshold on VOC-21 / PC-60 / COCO-Object and the mmseg metric convention.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import e2e

TOY = "configs/tcl/tcl_toy.py"
WITH_BACKGROUND = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val"]
EIGHT = WITH_BACKGROUND + [
    "ovseg_voc20_val", "ovseg_pc59_val", "ovseg_coco_stuff171_val", "ovseg_cityscapes19_val", "ovseg_ade150_val",
]


@pytest.mark.timeout(600)
def test_tcl_trains_on_captions_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    from ovseg_d2.clip import build_clip

    clip_weights = tmp_path / "tiny_clip.pt"
    torch.save(build_clip(e2e.REPO / "configs/toy/tiny_clip.json").state_dict(), clip_weights)
    out = e2e.run_train_net(
        TOY,
        [
            *e2e.two_process_training(max_iter=3), f"model.clip_weights={clip_weights}",
            "train.hooks.0.iteration=2",  # the masker block joins at the last step
            "dataloader.train.total_batch_size=4", "dataloader.test_datasets=[]",
        ],
        datasets_root=toy_datasets_root, output_dir=tmp_path,
    )
    e2e.assert_rank1_joined_two_processes(tmp_path)
    assert re.search(r"Iteration 2: training 12 more parameters", out), out  # the copied block's 12 tensors
    logged = e2e.training_records(tmp_path, max_iter=3)
    terms = ("loss_area", "loss_neg_area", "loss_tcl_feature", "loss_tv_image", "loss_tv_mask", "loss_tcl_image")
    assert all(set(terms) <= set(r) for r in logged.values())

    trained = e2e.final_checkpoint(tmp_path)["model"]
    e2e.build_fresh_model(TOY).load_state_dict(trained, strict=True)
    clip = torch.load(clip_weights, weights_only=True)
    # CLIP stayed frozen; the decoder gates (initially 0) trained; the masker block, a copy of CLIP's
    # last block, trained after the switch.
    assert all(torch.equal(trained[f"clip_image.{k}"], v) for k, v in clip.items() if k.startswith("visual."))
    assert all(trained[f"decoder.{i}.{c}.gate"] != 0 for i in (0, 1) for c in ("conv", "conv2"))
    block = "clip_image.visual.transformer.resblocks.2."
    copied = [k for k in trained if k.startswith("masker_block.")]
    assert len(copied) == 12
    assert any(not torch.equal(trained[k], trained[block + k[len("masker_block."):]]) for k in copied)


@pytest.mark.timeout(600)
def test_eval_only_scores_the_eight_benchmarks(benchmark_root: Path, tmp_path: Path, monkeypatch) -> None:
    out = e2e.run_train_net(
        "configs/tcl/tcl_vitb16.py",
        # A fixed seed: the random weights (and so which miniature has a NaN hIoU) are the same every run.
        ["--eval-only", "train.init_checkpoint=none", "model.clip_model=tiny-tcl", "dataloader.test.num_workers=0",
         "train.seed=0"],
        datasets_root=benchmark_root, output_dir=tmp_path,
    )
    e2e.assert_evaluated_in_order(out, EIGHT)

    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import MetadataCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EIGHT:
        saved = e2e.checked_sem_seg_evaluation(out, tmp_path, name)  # the printed summary is the saved one
        conf = saved["conf_matrix"].numpy().astype(np.float64)
        e2e.assert_every_gt_pixel_scored_once(conf, name)
        # mmseg convention: a class predicted but absent from the ground truth counts as IoU 0; only
        # classes with neither are left out of the mean.
        k = len(MetadataCatalog.get(name).stuff_classes)
        tp = np.diag(conf[:k, :k])
        union = conf[:k, :k].sum(axis=0) + conf[:k, :k].sum(axis=1) - tp
        present = union > 0
        assert saved["metrics"]["mIoU"] == pytest.approx(100 * np.mean(tp[present] / union[present]), abs=1e-4), name
