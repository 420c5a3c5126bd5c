"""End-to-end through tools/train_net.py:

1. configs/tcl/tcl_toy.py trains in 2 CPU processes (gloo) on the captions of a generated toy world,
   unfreezes the masker block mid-run in both processes, and writes a strictly loadable model.
2. One `--eval-only` run of configs/tcl/tcl_vitb16.py (tiny CLIP, random weights) scores all eight
   benchmarks of the paper, read from miniatures converted by the real `datasets/prepare_*.py`,
   with background by threshold on VOC-21 / PC-60 / COCO-Object and the mmseg metric convention.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TEST_PREPARE = REPO / "tests" / "data" / "test_prepare.py"
WITH_BACKGROUND = ["ovseg_voc21_val", "ovseg_pc60_val", "ovseg_coco_object_val"]
EIGHT = WITH_BACKGROUND + [
    "ovseg_voc20_val", "ovseg_pc59_val", "ovseg_coco_stuff171_val", "ovseg_cityscapes19_val", "ovseg_ade150_val",
]


def _train_net(config: str, flags: list[str], overrides: list[str], root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECTRON2_DATASETS": str(root), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", config, *flags, *overrides],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=540,
    )


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

    root = tmp_path_factory.mktemp("toy_datasets")
    generate_toy_world(root / "toy_world", ToyWorldConfig(num_train=16, num_val=4, num_retrieval=30), progress=False)
    return root


@pytest.mark.timeout(600)
def test_tcl_trains_on_captions_in_two_cpu_processes(toy_root: Path, tmp_path: Path) -> None:
    from ovseg_d2.clip import build_clip

    clip_weights = tmp_path / "tiny_clip.pt"
    torch.save(build_clip(REPO / "configs/toy/tiny_clip.json").state_dict(), clip_weights)
    proc = _train_net(
        "configs/tcl/tcl_toy.py",
        ["--num-gpus", "2"],
        [
            f"model.clip_weights={clip_weights}", "train.device=cpu", f"train.output_dir={tmp_path}", "train.max_iter=3", "train.log_period=1",
            "train.hooks.0.iteration=2",  # the masker block joins at the last step
            "dataloader.train.total_batch_size=4", "dataloader.test_datasets=[]",
        ],
        toy_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()
    assert re.search(r"Iteration 2: training 12 more parameters", out), out  # the copied block's 12 tensors
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    logged = {r["iteration"]: r for r in records if "total_loss" in r}
    assert sorted(logged) == [0, 1, 2]
    terms = ("loss_area", "loss_neg_area", "loss_tcl_feature", "loss_tv_image", "loss_tv_mask", "loss_tcl_image")
    assert all(set(terms) <= set(r) for r in logged.values())

    from ovseg_d2.engine import build_model, load_config

    trained = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)["model"]
    build_model(load_config(str(REPO / "configs/tcl/tcl_toy.py"), ["train.device=cpu"])).load_state_dict(
        trained, strict=True
    )
    clip = torch.load(clip_weights, weights_only=True)
    # CLIP stayed frozen; the decoder gates (initially 0) trained; the masker block, a copy of CLIP's
    # last block, trained after the switch.
    assert all(torch.equal(trained[f"clip_image.{k}"], v) for k, v in clip.items() if k.startswith("visual."))
    assert all(trained[f"decoder.{i}.{c}.gate"] != 0 for i in (0, 1) for c in ("conv", "conv2"))
    block = "clip_image.visual.transformer.resblocks.2."
    copied = [k for k in trained if k.startswith("masker_block.")]
    assert len(copied) == 12
    assert any(not torch.equal(trained[k], trained[block + k[len("masker_block."):]]) for k in copied)


def _load_test_prepare():
    spec = importlib.util.spec_from_file_location("_tcl_test_prepare_helpers", TEST_PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """VOC 2012 / PASCAL Context / COCO-Stuff (+ Object) / Cityscapes / ADE20K miniatures, prepared by the real scripts."""
    prep = _load_test_prepare()
    root = tmp_path_factory.mktemp("benchmarks")
    prep.make_voc(root, aug=True)
    prep.make_pc59(root)
    prep.make_ade150(root)
    prep.make_coco_stuff(root)
    prep.make_cityscapes(root)
    for script in ("prepare_voc", "prepare_pascal_context_59", "prepare_ade20k_150", "prepare_coco_stuff",
                   "prepare_cityscapes"):
        assert prep.run(script, root)["written"] > 0, script
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
def test_eval_only_scores_the_eight_benchmarks(benchmark_root: Path, tmp_path: Path, monkeypatch) -> None:
    proc = _train_net(
        "configs/tcl/tcl_vitb16.py",
        ["--eval-only"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", "train.init_checkpoint=none",
         "model.clip_model=tiny-tcl", "dataloader.test.num_workers=0"],
        benchmark_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-5000:]
    positions = [out.find(f"Evaluation results for {name}:") for name in EIGHT]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out[-3000:]

    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ovseg_d2.data.mappers import read_sem_seg

    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EIGHT:
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
        conf = saved["conf_matrix"].numpy().astype(np.float64)
        np.testing.assert_array_equal(conf.sum(axis=0), hist, err_msg=name)  # every GT pixel scored once
        # mmseg convention: a class predicted but absent from the ground truth counts as IoU 0; only
        # classes with neither are left out of the mean.
        tp = np.diag(conf[:k, :k])
        union = conf[:k, :k].sum(axis=0) + conf[:k, :k].sum(axis=1) - tp
        present = union > 0
        assert saved["metrics"]["mIoU"] == pytest.approx(100 * np.mean(tp[present] / union[present]), abs=1e-4), name
