"""End-to-end: tools/train_net.py with configs/catseg/catseg_toy.py (tiny CLIP, random weights).

1. Training in 2 CPU processes (gloo) on a generated toy world writes a loadable model_final.pth.
2. One `--eval-only` run evaluates several real benchmark names, read from miniatures in the
   registered on-disk layouts (raw miniatures of tests/data/test_prepare.py, converted by the real
   `datasets/prepare_*.py` scripts), and scores every ground-truth pixel of each exactly once.
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
CONFIG = "configs/catseg/catseg_toy.py"
TEST_PREPARE = REPO / "tests" / "data" / "test_prepare.py"

# voc20 / pc59 have a zero-shot split (seen/unseen/hIoU); voc20b folds 39 background prompts into
# class 20; voc21 / pc60 use the mmseg convention with background class 0.
EVAL_DATASETS = [
    "ovseg_voc20_val", "ovseg_voc20b_val", "ovseg_voc21_val",
    "ovseg_ade150_val", "ovseg_pc59_val", "ovseg_pc60_val",
]
WITH_UNSEEN = {"ovseg_voc20_val", "ovseg_pc59_val"}


def _env(datasets_root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DETECTRON2_DATASETS": str(datasets_root),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",
    }


def _train_net(flags: list[str], overrides: list[str], datasets_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", CONFIG, *flags, *overrides],
        env=_env(datasets_root), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=540,
    )


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def toy_datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$DETECTRON2_DATASETS holding a tiny toy world at the default `toy_world` sub-folder."""
    from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

    root = tmp_path_factory.mktemp("toy_datasets")
    generate_toy_world(root / "toy_world", ToyWorldConfig(num_train=16, num_val=8, num_retrieval=30),
                       progress=False)
    return root


