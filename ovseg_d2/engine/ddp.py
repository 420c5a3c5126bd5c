"""DistributedDataParallel that also works for CPU modules (gloo).

Detectron2's `create_ddp_model` always passes `device_ids=[local_rank]`, which PyTorch rejects
for a module on the CPU ("device_ids ... only work with single-device GPU modules"). Multi-process
CPU training (tests, CI, laptops) needs `device_ids=None` there.
"""
from __future__ import annotations

import gc
from typing import Any

from detectron2.utils import comm
from torch import distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def create_ddp_model(model: nn.Module, *, fp16_compression: bool = False, **kwargs: Any) -> nn.Module:
    """Wrap `model` in DDP when more than one process runs; returns it unchanged otherwise."""
    if comm.get_world_size() == 1:
        return model
    on_gpu = next(model.parameters()).device.type == "cuda"
    if on_gpu:
        kwargs.setdefault("device_ids", [comm.get_local_rank()])
    else:
        kwargs["device_ids"] = None
        kwargs.pop("output_device", None)
    ddp = DistributedDataParallel(model, **kwargs)
    if fp16_compression:
        from torch.distributed.algorithms.ddp_comm_hooks import default as comm_hooks

        ddp.register_comm_hook(state=None, hook=comm_hooks.fp16_compress_hook)
    return ddp


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (the model itself when not wrapped)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def shutdown_distributed() -> None:
    """Wait for every process, destroy the process groups and drop detectron2's references to them
    (a no-op in a single process). Call it at the end of every multi-process worker.

    A gloo group's threads stop only when the last reference to the group goes. Left alive, they are
    torn down during interpreter finalization, and a rank can then abort with "terminate called
    without an active exception" (SIGABRT) after a finished run. `destroy_process_group` alone is
    not enough: `detectron2.utils.comm` keeps two references of its own (see
    `_release_detectron2_groups`), and a finished training run leaves garbage cycles that still
    reach the group (the trainer and its DDP-wrapped model), freed here by a garbage collection.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    comm.synchronize()
    dist.destroy_process_group()
    _release_detectron2_groups()
    gc.collect()


def _release_detectron2_groups() -> None:
    """detectron2 keeps WORLD in `_get_global_gloo_group`'s cache (used by `comm.all_gather` and
    `comm.gather`) and the per-machine group that `launch` creates in `_LOCAL_PROCESS_GROUP` (with
    `create_local_process_group` cached so that it runs once); detectron2 has no public call to
    release them. Resetting all three also lets a later `launch` in the same process start afresh."""
    comm._get_global_gloo_group.cache_clear()
    comm.create_local_process_group.cache_clear()
    comm._LOCAL_PROCESS_GROUP = None
