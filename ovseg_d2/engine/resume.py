"""Exact resume: where a run restarts, with which seed, and randomness that does not depend on
having been interrupted.

A run is a pure function of its seed (`train.seed`; -1 draws one, which is logged and recorded):
the data stream and its augmentations come from `build_resumable_train_loader` positioned at the
resumed iteration, and the model-side randomness of iteration i (dropout, sampled points) from
`ReseedEachIteration` (model initialisation: from the seed too). The seed is saved with the
trainer state of every checkpoint and read back by `--resume`, which restarts from the newest
intact checkpoint of the output directory.
"""
from __future__ import annotations

import copy
import inspect
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.registry import locate
from omegaconf import DictConfig

from ovseg_d2.data.mappers.loaders import TRAINING_STEP, derive_seed

logger = logging.getLogger(__name__)

LOADER_POSITION_ARGS = ("seed", "start_iter")


@dataclass(frozen=True)
class ResumePoint:
    """Where training starts: from `checkpoint` (None: from `train.init_checkpoint`) at
    iteration `start_iter`, with the run's `seed`."""

    seed: int
    start_iter: int = 0
    checkpoint: str | None = None


def seed_global_rngs(seed: int, stream: int, *position: int) -> None:
    """Seeds Python, NumPy and torch (CPU and every CUDA device) from (seed, stream, position)."""
    value = derive_seed(seed, stream, *position)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


class ReseedEachIteration(HookBase):
    """Seeds the global RNGs from (seed, iteration, rank) before every step, so the model-side
    randomness of an iteration is the same whether or not the run was resumed before it. Its
    state, the seed, is saved in every checkpoint (trainer state) for `--resume`."""

    def __init__(self, seed: int):
        self.seed = seed

    def before_step(self) -> None:
        seed_global_rngs(self.seed, TRAINING_STEP, self.trainer.iter, comm.get_rank())

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise RuntimeError(
                f"checkpoint of seed {state['seed']} loaded into a run of seed {self.seed}"
            )


def _read_checkpoint(path: str) -> tuple[int, int | None]:
    """(iteration, recorded seed) of a training checkpoint; tensors are memory-mapped, not read."""
    content = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    if not isinstance(content, dict) or "iteration" not in content:
        raise ValueError("not a training checkpoint (no 'iteration')")
    hooks = content.get("trainer", {}).get("hooks", {})
    return int(content["iteration"]), hooks.get(ReseedEachIteration.__qualname__, {}).get("seed")


def find_resume_checkpoint(output_dir: str) -> tuple[str, int, int | None] | None:
    """(path, iteration, seed) of the checkpoint to resume from: the one `last_checkpoint` names,
    else (warning which file is corrupt or missing, and why) the newest readable `model_*.pth`.
    None when `output_dir` holds no checkpoint; an error when none can be read."""
    save_dir = Path(output_dir)
    tag = save_dir / "last_checkpoint"
    named = [os.path.join(output_dir, tag.read_text().strip())] if tag.is_file() else []
    newest_first = sorted(
        save_dir.glob("model_*.pth"), key=lambda p: (p.stat().st_mtime, p.name), reverse=True
    )
    candidates = named + [str(p) for p in newest_first if str(p) not in named]
    if not candidates:
        return None
    failures = [] if named else [f"{tag}: missing"]
    for path in candidates:
        try:
            iteration, seed = _read_checkpoint(path)
        except Exception as err:  # truncated, foreign, ...: any reason to skip it, reported below
            reason = str(err).split(". ")[0]  # torch appends generic advice to its first sentence
            failures.append(f"{path}: {type(err).__name__}: {reason}")
            continue
        if failures:
            logger.warning(
                "--resume: skipping unreadable checkpoint(s):\n  %s\nresuming from %s instead, the "
                "newest intact checkpoint in %s", "\n  ".join(failures), path, output_dir,
            )
        return path, iteration, seed
    raise RuntimeError(
        f"--resume: no intact checkpoint in {output_dir}:\n  " + "\n  ".join(failures)
        + f"\nDelete {tag} to train from scratch."
    )


def plan_resume(output_dir: str, requested_seed: int, resume: bool) -> ResumePoint:
    """The start of a run. `requested_seed` is `train.seed` (-1: a random seed, drawn on rank 0 and
    shared); a resumed run keeps the seed recorded in its checkpoint."""
    found = find_resume_checkpoint(output_dir) if resume else None
    if found is None:
        if resume:
            logger.info("--resume: no checkpoint in %s, training from scratch", output_dir)
        seed = requested_seed if requested_seed >= 0 else comm.shared_random_seed()
        drawn = " (train.seed=-1: drawn at random)" if requested_seed < 0 else ""
        logger.info("Training seed %d%s", seed, drawn)
        return ResumePoint(seed)
    path, iteration, seed = found
    if seed is None:
        seed = requested_seed if requested_seed >= 0 else comm.shared_random_seed()
        logger.warning(
            "%s records no seed (written before exact resume): the data order and augmentations "
            "restart with seed %d, so the resumed run differs from an uninterrupted one",
            path, seed,
        )
    elif requested_seed >= 0 and requested_seed != seed:
        logger.warning("train.seed=%d ignored: resuming the run of seed %d", requested_seed, seed)
    logger.info("Resuming from %s at iteration %d, seed %d", path, iteration + 1, seed)
    return ResumePoint(seed, iteration + 1, path)


def build_train_loader(loader_cfg: DictConfig, point: ResumePoint) -> Any:
    """Instantiates `dataloader.train` with the run's `seed` and positioned at `point.start_iter`.
    A loader without these arguments (e.g. Detectron2's `build_detection_train_loader`) is built as
    configured, with a warning on resume: its data restarts from the beginning."""
    for key in LOADER_POSITION_ARGS:
        if key in loader_cfg:
            raise ValueError(
                f"dataloader.train.{key} is set by the trainer (from train.seed and the resumed "
                "iteration): remove it from the config"
            )
    target = loader_cfg._target_
    target = locate(target) if isinstance(target, str) else target
    loader_cfg = copy.deepcopy(loader_cfg)
    if set(LOADER_POSITION_ARGS) <= inspect.signature(target).parameters.keys():
        loader_cfg.seed, loader_cfg.start_iter = point.seed, point.start_iter
    elif point.start_iter > 0:
        logger.warning(
            "dataloader.train (%s) takes no `seed`/`start_iter`: its data order and augmentations "
            "restart from the beginning, so this resumed run is not the uninterrupted one "
            "(ovseg_d2.data.mappers.build_resumable_train_loader is resumable)",
            getattr(target, "__qualname__", target),
        )
    return instantiate(loader_cfg)

