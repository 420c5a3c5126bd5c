"""LazyConfig training and evaluation, the way `tools/train_net.py` runs them.

Config keys: `model`, `optimizer` (its `model` argument is filled in here), `lr_multiplier` (fvcore
ParamScheduler), `dataloader.train`, `dataloader.test` (one test-loader template) with
`dataloader.test_datasets` (the names evaluated one after another in one run), and `train`
(output_dir, init_checkpoint, max_iter, device, amp, ddp, checkpointer, eval_period, log_period,
hooks, ema, best_metric; see configs/common/train.py).
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from typing import Any, Iterator

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
from detectron2.engine.defaults import default_writers
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from omegaconf import DictConfig
from torch import nn

from ovseg_d2.data.mappers.loaders import MODEL_INIT

from ovseg_d2.checkpoint import ModelCheckpointer

from .config import load_config  # noqa: F401  (re-exported: ovseg_d2.engine.load_config)
from .ddp import create_ddp_model, unwrap
from .hooks import BestMetricCheckpointer, EMAHook, ModelEMA, ModelStepHook, load_ema_weights
from .resume import ReseedEachIteration, build_train_loader, plan_resume, seed_global_rngs

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """`"auto"` picks CUDA when present, else CPU; an explicit CUDA request without CUDA fails."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={device!r} but CUDA is not available (use 'auto' or 'cpu')")
    return device


@contextmanager
def test_vocabulary(model: nn.Module, dataset_name: str) -> Iterator[None]:
    """Evaluate `model` with the vocabulary of `dataset_name` (`model.vocabulary_for`: the dataset's
    prompts with the model's `vocabulary_overrides`) and `model.test_dataset = dataset_name` (per-dataset
    test settings, e.g. background thresholds), restoring the previous ones after."""
    core = unwrap(model)
    if not hasattr(core, "vocabulary_for"):
        yield
        return
    previous = core.test_vocabulary, core.test_dataset
    core.set_vocabulary(core.vocabulary_for(dataset_name))
    core.test_dataset = dataset_name
    try:
        yield
    finally:
        core.set_vocabulary(previous[0])
        core.test_dataset = previous[1]


def build_test_loader(cfg: DictConfig, dataset_name: str) -> Any:
    """Instantiate the test-loader template of `cfg.dataloader.test` for one dataset."""
    template = copy.deepcopy(cfg.dataloader.test)
    template.dataset_name = dataset_name
    return instantiate(template)


def do_test(cfg: DictConfig, model: nn.Module) -> OrderedDict:
    """Evaluate on every dataset of `cfg.dataloader.test_datasets`, one after another, with the
    method's evaluation options `cfg.dataloader.evaluator` (e.g. `dict(metric_convention="mmseg")`;
    keyword arguments of `ovseg_d2.evaluation.build_evaluator`; absent = each dataset's own)."""
    from ovseg_d2.evaluation import build_evaluator

    options = dict(cfg.dataloader.get("evaluator", None) or {})
    results: OrderedDict = OrderedDict()
    for name in cfg.dataloader.get("test_datasets", []):
        loader = build_test_loader(cfg, name)
        output_dir = f"{cfg.train.output_dir}/inference/{name}"
        evaluator = build_evaluator(name, output_dir=output_dir, **options)
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


def load_model_weights(model: nn.Module, path: str, *, strict: bool = False) -> None:
    """Load a checkpoint into `model` for evaluation or as `train.init_checkpoint`: its EMA weights
    when it holds them (`model_ema`, written by runs with `train.ema.enabled`), else its `model`.
    Incompatible keys are an error with `strict` (evaluation, demo), a logged summary otherwise."""
    extra = ModelCheckpointer(model, strict=strict).load(path)
    if "model_ema" in extra:
        load_ema_weights(model, extra["model_ema"])
        logger.info(f"Loaded the EMA weights of {path}")


