#!/usr/bin/env python
"""Convert an official checkpoint of a method into an ovseg-d2 checkpoint.

  python tools/convert_checkpoint.py --method catseg --input model_base.pth --output catseg_vitb16.pth

The output is a Detectron2 checkpoint (`{"model": state_dict}`) that `train.init_checkpoint=...`
(and `--eval-only`) loads. `--list` prints the methods with a registered converter.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ovseg_d2.checkpoint import convert_checkpoint, get_converter

METHODS = ("catseg", "cascade_clip", "tcl", "ovsegmentor", "sazs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", help="method whose official checkpoint is converted")
    parser.add_argument("--input", type=Path, help="official checkpoint file")
    parser.add_argument("--output", type=Path, help="where to write the converted checkpoint")
    parser.add_argument("--list", action="store_true", help="list methods with a converter")
    args = parser.parse_args(argv)

    if args.list:
        for method in METHODS:
            try:
                get_converter(method)
                print(method)
            except KeyError:
                pass
        return 0
    if not (args.method and args.input and args.output):
        parser.error("--method, --input and --output are required")
    state_dict = convert_checkpoint(args.method, args.input)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict, "__author__": f"ovseg-d2 convert_checkpoint ({args.method})"}, args.output)
    print(f"wrote {len(state_dict)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
