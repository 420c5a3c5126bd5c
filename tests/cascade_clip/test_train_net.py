"""End-to-end tools/train_net.py runs of Cascade-CLIP (tiny CLIP, random weights).

1. configs/cascade_clip/cascade_clip_toy.py trains in 2 CPU processes (gloo) on a generated toy world;
   the transductive config restarts from its checkpoint (online pseudo-labels, one step in-process).
2. One `--eval-only` run of the published COCO-Stuff config (tiny CLIP, live text) scores VOC-20,
   PC-59 and COCO-Stuff-171 miniatures prepared by the real `datasets/prepare_*.py` scripts, with seen / unseen / hIoU.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TOY = "configs/cascade_clip/cascade_clip_toy.py"
TOY_ST = "configs/cascade_clip/cascade_clip_toy_st.py"
TEST_PREPARE = REPO / "tests" / "data" / "test_prepare.py"
EVAL_DATASETS = ["ovseg_voc20_val", "ovseg_pc59_val", "ovseg_coco_stuff171_val"]  # the three zero-shot benchmarks


def _train_net(config: str, flags: list[str], overrides: list[str], datasets_root: Path) -> str:
    env = {**os.environ, "DETECTRON2_DATASETS": str(datasets_root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", config, *flags, *overrides],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

    root = tmp_path_factory.mktemp("toy_datasets")
    generate_toy_world(root / "toy_world", ToyWorldConfig(num_train=8, num_val=4, num_retrieval=30), progress=False)
    return root


def _losses(output_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]
    return {r["iteration"]: r["total_loss"] for r in records if "total_loss" in r}


@pytest.mark.timeout(600)
def test_inductive_then_transductive_training_in_two_processes(
    toy_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    common = ["train.device=cpu", "train.log_period=1", "train.checkpointer.period=100",
              "dataloader.train.total_batch_size=4", "dataloader.test_datasets=[]"]
    inductive = tmp_path / "inductive"
    _train_net(TOY, ["--num-gpus", "2"], [*common, f"train.output_dir={inductive}", "train.max_iter=2"], toy_root)
    assert "Rank of current process: 1. World size: 2" in (inductive / "log.txt.rank1").read_text()
    losses = _losses(inductive)
    assert sorted(losses) == [0, 1] and all(math.isfinite(v) for v in losses.values()), losses

    # The transductive config restarts from that checkpoint (in-process, one step): pixels of unseen
    # classes get pseudo-labels, so its loss differs from the same step without self-training.
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import instantiate

    from ovseg_d2.engine import build_model, load_config

    monkeypatch.setenv("DETECTRON2_DATASETS", str(toy_root))
    cfg = load_config(str(REPO / TOY_ST), ["train.device=cpu", f"train.init_checkpoint={inductive}/model_final.pth",
                                           "dataloader.train.total_batch_size=2"])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    trained = torch.load(inductive / "model_final.pth", map_location="cpu", weights_only=False)["model"]
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


def _load_test_prepare():
    spec = importlib.util.spec_from_file_location("_cascade_test_prepare_helpers", TEST_PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prep = _load_test_prepare()
    root = tmp_path_factory.mktemp("benchmarks")
    prep.make_voc(root, aug=True)
    prep.make_pc59(root)
    prep.make_coco_stuff(root)
    for script in ("prepare_voc", "prepare_pascal_context_59", "prepare_coco_stuff"):
        assert prep.run(script, root)["written"] > 0
    return root


@pytest.mark.timeout(600)
def test_eval_only_scores_the_zero_shot_benchmarks(benchmark_root: Path, tmp_path: Path) -> None:
    out = _train_net(
        "configs/cascade_clip/cascade_clip_vitb16_512_coco171.py", ["--eval-only"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", "train.init_checkpoint=none",
         "model.clip_model=tiny-cascade-clip", "model.text_classifier=null",  # live text, tiny tower
         f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]", "dataloader.test.num_workers=0"],
        benchmark_root,
    )
    positions = [out.find(f"Evaluation results for {name}:") for name in EVAL_DATASETS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out
    for name in EVAL_DATASETS:
        saved = torch.load(tmp_path / "inference" / name / "sem_seg_evaluation.pth", weights_only=False)
        metrics, conf = saved["metrics"], saved["conf_matrix"]
        assert {"mIoU-seen", "mIoU-unseen", "hIoU"} <= set(metrics), metrics
        seen, unseen = metrics["mIoU-seen"], metrics["mIoU-unseen"]
        expected = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
        assert metrics["hIoU"] == pytest.approx(expected, abs=1e-6)
        assert int(conf.sum()) > 0  # the miniature's annotated pixels were scored
