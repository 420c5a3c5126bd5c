"""Training machinery: LazyConfig train/test loops, hooks, optimizer param groups, CPU-capable DDP."""
from .ddp import create_ddp_model, shutdown_distributed, unwrap
from .hooks import (
    BestMetricCheckpointer,
    EMAHook,
    ModelEMA,
    ModelStepHook,
    TrainableSchedule,
    load_ema_weights,
)
from .predictor import OpenVocabPredictor
from .optimizer import build_optimizer, build_param_groups, lr_factor_by_prefix, parameters_matching
from .train_loop import (
    build_model,
    do_test,
    do_train,
    load_config,
    load_model_weights,
    resolve_device,
    test_vocabulary,
)

__all__ = [
    "BestMetricCheckpointer",
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "create_ddp_model",
    "shutdown_distributed",
    "do_test",
    "do_train",
    "EMAHook",
    "load_config",
    "load_ema_weights",
    "load_model_weights",
    "lr_factor_by_prefix",
    "ModelEMA",
    "ModelStepHook",
    "OpenVocabPredictor",
    "parameters_matching",
    "resolve_device",
    "test_vocabulary",
    "TrainableSchedule",
    "unwrap",
]
