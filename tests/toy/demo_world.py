"""The output folder the toy-demo tests start from, as tools/run_demo.py prepares it: a 96x96 toy
world (configs/catseg/catseg_toy.py: clip_resolution and crop 96; unlike the 64x64 world of
conftest.py) and an untrained tiny CLIP exported as tools/pretrain_toy_clip.py exports its own.
Imported as `tests.toy.demo_world`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world, register_toy_world
from ovseg_d2.modeling.contrastive_clip import ContrastiveCLIP, export_clip_checkpoint

REPO = Path(__file__).resolve().parents[2]
WORLD = ToyWorldConfig(num_train=8, num_val=4, num_retrieval=30, image_size=96, seed=3, shard_size=10)


def write_demo_world(output: Path, clip_trainer_checkpoint: Path, clip_checkpoint: Path) -> Path:
    """`output/toy_world` (`WORLD`), and a random tiny CLIP (configs/toy/tiny_clip.json, seed 0) saved
    as a trainer checkpoint at iteration 0 and exported to the open_clip checkpoint the stages load;
    returns the exported file."""
    generate_toy_world(output / "toy_world", WORLD, progress=False)
    torch.manual_seed(0)
    clip = ContrastiveCLIP(clip_model=REPO / "configs/toy/tiny_clip.json")
    clip_trainer_checkpoint.parent.mkdir(parents=True)
    torch.save({"model": clip.state_dict(), "iteration": 0}, clip_trainer_checkpoint)
    return export_clip_checkpoint(clip_trainer_checkpoint, clip_checkpoint)


@contextmanager
def demo_environment(output: Path) -> Iterator[pytest.MonkeyPatch]:
    """Inside: $DETECTRON2_DATASETS=output (as tools/run_demo.py sets it), the default `toy_*`
    registration (another test may have pointed it elsewhere) and one intra-op thread (small ops on
    a shared 2-core machine; see tests/conftest.py); all restored after. Yields the MonkeyPatch."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DETECTRON2_DATASETS", str(output))
        register_toy_world()
        torch.set_num_threads(1)
        try:
            yield mp
        finally:
            torch.set_num_threads(threads)
            register_toy_world()
