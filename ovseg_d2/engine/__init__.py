"""Training machinery: LazyConfig train/test loops, optimizer param groups, CPU-capable DDP."""
from .ddp import create_ddp_model
from .predictor import OpenVocabPredictor, parse_vocabulary
from .optimizer import build_optimizer, build_param_groups, lr_factor_by_prefix
from .train_loop import build_model, do_test, do_train, load_config, resolve_device, test_vocabulary

__all__ = [
    "build_model",
    "build_optimizer",
    "build_param_groups",
    "create_ddp_model",
    "do_test",
    "do_train",
    "load_config",
    "lr_factor_by_prefix",
    "OpenVocabPredictor",
    "parse_vocabulary",
    "resolve_device",
    "test_vocabulary",
]
