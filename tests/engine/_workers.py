"""Functions run inside processes started by detectron2's `launch` (spawn pickles them by module
name, so they live in a plain module that the children can import)."""
from __future__ import annotations

from pathlib import Path

import torch


def train_and_save_weights(config: str, overrides: list[str], out_dir: str) -> None:
    from detectron2.utils import comm

    from ovseg_d2.engine import do_train, load_config

    model = do_train(load_config(config, overrides))
    torch.save(model.state_dict(), Path(out_dir) / f"rank{comm.get_rank()}.pth")
