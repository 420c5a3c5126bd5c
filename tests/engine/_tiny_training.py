"""A seconds-long `do_train` run without data or CLIP: a two-layer regressor on random vectors (each
process draws its own), for the hook tests; importable by processes that detectron2's `launch`
spawns (they pickle functions by module name)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.engine.train_loop import HookBase
from fvcore.common.param_scheduler import LinearParamScheduler
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ovseg_d2.engine import build_optimizer, unwrap

REPO = Path(__file__).resolve().parents[2]


class TinyRegressor(nn.Module):
    """`body` (frozen at construction) then `head`; records the model-step callbacks it receives."""

    def __init__(self, freeze_body: bool = True) -> None:
        super().__init__()
        self.body = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)
        self.body.requires_grad_(not freeze_body)
        self.step_calls: list[str | int] = []

    def forward(self, batch: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        x = torch.stack([r["x"] for r in batch])
        y = torch.stack([r["y"] for r in batch])
        return {"loss": F.mse_loss(self.head(torch.tanh(self.body(x))), y)}

    def before_step(self) -> None:
        self.step_calls.append("before")

    def after_step(self, iteration: int) -> None:
        self.step_calls.append(iteration)


def regression_batches(batch_size: int) -> Iterator[list[dict[str, torch.Tensor]]]:
    """Endless batches, different on every process (seeded by rank)."""
    from detectron2.utils import comm

    generator = torch.Generator().manual_seed(100 + comm.get_rank())
    while True:
        x = torch.randn(batch_size, 4, generator=generator)
        yield [{"x": xi, "y": xi.sum(0, keepdim=True)} for xi in x]


RECORDERS: list["RecordWeights"] = []


class RecordWeights(HookBase):
    """Snapshots of the (unwrapped) model's state dict when training starts and after every step;
    the latest instance is `RECORDERS[-1]`."""

    def __init__(self) -> None:
        self.initial: dict[str, torch.Tensor] = {}
        self.after_steps: list[dict[str, torch.Tensor]] = []
        RECORDERS.append(self)

    def _snapshot(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in unwrap(self.trainer.model).state_dict().items()}

    def before_train(self) -> None:
        self.initial = self._snapshot()

    def after_step(self) -> None:
        self.after_steps.append(self._snapshot())


def tiny_config(output_dir: str, max_iter: int, *, lr: float = 0.1, unfreeze_later: tuple[str, ...] = ()) -> DictConfig:
    """The project's `train` defaults (configs/common/train.py) around the tiny regressor, plain SGD."""
    train = LazyConfig.load(str(REPO / "configs" / "common" / "train.py")).train
    train.update(output_dir=output_dir, max_iter=max_iter, device="cpu", eval_period=0, log_period=1)
    train.checkpointer.period = 1000
    train.hooks = [L(RecordWeights)()]
    return OmegaConf.create(
        {
            "model": L(TinyRegressor)(),
            "optimizer": L(build_optimizer)(model=None, name="SGD", lr=lr, unfreeze_later=list(unfreeze_later)),
            "lr_multiplier": L(LinearParamScheduler)(start_value=1.0, end_value=1.0),  # constant
            "dataloader": {"train": L(regression_batches)(batch_size=2), "test_datasets": []},
            "train": train,
        },
        flags={"allow_objects": True},
    )


def train_with_schedule_and_save(output_dir: str, max_iter: int, switch_iter: int) -> None:
    """Train with `body` unfrozen at `switch_iter`; save this process's final weights."""
    from detectron2.utils import comm

    from ovseg_d2.engine import TrainableSchedule, do_train, shutdown_distributed

    torch.manual_seed(comm.get_rank())  # different initial weights: DDP must broadcast rank 0's
    cfg = tiny_config(output_dir, max_iter, unfreeze_later=(r"^body\.",))
    cfg.train.hooks.append(L(TrainableSchedule)(iteration=switch_iter, trainable=[r"^body\."]))
    model = do_train(cfg)
    torch.save(
        {"final": model.state_dict(), "initial": RECORDERS[-1].initial},
        Path(output_dir) / f"rank{comm.get_rank()}.pth",
    )
    shutdown_distributed()