def build_hooks(cfg: DictConfig) -> list[hooks.HookBase]:
    """Instantiate `train.hooks` (LazyCall entries, or callables returning hooks)."""
    built = [instantiate(entry) for entry in cfg.train.hooks]
    for index, hook in enumerate(built):
        if not isinstance(hook, hooks.HookBase):
            raise TypeError(f"train.hooks[{index}] built a {type(hook).__name__}, not a detectron2 HookBase")
    return built


def best_checkpointer(cfg: DictConfig, checkpointer: DetectionCheckpointer) -> hooks.HookBase | None:
    """`train.best_metric=dict(name="<dataset>/sem_seg/<metric>", mode="max"|"min")`, or None."""
    best = cfg.train.best_metric
    if best is None:
        return None
    evaluated = list(cfg.dataloader.get("test_datasets", []))
    if best.name.split("/")[0] not in evaluated:
        raise ValueError(
            f"train.best_metric.name={best.name!r}: metric names start with an evaluated dataset, "
            f"one of dataloader.test_datasets={evaluated}"
        )
    return BestMetricCheckpointer(cfg.train.eval_period, checkpointer, best.name, best.mode)


def do_train(cfg: DictConfig, resume: bool = False) -> nn.Module:
    """Train `cfg.model`; returns the trained (unwrapped) model, with its own (not EMA) weights.

    With `resume` the newest intact checkpoint of `train.output_dir` is loaded (weights, optimizer,
    scheduler, iteration, EMA, hook states, seed) and training continues from the next iteration
    exactly as the uninterrupted run would (ovseg_d2.engine.resume) instead of starting over.
    Otherwise `train.init_checkpoint` initialises the model (`load_model_weights`' rule).
    Hooks, in order: `ReseedEachIteration`, iteration timer, LR scheduler, `ModelStepHook`,
    `EMAHook` (`train.ema.enabled`), `train.hooks`, periodic checkpointer, evaluation (of the EMA
    weights when enabled), best checkpointer (`train.best_metric`), metric writers. Hooks reach the
    run through `self.trainer` (see ovseg_d2.engine.hooks).
    """
    point = plan_resume(cfg.train.output_dir, cfg.train.seed, resume)
    seed_global_rngs(point.seed, MODEL_INIT, comm.get_rank())
    model = build_model(cfg)
    logger.debug("Model:\n%s", model)
    cfg.optimizer.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = build_train_loader(cfg.dataloader.train, point)

    ddp_model = create_ddp_model(model, **cfg.train.ddp)
    use_amp = bool(cfg.train.amp.enabled) and next(model.parameters()).is_cuda
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled is ignored: AMP needs CUDA; training in float32.")
    trainer_cls = AMPTrainer if use_amp else SimpleTrainer
    trainer = trainer_cls(ddp_model, train_loader, optimizer)
    ema = ModelEMA(model, cfg.train.ema.decay) if cfg.train.ema.enabled else None
    checkpointer = ModelCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    if ema is not None:
        checkpointer.add_checkpointable("model_ema", ema)
    trainer.cfg, trainer.checkpointer = cfg, checkpointer

    def evaluate() -> OrderedDict:
        with ema.applied() if ema is not None else nullcontext():
            return do_test(cfg, model)

    trainer.register_hooks(
        [
            ReseedEachIteration(point.seed),
            hooks.IterationTimer(),
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            ModelStepHook(),
            EMAHook(ema) if ema is not None else None,
            *build_hooks(cfg),
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
            if comm.is_main_process()
            else None,
            hooks.EvalHook(cfg.train.eval_period, evaluate),
            best_checkpointer(cfg, checkpointer) if comm.is_main_process() else None,
            hooks.PeriodicWriter(
                default_writers(cfg.train.output_dir, cfg.train.max_iter),
                period=cfg.train.log_period,
            )
            if comm.is_main_process()
            else None,
        ]
    )
    if point.checkpoint is not None:
        checkpointer.load(point.checkpoint)  # all checkpointables: a full resume
    else:
        load_model_weights(model, cfg.train.init_checkpoint)
    trainer.train(point.start_iter, cfg.train.max_iter)
    return model
