"""Training runs of the exact-resume tests, importable by the processes detectron2's `launch` spawns
(spawn pickles functions by module name): an uninterrupted run, a run killed with SIGKILL at a
given iteration, and its resumption; each records its per-iteration losses."""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch
from detectron2.config import LazyCall as L
from detectron2.engine import HookBase, launch

LOSSES_FILE = "losses.txt"
CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "toy" / "dense_baseline.py")
MAX_ITER, PERIOD = 20, 5
_REFERENCE_RUNS: dict[int, Path] = {}


def overrides(output_dir: Path) -> list[str]:
    """The dense baseline on the VOC miniature (tests/engine/conftest.py), with every augmentation
    on (random crop, photometric distortion, flip), `MAX_ITER` iterations, checkpoints every `PERIOD`."""
    from tests.engine.conftest import TINY_BASELINE_OVERRIDES

    return TINY_BASELINE_OVERRIDES + [
        f"train.output_dir={output_dir}",
        f"train.max_iter={MAX_ITER}",
        f"train.checkpointer.period={PERIOD}",
        "train.checkpointer.max_to_keep=100",
        "train.seed=7",
        "dataloader.train.mapper.augmentations.crop_size=[48,48]",
        "dataloader.train.mapper.augmentations.photometric=True",
    ]


class KillAt(HookBase):
    """`kill -9` of this process when iteration `iteration` is about to start."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def before_step(self) -> None:
        if self.trainer.iter == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)


class RecordLosses(HookBase):
    """Appends "iteration total_loss" after every step (main process, where the trainer stores the
    loss averaged over processes); a line per write, so a killed run keeps what it logged."""

    def __init__(self, path: str):
        self.path = path

    def after_step(self) -> None:
        if "total_loss" in self.trainer.storage.histories():
            with open(self.path, "a") as f:
                f.write(f"{self.trainer.iter} {self.trainer.storage.history('total_loss').latest()!r}\n")


def train(config: str, overrides: list[str], resume: bool, kill_at: int | None) -> None:
    from detectron2.utils import comm

    from ovseg_d2.engine import do_train, load_config, shutdown_distributed

    cfg = load_config(config, overrides)
    output_dir = Path(cfg.train.output_dir)
    cfg.train.hooks = [*cfg.train.hooks, L(RecordLosses)(path=str(output_dir / LOSSES_FILE))]
    if kill_at is not None:
        cfg.train.hooks.append(L(KillAt)(iteration=kill_at))
    model = do_train(cfg, resume=resume)
    torch.save(model.state_dict(), output_dir / f"rank{comm.get_rank()}.pth")
    shutdown_distributed()


def launch_training(
    num_processes: int, config: str, overrides: list[str], resume: bool = False, kill_at: int | None = None
) -> None:
    launch(train, num_processes, dist_url="auto", args=(config, overrides, resume, kill_at))


def reference_run(num_processes: int, tmp_path_factory: Any) -> Path:
    """Output directory of the uninterrupted run in `num_processes` processes, trained once per
    pytest session (the resume and multi-machine tests compare against it)."""
    if num_processes not in _REFERENCE_RUNS:
        output_dir = tmp_path_factory.mktemp(f"uninterrupted{num_processes}")
        launch_training(num_processes, CONFIG, overrides(output_dir))
        _REFERENCE_RUNS[num_processes] = output_dir
    return _REFERENCE_RUNS[num_processes]


def read_losses(output_dir: Path) -> dict[int, float]:
    """Iteration -> loss; a resumed run's value replaces the one its killed predecessor logged."""
    losses: dict[int, float] = {}
    for line in (output_dir / LOSSES_FILE).read_text().splitlines():
        iteration, loss = line.split()
        losses[int(iteration)] = float(loss)
    return losses
