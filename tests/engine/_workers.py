"""Functions run inside processes started by detectron2's `launch` (spawn pickles them by module
name, so they live in a plain module that the children can import)."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def train_and_save_weights(config: str, overrides: list[str], out_dir: str) -> None:
    from detectron2.utils import comm

    from ovseg_d2.engine import do_train, load_config, shutdown_distributed

    model = do_train(load_config(config, overrides))
    rank = comm.get_rank()
    torch.save(model.state_dict(), Path(out_dir) / f"rank{rank}.pth")
    shutdown_distributed()
    (Path(out_dir) / f"rank{rank}_gloo_threads.json").write_text(json.dumps(gloo_threads()))


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads (a group's worker threads and its transport loop)."""
    tasks = Path("/proc/self/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()]
    return sorted(name for name in names if "gloo" in name)


def shut_down_and_record(out_dir: str) -> None:
    """Record whether the process group and its threads are alive before and after
    `shutdown_distributed`, after a detectron2 all_gather (which caches the group it used)."""
    from detectron2.utils import comm
    from torch import distributed as dist

    from ovseg_d2.engine import shutdown_distributed

    rank = comm.get_rank()
    assert comm.all_gather(rank) == [0, 1]
    before = {"initialized": dist.is_initialized(), "gloo_threads": bool(gloo_threads())}
    shutdown_distributed()
    after = {"initialized": dist.is_initialized(), "gloo_threads": gloo_threads()}
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps({"before": before, "after": after}))
