#!/usr/bin/env python
"""Generate the toy open-vocabulary world (images, label maps, captions as JSON lines and webdataset
shards) under --output. Re-running completes an interrupted run and skips what exists.

  python tools/make_toy_world.py --output output/toy_world
  python tools/make_toy_world.py --output /tmp/tiny --num-train 64 --num-val 16 --num-retrieval 30
"""
from __future__ import annotations

import argparse
import time

from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

_DEFAULTS = ToyWorldConfig()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="root folder of the toy world")
    parser.add_argument("--num-train", type=int, default=_DEFAULTS.num_train)
    parser.add_argument("--num-val", type=int, default=_DEFAULTS.num_val)
    parser.add_argument("--num-retrieval", type=int, default=_DEFAULTS.num_retrieval,
                        help="single-object held-out images for CLIP retrieval (cycles through the 30 classes)")
    parser.add_argument("--image-size", type=int, default=_DEFAULTS.image_size)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    parser.add_argument("--shard-size", type=int, default=_DEFAULTS.shard_size)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    config = ToyWorldConfig(
        num_train=args.num_train, num_val=args.num_val, num_retrieval=args.num_retrieval,
        image_size=args.image_size, seed=args.seed, shard_size=args.shard_size,
    )
    start = time.perf_counter()
    layout = generate_toy_world(args.output, config)
    print(f"Toy world ready in {layout.root} ({time.perf_counter() - start:.1f}s)")


if __name__ == "__main__":
    main()
