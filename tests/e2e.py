"""The end-to-end harness: run `tools/train_net.py` in a subprocess, then read back what it wrote
(log, metrics.json, model_final.pth, the evaluations saved under inference/).

Imported as `tests.e2e` (see tests/conftest.py for why `tests` is importable); the datasets these
runs read are the session fixtures of tests/conftest.py. Each method's tests/<method>/test_train_net*.py
holds only its config, its overrides and its assertions.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_NET_TIMEOUT_S = 540  # under the tests' 600 s pytest timeout: a hung run fails with its output


def run_train_net(config: str, args: list[str], *, datasets_root: Path, output_dir: Path) -> str:
    """`tools/train_net.py --config-file <config> <args>` on CPU (`train.device=cpu`), writing into
    `output_dir`, with `$DETECTRON2_DATASETS=datasets_root`; asserts it exited with 0 and returns its
    stdout and stderr, interleaved."""
    env = {
        **os.environ,
        "DETECTRON2_DATASETS": str(datasets_root),
        # One OpenMP thread per process, idle threads sleep: 2 processes share a 2-core machine.
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONUNBUFFERED": "1",  # the log of a run that dies is complete and in order
        "HF_HUB_OFFLINE": "1",  # tokenizers are local files (OVSegmentor's BERT): never ask the hub
    }
    proc = subprocess.run(
        [sys.executable, "tools/train_net.py", "--config-file", config, *args,
         "train.device=cpu", f"train.output_dir={output_dir}"],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=TRAIN_NET_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def two_process_training(max_iter: int) -> list[str]:
    """The arguments of a short training in 2 CPU processes (gloo) that logs every iteration."""
    return ["--num-gpus", "2", f"train.max_iter={max_iter}", "train.log_period=1"]


# ----------------------------------------------------------------------------- training outputs


def assert_rank1_joined_two_processes(output_dir: Path) -> None:
    """Rank 1 (which logs to its own file) joined a process group of size 2."""
    assert "Rank of current process: 1. World size: 2" in (output_dir / "log.txt.rank1").read_text()


def metrics_records(output_dir: Path) -> list[dict[str, Any]]:
    """The records of `output_dir/metrics.json`, one JSON object a line, in order."""
    return [json.loads(line) for line in (output_dir / "metrics.json").read_text().splitlines()]


def training_records(output_dir: Path, max_iter: int) -> dict[int, dict[str, Any]]:
    """The metrics.json record of every training iteration (those with a `total_loss`), by iteration,
    after checking that each of the `max_iter` iterations logged one."""
    records = {r["iteration"]: r for r in metrics_records(output_dir) if "total_loss" in r}
    assert sorted(records) == list(range(max_iter)), records
    return records


def final_checkpoint(output_dir: Path) -> dict[str, Any]:
    """`output_dir/model_final.pth` as the trainer saved it (model, iteration, trainer state)."""
    return torch.load(output_dir / "model_final.pth", map_location="cpu", weights_only=False)


def build_fresh_model(config: str) -> torch.nn.Module:
    """The model `config` (a path relative to the repository) builds on CPU, before any loading."""
    from ovseg_d2.engine import build_model, load_config

    return build_model(load_config(str(REPO / config), ["train.device=cpu"]))


# ----------------------------------------------------------------------------- evaluation outputs


def assert_evaluated_in_order(out: str, names: list[str]) -> None:
    """Every dataset of `names` was evaluated, one after another in the order given."""
    positions = [out.find(f"Evaluation results for {name}:") for name in names]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), out[-3000:]


def copypaste_block(out: str, name: str) -> dict[str, float]:
    """The metrics Detectron2's `print_csv_format` logged ("copypaste:" lines) after
    "Evaluation results for <name>:"."""
    match = re.search(
        rf"Evaluation results for {re.escape(name)}:\n.*copypaste: Task: sem_seg\n"
        r".*copypaste: (?P<keys>\S+)\n.*copypaste: (?P<values>\S+)\n",
        out,
    )
    assert match, f"no results printed for {name}:\n{out[-3000:]}"
    return dict(zip(match["keys"].split(","), map(float, match["values"].split(","))))


def saved_evaluation(output_dir: Path, name: str, file: str = "sem_seg_evaluation.pth") -> dict[str, Any]:
    """What the evaluator of dataset `name` saved: `output_dir/inference/<name>/<file>`."""
    return torch.load(output_dir / "inference" / name / file, weights_only=False)


def checked_sem_seg_evaluation(out: str, output_dir: Path, name: str) -> dict[str, Any]:
    """The semantic-segmentation evaluation saved for `name` (metrics, conf_matrix), after checking
    that the summary printed for it holds the saved numbers (NaN where both say NaN: e.g. the hIoU of
    a miniature whose unseen classes are neither in its ground truth nor predicted)."""
    saved = saved_evaluation(output_dir, name)
    for key, value in copypaste_block(out, name).items():
        assert value == pytest.approx(saved["metrics"][key], abs=1e-4, nan_ok=True), (name, key)
    return saved


def gt_histogram(name: str) -> np.ndarray:
    """Ground-truth pixel counts per class of the registered records of `name` (read under the
    current $DETECTRON2_DATASETS), the ignore label counted as class K."""
    import ovseg_d2.data  # noqa: F401  (registers the datasets)
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ovseg_d2.data.mappers import read_sem_seg

    meta = MetadataCatalog.get(name)
    k = len(meta.stuff_classes)
    hist = np.zeros(k + 1, np.int64)
    for record in DatasetCatalog.get(name):
        gt = read_sem_seg(record["sem_seg_file_name"])
        hist += np.bincount(np.where(gt == meta.ignore_label, k, gt).ravel(), minlength=k + 1)
    return hist


def assert_every_gt_pixel_scored_once(conf: np.ndarray, name: str) -> None:
    """The confusion matrix (columns: ground truth, the last one ignore) counts every ground-truth
    pixel of every registered record of `name` exactly once."""
    np.testing.assert_array_equal(conf.sum(axis=0), gt_histogram(name), err_msg=name)