@pytest.mark.timeout(600)
def test_catseg_trains_in_two_cpu_processes(toy_datasets_root: Path, tmp_path: Path) -> None:
    max_iter = 3
    proc = _train_net(
        ["--num-gpus", "2"],
        [
            "train.device=cpu",
            f"train.output_dir={tmp_path}",
            f"train.max_iter={max_iter}",
            "train.log_period=1",
            "train.checkpointer.period=100",
            "dataloader.train.total_batch_size=4",  # 2 images per process
        ],
        toy_datasets_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out

    # Both ranks joined one process group of size 2 (rank 1 logs to its own file).
    assert "Rank of current process: 0. World size: 2" in out, out
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()

    # Every iteration ran and logged a finite loss.
    records = [json.loads(line) for line in (tmp_path / "metrics.json").read_text().splitlines()]
    losses = {r["iteration"]: r["total_loss"] for r in records if "total_loss" in r}
    assert sorted(losses) == list(range(max_iter)), records
    assert all(math.isfinite(v) for v in losses.values()), losses

    # The final evaluation (EvalHook after the last iteration) ran on toy_val, split over 2 ranks.
    assert "on 2 devices" in out
    final = [r for r in records if "toy_val/sem_seg/mIoU" in r]
    assert len(final) == 1 and final[0]["iteration"] == max_iter, records
    saved = torch.load(tmp_path / "inference" / "toy_val" / "sem_seg_evaluation.pth", weights_only=False)
    for key in ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU"):  # the logged numbers are the evaluator's
        assert final[0][f"toy_val/sem_seg/{key}"] == pytest.approx(saved["metrics"][key], abs=1e-4), final[0]

    # model_final.pth holds the last iteration and loads strictly into a fresh CAT-Seg.
    checkpoint = torch.load(tmp_path / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == max_iter - 1
    assert {"optimizer", "hooks"} <= set(checkpoint["trainer"])  # the LR scheduler is in hooks
    from ovseg_d2.engine import build_model, load_config

    model = build_model(load_config(str(REPO / CONFIG), ["train.device=cpu"]))
    model.load_state_dict(checkpoint["model"], strict=True)
    assert any(k.startswith("aggregator.") for k in checkpoint["model"])


# ----------------------------------------------------------------------------- evaluation


def _load_test_prepare():
    """The raw-miniature writers of tests/data/test_prepare.py (a test module, not a package)."""
    spec = importlib.util.spec_from_file_location("_ovseg_test_prepare_helpers", TEST_PREPARE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw VOC 2012 / ADE20K / PASCAL-Context miniatures (24x32 images) prepared by the real scripts
    into the layouts the `ovseg_*` registrations read."""
    prep = _load_test_prepare()
    root = tmp_path_factory.mktemp("benchmarks")
    prep.make_voc(root, aug=True)
    prep.make_ade150(root)
    prep.make_pc59(root)
    for script in ("prepare_voc", "prepare_ade20k_150", "prepare_pascal_context_59"):
        assert prep.run(script, root)["written"] > 0
    return root


def _copypaste_block(out: str, name: str) -> dict[str, float]:
    """The `print_csv_format` lines logged after "Evaluation results for <name>:"."""
    match = re.search(
        rf"Evaluation results for {re.escape(name)}:\n.*copypaste: Task: sem_seg\n"
        r".*copypaste: (?P<keys>\S+)\n.*copypaste: (?P<values>\S+)\n",
        out,
    )
    assert match, f"no results printed for {name}:\n{out}"
    return dict(zip(match["keys"].split(","), map(float, match["values"].split(","))))


def _gt_histogram(name: str) -> np.ndarray:
    """Ground-truth pixel counts per class of the registered records, ignore counted as class K."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ovseg_d2.data.mappers import read_sem_seg

    meta = MetadataCatalog.get(name)
    k = len(meta.stuff_classes)
    hist = np.zeros(k + 1, np.int64)
    for record in DatasetCatalog.get(name):
        gt = read_sem_seg(record["sem_seg_file_name"])
        gt = np.where(gt == meta.ignore_label, k, gt)
        hist += np.bincount(gt.ravel(), minlength=k + 1)
    return hist


@pytest.mark.timeout(600)
def test_eval_only_reports_every_benchmark(
    benchmark_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _train_net(
        ["--eval-only"],
        ["train.device=cpu", f"train.output_dir={tmp_path}", "train.init_checkpoint=none",  # random weights
         f"dataloader.test_datasets=[{','.join(EVAL_DATASETS)}]"],
        benchmark_root,
    )
    out = proc.stdout
    assert proc.returncode == 0, out

    # Evaluated one after another, in the order given.
    positions = [out.find(f"Evaluation results for {name}:") for name in EVAL_DATASETS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out
    assert "seen (background)" in out  # VOC-20b's table marks class 20 as the background class

    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import MetadataCatalog

    monkeypatch.setenv("DETECTRON2_DATASETS", str(benchmark_root))
    for name in EVAL_DATASETS:
        printed = _copypaste_block(out, name)
        saved = torch.load(tmp_path / "inference" / name / "sem_seg_evaluation.pth", weights_only=False)
        metrics, conf = saved["metrics"], saved["conf_matrix"].numpy()
        # The printed summary is the saved one.
        for key, value in printed.items():
            assert value == pytest.approx(metrics[key], abs=1e-4), (name, key)
        scored = conf[:-1, :-1]  # pixel accuracy from the matrix itself (last row/column: ignored)
        assert metrics["pACC"] == pytest.approx(100 * np.trace(scored) / scored.sum(), abs=1e-6), (name, metrics)
        if name in WITH_UNSEEN:
            assert {"mIoU-seen", "mIoU-unseen", "hIoU"} <= set(metrics), (name, metrics)
            seen, unseen = metrics["mIoU-seen"], metrics["mIoU-unseen"]
            harmonic = 0.0 if seen + unseen == 0 else 2 * seen * unseen / (seen + unseen)
            assert printed["hIoU"] == pytest.approx(harmonic, abs=1e-4), (name, metrics)
        else:
            assert "hIoU" not in metrics, (name, metrics)

        # Every ground-truth pixel of every registered record was scored exactly once, and every
        # prediction (prompt channels folded) is one of the K classes.
        k = len(MetadataCatalog.get(name).stuff_classes)
        assert conf.shape == (k + 1, k + 1), name
        np.testing.assert_array_equal(conf.sum(axis=0), _gt_histogram(name), err_msg=name)
        assert conf[k].sum() == 0, name

    # The background column of VOC-20b (raw 0 -> 20) and PC-60 / VOC-21 (class 0) was scored.
    for name, background in (("ovseg_voc20b_val", 20), ("ovseg_voc21_val", 0), ("ovseg_pc60_val", 0)):
        conf = torch.load(tmp_path / "inference" / name / "sem_seg_evaluation.pth", weights_only=False)
        assert conf["conf_matrix"][:, background].sum() > 0, name
