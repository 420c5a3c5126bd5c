"""Functions run inside processes started by detectron2's `launch` (spawn pickles them by module
name, so they live in a plain module that the children can import)."""
from __future__ import annotations

from pathlib import Path

import torch


def train_and_save_weights(config: str, overrides: list[str], out_dir: str) -> None:
    from detectron2.utils import comm

    from ovseg_d2.engine import do_train, load_config, shutdown_distributed

    model = do_train(load_config(config, overrides))
    torch.save(model.state_dict(), Path(out_dir) / f"rank{comm.get_rank()}.pth")
    shutdown_distributed()


def shut_down_and_record(out_dir: str) -> None:
    """Record whether the process group is alive before and after `shutdown_distributed`."""
    import json

    from detectron2.utils import comm
    from torch import distributed as dist

    from ovseg_d2.engine import shutdown_distributed

    rank = comm.get_rank()
    before = dist.is_initialized()
    shutdown_distributed()
    record = {"before": before, "after": dist.is_initialized()}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))
