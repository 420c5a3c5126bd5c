"""End-to-end: tools/train_net.py trains and evaluates the dense baseline on a generated VOC
miniature, in 1 and 2 CPU processes (gloo), and resumes an interrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from detectron2.engine import launch

from tests.engine import _workers

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs" / "toy" / "dense_baseline.py")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads thread names from /proc")
def test_shutdown_destroys_the_process_groups_and_their_threads_in_every_rank(tmp_path: Path) -> None:
    # Gloo threads left alive until interpreter exit made a finished rank abort (SIGABRT) in CI.
    launch(_workers.shut_down_and_record, 2, dist_url="auto", args=(str(tmp_path),))
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {
            "before": {"initialized": True, "gloo_threads": True},
            "after": {"initialized": False, "gloo_threads": []},
        }


def test_two_cpu_processes_train_identical_weights(
    voc_root: Path, tmp_path: Path, monkeypatch, tiny_baseline_overrides: list[str]
) -> None:
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc_root))
    overrides = tiny_baseline_overrides + [
        f"train.output_dir={tmp_path}",
        "train.max_iter=3",
        "train.checkpointer.period=100",
    ]
    launch(_workers.train_and_save_weights, 2, dist_url="auto", args=(CONFIG, overrides, str(tmp_path)))
    rank0 = torch.load(tmp_path / "rank0.pth")
    rank1 = torch.load(tmp_path / "rank1.pth")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        torch.testing.assert_close(rank0[key], rank1[key], rtol=0, atol=0, msg=key)
    # rank 0 checkpointed exactly the weights both ranks ended with
    assert (tmp_path / "model_final.pth").is_file()
    final = torch.load(tmp_path / "model_final.pth", weights_only=False)["model"]
    torch.testing.assert_close(final["head.0.weight"], rank0["head.0.weight"])
    # a finished training run (DDP, evaluation, detectron2's gathers) leaves no gloo thread behind
    for rank in range(2):
        assert json.loads((tmp_path / f"rank{rank}_gloo_threads.json").read_text()) == [], rank


def _run_train_net(args: list[str], env: dict[str, str], stdout=subprocess.PIPE) -> subprocess.Popen:
    flags = [a for a in args if a.startswith("--")]
    overrides = [a for a in args if not a.startswith("--")]
    return subprocess.Popen(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", CONFIG, *flags, *overrides],
        env=env, cwd=REPO, stdout=stdout, stderr=subprocess.STDOUT, text=True,
    )


def _iterations_logged(output_dir: Path) -> list[int]:
    lines = (output_dir / "metrics.json").read_text().splitlines()
    return [json.loads(line)["iteration"] for line in lines if '"total_loss"' in line]


def test_resume_continues_from_last_checkpoint(
    voc_root: Path, tmp_path: Path, tiny_baseline_overrides: list[str]
) -> None:
    env = {**os.environ, "DETECTRON2_DATASETS": str(voc_root), "PYTHONUNBUFFERED": "1"}
    # max_to_keep: the run is fast, older checkpoints must not be rotated away while we poll.
    common = tiny_baseline_overrides + [
        f"train.output_dir={tmp_path}", "train.checkpointer.period=2", "train.checkpointer.max_to_keep=1000"
    ]
    # An interrupted run: killed once its second periodic checkpoint (iteration 3) exists. Its log
    # goes to a file: an unread pipe would fill up and block the run.
    log = tmp_path / "interrupted.log"
    with log.open("w") as log_file:
        proc = _run_train_net(common + ["train.max_iter=100000"], env, stdout=log_file)
        deadline = time.time() + 300
        while not (tmp_path / "model_0000003.pth").exists():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "the run never wrote its checkpoint:\n" + log.read_text()
            time.sleep(0.5)
        time.sleep(0.5)  # let the checkpointer finish writing `last_checkpoint`
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    last = (tmp_path / "last_checkpoint").read_text().strip()
    saved = torch.load(tmp_path / last, weights_only=False)
    start = saved["iteration"] + 1

    # Resuming loads that checkpoint (weights, optimizer, scheduler, iteration) and trains only the
    # remaining iterations.
    logged_before = _iterations_logged(tmp_path)
    more = _run_train_net(common + [f"train.max_iter={start + 3}", "--resume"], env)
    out, _ = more.communicate(timeout=240)
    assert more.returncode == 0, out
    assert f"[Checkpointer] Loading from {tmp_path / last}" in out, out
    assert f"Starting training from iteration {start}" in out
    new = _iterations_logged(tmp_path)[len(logged_before):]
    assert new and min(new) >= start and max(new) == start + 2, new


def test_eval_only_reports_metrics(
    voc_root: Path, tmp_path: Path, tiny_baseline_overrides: list[str]
) -> None:
    env = {**os.environ, "DETECTRON2_DATASETS": str(voc_root)}
    # The training-free baseline: evaluated without a checkpoint, which must be said explicitly.
    args = tiny_baseline_overrides + [
        f"train.output_dir={tmp_path}", "model.head=none", "train.init_checkpoint=none", "--eval-only"
    ]
    proc = _run_train_net(args, env)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    saved = torch.load(tmp_path / "inference" / "ovseg_voc20_val" / "sem_seg_evaluation.pth", weights_only=False)
    conf = saved["conf_matrix"].numpy()  # [prediction, ground truth], last row/column = ignored
    # Every ground-truth pixel of the miniature is counted exactly once, in its own class's column.
    gt_dir = voc_root / "VOCdevkit" / "VOC2012" / "annotations_detectron2" / "val"
    labels = np.concatenate([np.asarray(Image.open(p)).ravel() for p in sorted(gt_dir.glob("*.png"))])
    assert conf.shape == (21, 21)
    for cls in range(20):
        assert conf[:, cls].sum() == (labels == cls).sum(), cls
    assert conf[:, 20].sum() == (labels == 255).sum()
    # mIoU follows from the matrix (detectron2 convention: only classes present in the ground truth).
    present = [c for c in range(20) if conf[:, c].sum() > 0]
    assert present == [0, 1]
    ious = [conf[c, c] / (conf[c, :20].sum() + conf[:20, c].sum() - conf[c, c]) for c in present]
    assert saved["metrics"]["mIoU"] == pytest.approx(100 * float(np.mean(ious)), abs=1e-6)
