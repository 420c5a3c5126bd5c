"""Multi-machine training: `tools/train_net.py --num-machines 2 --machine-rank {0,1} --dist-url
tcp://127.0.0.1:PORT`, two launches of one process each on this host (gloo, CPU), train the dense
baseline to the same weights as two processes on one machine."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.engine.launch import _find_free_port

from tests.engine import _resume_workers as workers
from tests.engine._resume_workers import CONFIG, overrides

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_two_machines_train_like_two_local_processes(
    voc_root: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DETECTRON2_DATASETS", str(voc_root))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # gloo: launch() would pick NCCL on a GPU machine
    url = f"tcp://127.0.0.1:{_find_free_port()}"
    launches = [
        subprocess.Popen(
            [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", CONFIG,
             "--num-gpus", "1", "--num-machines", "2", "--machine-rank", str(rank), "--dist-url", url,
             *overrides(tmp_path)],
            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [proc.communicate(timeout=500)[0] for proc in launches]
    for rank, (proc, out) in enumerate(zip(launches, outputs)):
        assert proc.returncode == 0, f"machine {rank}:\n{out}"
    assert "Rank of current process: 1. World size: 2" in (tmp_path / "log.txt.rank1").read_text()

    # the uninterrupted 2-process run of the resume tests (same config), on one machine
    expected = torch.load(workers.reference_run(2, tmp_path_factory) / "rank0.pth")
    trained = torch.load(tmp_path / "model_final.pth", weights_only=True)["model"]
    assert trained.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(trained[key], expected[key], rtol=0, atol=1e-6, msg=key)
