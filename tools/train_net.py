#!/usr/bin/env python
"""Train or evaluate an ovseg-d2 model from a LazyConfig file.

  python tools/train_net.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py --num-gpus 8
  python tools/train_net.py --config-file CFG --eval-only train.init_checkpoint=/path/model.pth
  python tools/train_net.py --config-file CFG --resume            # continue from the last checkpoint
  python tools/train_net.py --config-file CFG --num-gpus 2 train.device=cpu   # 2 CPU processes (gloo)

Trailing `key=value` arguments override config entries (e.g. `train.max_iter=1000`,
`dataloader.test_datasets='[ovseg_ade150_val,ovseg_pc59_val]'`). `--num-gpus` is the number of
processes per machine; without CUDA the processes use the gloo backend on the CPU.
"""
from __future__ import annotations

import logging

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.engine import build_model, do_test, do_train, load_config

logger = logging.getLogger("ovseg_d2")


def main(args) -> dict | None:
    cfg = load_config(args.config_file, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="ovseg_d2")
    if args.eval_only:
        model = build_model(cfg)
        DetectionCheckpointer(model).load(cfg.train.init_checkpoint)
        return do_test(cfg, model)
    do_train(cfg, resume=args.resume)
    if comm.is_main_process():
        logger.info("Training finished; checkpoints in %s", cfg.train.output_dir)
    return None


def invoke_main() -> None:
    args = default_argument_parser(epilog=__doc__).parse_args()
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    invoke_main()
