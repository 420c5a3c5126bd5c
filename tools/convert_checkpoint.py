#!/usr/bin/env python
"""Convert an official checkpoint of a method into an ovseg-d2 checkpoint.

  python tools/convert_checkpoint.py --method catseg --input model_base.pth --output catseg_vitb16.pth
  python tools/convert_checkpoint.py --method tcl --input tcl.pth --clip-weights ViT-B-16.pt --output tcl_vitb16.pth

The output is a Detectron2 checkpoint (`{"model": state_dict}`) that `train.init_checkpoint=...`
(and `--eval-only`) loads. `--list` prints the methods with a registered converter.

The input must hold every key of the official layout (a missing key is an error that names it); one
line reports what was converted and what was dropped on purpose, and why. The input is read with
`torch.load(weights_only=True)`, which refuses files that pickle arbitrary Python objects (loading
those can run code); `--unsafe-pickle` reads them anyway: use it only for files you trust.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from ovseg_d2.checkpoint import CheckpointReadError, convert_checkpoint, get_converter

METHODS = ("catseg", "catseg_mmseg", "catseg_d2_legacy", "cascade_clip", "tcl", "ovsegmentor", "sazs")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", help="method whose official checkpoint is converted")
    parser.add_argument("--input", type=Path, help="official checkpoint file")
    parser.add_argument("--output", type=Path, help="where to write the converted checkpoint")
    parser.add_argument(
        "--clip-weights",
        type=Path,
        help="OpenAI CLIP weights, for official checkpoints that do not hold CLIP (TCL's release tcl.pth)",
    )
    parser.add_argument("--list", action="store_true", help="list methods with a converter")
    parser.add_argument(
        "--unsafe-pickle",
        action="store_true",
        help="read the input with torch.load(weights_only=False): it may run code, only for trusted files",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

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
    try:
        inputs = {"clip_weights": args.clip_weights} if args.clip_weights else {}
        state_dict = convert_checkpoint(args.method, args.input, unsafe_pickle=args.unsafe_pickle, **inputs)
    except (CheckpointReadError, FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": state_dict, "__author__": f"ovseg-d2 convert_checkpoint ({args.method})"}, args.output)
    print(f"wrote {len(state_dict)} tensors to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
