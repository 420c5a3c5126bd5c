#!/usr/bin/env python
"""Train or evaluate an ovseg-d2 model from a LazyConfig file.

  python tools/train_net.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py --num-gpus 8
  python tools/train_net.py --config-file CFG --eval-only train.init_checkpoint=/path/model.pth
  python tools/train_net.py --config-file CFG --resume            # continue from the last checkpoint
  python tools/train_net.py --config-file CFG --num-gpus 2 train.device=cpu   # 2 CPU processes (gloo)

`key=value` arguments override config entries (e.g. `train.max_iter=1000`,
`dataloader.test_datasets='[ovseg_ade150_val,ovseg_pc59_val]'`); a key that is not in the config is
an error (with a "did you mean"); add a new key on purpose with `+key=value`. Flags may come before or
after the overrides. `--num-gpus` is the number of processes per machine; without CUDA the processes
use the gloo backend on the CPU.

Before anything runs, every name in `dataloader.test_datasets` and `dataloader.train.dataset_names`
must be registered. `--eval-only` loads `train.init_checkpoint` strictly: missing, unexpected or
mis-shaped keys are an error (`train.strict_load=False` loads the matching ones only), and evaluating
without weights needs `train.init_checkpoint=none`. Training init from `train.init_checkpoint` is
lenient and logs the keys it could not load.
"""
from __future__ import annotations

import argparse
import logging

from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.checkpoint import require_inference_weights
from ovseg_d2.engine import (
    build_model,
    do_test,
    do_train,
    load_config,
    load_model_weights,
    shutdown_distributed,
)
from ovseg_d2.engine.config import check_dataset_names, parse_args_anywhere

logger = logging.getLogger("ovseg_d2")


def check_setup(args: argparse.Namespace) -> None:
    """What can be wrong before a process starts: overrides, dataset names, eval-only weights."""
    cfg = load_config(args.config_file, args.opts)
    check_dataset_names(cfg)
    if args.eval_only:
        require_inference_weights(cfg.train.init_checkpoint)


def main(args: argparse.Namespace) -> dict | None:
    results = run(args)
    shutdown_distributed()
    return results


def run(args: argparse.Namespace) -> dict | None:
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="ovseg_d2")
    if args.eval_only:
        model = build_model(cfg)
        weights = require_inference_weights(cfg.train.init_checkpoint)
        load_model_weights(model, weights, strict=cfg.train.get("strict_load", True))
        return do_test(cfg, model)
    do_train(cfg, resume=args.resume)
    if comm.is_main_process():
        logger.info("Training finished; checkpoints in %s", cfg.train.output_dir)
    return None


def invoke_main() -> None:
    parser = default_argument_parser(epilog=__doc__)
    args = parse_args_anywhere(parser)
    check_setup(args)
    dist_url = args.dist_url
    if args.num_machines == 1 and dist_url == parser.get_default("dist_url"):
        # Detectron2's default port depends only on the user id, so two jobs of one user on one machine
        # (two trainings, parallel test runs) collide with EADDRINUSE; one machine needs no fixed port.
        dist_url = "auto"
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
