#!/usr/bin/env python
"""Inference speed (seconds per image) and peak memory of a config's model at its test setting.

  python tools/benchmark.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py \
      --height 480 --width 640 --num-classes 150 [--weights W] [--amp bf16] train.device=cuda

A random image of the given size goes through the config's test mapper and the model's full
eval path (e.g. CAT-Seg's sliding window). The vocabulary is encoded once before timing, as in
evaluation. Peak memory is the CUDA allocator peak on GPU, the process peak RSS on CPU.
Each forward's seconds go to stderr as it ends; the JSON report goes to stdout.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.engine import build_model, load_config, load_model_weights
from ovseg_d2.engine.profiling import benchmark_inference, synthetic_record, synthetic_vocabulary

AMP = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--amp", choices=sorted(AMP), default="none", help="autocast dtype (GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg)
    if args.weights:
        load_model_weights(model, args.weights, strict=True)  # a partial load would time another model
    record = synthetic_record(cfg, args.height, args.width)
    result = benchmark_inference(
        model, record, synthetic_vocabulary(args.num_classes),
        warmup=args.warmup, runs=args.runs, autocast_dtype=AMP[args.amp],
        progress=lambda message: print(message, file=sys.stderr, flush=True),
    )
    device = next(model.parameters()).device
    report = {
        "config": args.config_file,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "image": [args.height, args.width],
        "num_classes": args.num_classes,
        "amp": args.amp,
        **result.__dict__,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
