"""End-to-end tools/train_net.py runs of Cascade-CLIP (tiny CLIP, random weights).

1. configs/cascade_clip/cascade_clip_toy.py trains in 2 CPU processes (gloo) on a generated toy world;
   the transductive config restarts from its checkpoint (online pseudo-labels, one step in-process).
2. One `--eval-only` run of the published COCO-Stuff config (tiny CLIP, live text) scores VOC-20,
   PC-59 and COCO-Stuff-171 miniatures prepared by the real `datasets/prepare_*.py` scripts, with seen / unseen / hIoU.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests import e2e

TOY = "configs/cascade_clip/cascade_clip_toy.py"
TOY_ST = "configs/cascade_clip/cascade_clip_toy_st.py"
EVAL_DATASETS = ["ovseg_voc20_val", "ovseg_pc59_val", "ovseg_coco_stuff171_val"]  # the three zero-shot benchmarks


@pytest.mark.timeout(600)
def test_inductive_then_transductive_training_in_two_processes(
    toy_datasets_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inductive = tmp_path / "inductive"
    e2e.run_train_net(
        TOY,
        [*e2e.two_process_training(max_iter=2), "train.checkpointer.period=100",
         "dataloader.train.total_batch_size=4", "dataloader.test_datasets=[]"],
        datasets_root=toy_datasets_root, output_dir=inductive,
    )
    e2e.assert_rank1_joined_two_processes(inductive)
    losses = [r["total_loss"] for r in e2e.training_records(inductive, max_iter=2).values()]
    assert all(math.isfinite(v) for v in losses), losses

    # The transductive config restarts from that checkpoint (in-process, one step): pixels of unseen
    # classes get pseudo-labels, so its loss differs from the same step without self-training.
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from ovseg_d2.engine import build_model, load_config

    monkeypatch.setenv("DETECTRON2_DATASETS", str(toy_datasets_root))
    cfg = load_config(str(e2e.REPO / TOY_ST), ["train.device=cpu", f"train.init_checkpoint={inductive}/model_final.pth",
                                               "dataloader.train.total_batch_size=2"])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    trained = e2e.final_checkpoint(inductive)["model"]
    torch.testing.assert_close(model.backbone.prompts.prompt_embeddings, trained["backbone.prompts.prompt_embeddings"])
    batch = next(iter(instantiate(cfg.dataloader.train)))
    torch.manual_seed(0)
    with_pseudo = model(batch)
    assert set(with_pseudo) == {"loss_focal", "loss_dice"}
    sum(with_pseudo.values()).backward()
    assert model.backbone.prompts.prompt_embeddings.grad is not None
    unseen = torch.tensor(model.unseen_train_classes)
    assert any(torch.isin(r["sem_seg"], unseen).any() for r in batch), "the toy batch has no unseen pixels"
    model.unseen_train_classes = None
    torch.manual_seed(0)
    without = model(batch)
    assert with_pseudo["loss_focal"].item() != pytest.approx(without["loss_focal"].item(), rel=1e-6)


@pytest.mark.timeout(600)
def test_eval_only_scores_the_zero_shot_benchmarks(benchmark_root: Path, tmp_path: Path) -> None:
    out = e2e.run_train_net(
        "configs/cascade_clip/cascade_clip_vitb16_512_coco171.py",
        ["--eval-only", "train.init_checkpoint=none", "train.seed=0",
         "model.clip_model=tiny-cascade-clip", "model.text_classifier=null",  # live text, tiny tower
         f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]", "dataloader.test.num_workers=0"],
        datasets_root=benchmark_root, output_dir=tmp_path,
    )
    e2e.assert_evaluated_in_order(out, EVAL_DATASETS)
    for name in EVAL_DATASETS:
        saved = e2e.saved_evaluation(tmp_path, name)
        metrics, conf = saved["metrics"], saved["conf_matrix"]
        assert {"mIoU-seen", "mIoU-unseen", "hIoU"} <= set(metrics), metrics
        seen, unseen = metrics["mIoU-seen"], metrics["mIoU-unseen"]
        expected = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
        assert metrics["hIoU"] == pytest.approx(expected, abs=1e-6)
        assert int(conf.sum()) > 0  # the miniature's annotated pixels were scored
