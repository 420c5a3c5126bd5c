"""LazyConfig training and evaluation, the way `tools/train_net.py` runs them.

Config keys: `model`, `optimizer` (its `model` argument is filled in here), `lr_multiplier` (fvcore
ParamScheduler), `dataloader.train`, `dataloader.test` (one test-loader template) with
`dataloader.test_datasets` (the names evaluated one after another in one run), and `train`
(output_dir, init_checkpoint, max_iter, device, amp, ddp, checkpointer, eval_period, log_period).
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import MetadataCatalog
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
from detectron2.engine.defaults import default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import DictConfig
from torch import nn

from .ddp import create_ddp_model

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """`"auto"` picks CUDA when present, else CPU; an explicit CUDA request without CUDA fails."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available (use 'auto' or 'cpu')")
    return device


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextmanager
def test_vocabulary(model: nn.Module, dataset_name: str) -> Iterator[None]:
    """Evaluate `model` with the text vocabulary of `dataset_name` (its `prompt_classes`),
    restoring the previous test vocabulary afterwards."""
    core = unwrap(model)
    if not hasattr(core, "set_vocabulary"):
        yield
        return
    meta = MetadataCatalog.get(dataset_name)
    previous = list(core.test_class_names)
    core.set_vocabulary(meta.get("prompt_classes", meta.stuff_classes))
    try:
        yield
    finally:
        core.set_vocabulary(previous)


def build_test_loader(cfg: DictConfig, dataset_name: str) -> Any:
    """Instantiate the test-loader template of `cfg.dataloader.test` for one dataset."""
    template = copy.deepcopy(cfg.dataloader.test)
    template.dataset_name = dataset_name
    return instantiate(template)


def do_test(cfg: DictConfig, model: nn.Module) -> OrderedDict:
    """Evaluate on every dataset of `cfg.dataloader.test_datasets`, one after another."""
    from ovseg_d2.evaluation import build_evaluator

    results: OrderedDict = OrderedDict()
    for name in cfg.dataloader.get("test_datasets", []):
        loader = build_test_loader(cfg, name)
        output_dir = f"{cfg.train.output_dir}/inference/{name}"
        evaluator = build_evaluator(name, output_dir=output_dir)
        with test_vocabulary(model, name):
            results[name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            logger.info(f"Evaluation results for {name}:")
            print_csv_format(results[name])
    return results


def build_model(cfg: DictConfig) -> nn.Module:
    model = instantiate(cfg.model)
    model.to(resolve_device(cfg.train.device))
    return model


def do_train(cfg: DictConfig, resume: bool = False) -> nn.Module:
    """Train `cfg.model`; returns the trained (unwrapped) model.

    With `resume` the last checkpoint of `train.output_dir` is loaded (weights, optimizer, scheduler,
    iteration) and training continues from the next iteration instead of starting over.
    """
    model = build_model(cfg)
    logger.debug("Model:\n%s", model)
    cfg.optimizer.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    ddp_model = create_ddp_model(model, **cfg.train.ddp)
    use_amp = bool(cfg.train.amp.enabled) and next(model.parameters()).is_cuda
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled is ignored: AMP needs CUDA; training in float32.")
    trainer_cls = AMPTrainer if use_amp else SimpleTrainer
    trainer = trainer_cls(ddp_model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)
    return model


def load_config(path: str, overrides: list[str]) -> DictConfig:
    cfg = LazyConfig.load(path)
    return LazyConfig.apply_overrides(cfg, overrides)
