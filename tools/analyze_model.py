#!/usr/bin/env python
"""Parameters, trainable parameters and FLOPs (fvcore, attention ops included) of a config's model.

  python tools/analyze_model.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py \
      --height 480 --width 640 --num-classes 150 train.device=cpu

FLOPs are for one eval forward of a random image through the config's test mapper, with a
vocabulary of `--num-classes` names already encoded (text embeddings are computed once per
vocabulary, not per image; fvcore convention: one fused multiply-add = one flop).
"""
from __future__ import annotations

import argparse
import sys

import torch
from tabulate import tabulate

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.engine import build_model, load_config
from ovseg_d2.engine.profiling import count_flops, count_parameters, synthetic_record, synthetic_vocabulary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--num-classes", type=int, default=150)
    parser.add_argument("--no-flops", action="store_true", help="only count parameters")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    model = build_model(cfg).eval()
    params = count_parameters(model)
    rows = [["parameters", f"{params['total']:,}"], ["trainable parameters", f"{params['trainable']:,}"]]
    if not args.no_flops:
        model.set_vocabulary(synthetic_vocabulary(args.num_classes))
        record = synthetic_record(cfg, args.height, args.width)
        with torch.no_grad():
            model([record])  # encode the vocabulary once: FLOPs are per image, as in evaluation
        total, by_op = count_flops(model, [record])
        rows.append([f"GFLOPs ({args.height}x{args.width}, {args.num_classes} classes)", f"{total / 1e9:.2f}"])
        rows += [[f"  {op}", f"{flops / 1e9:.3f}"] for op, flops in sorted(by_op.items(), key=lambda kv: -kv[1])]
    print(tabulate(rows, tablefmt="github", disable_numparse=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
