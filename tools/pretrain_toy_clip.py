#!/usr/bin/env python
"""Toy world -> tiny CLIP -> retrieval report, each stage cached:

1. generate the toy world under OUTPUT/toy_world (tools/make_toy_world.py; skipped where it exists);
2. pretrain the tiny CLIP with tools/train_net.py and configs/toy/clip_pretrain.py (captions streamed
   from the world's webdataset shards), then export it as
   an open_clip checkpoint OUTPUT/tiny_clip.pt (skipped if that file exists);
3. load it with `ovseg_d2.clip.build_clip(configs/toy/tiny_clip.json, weights=...)`, as every method
   will, and report zero-shot image-to-text retrieval top-1 over the 30 class prompts on the held-out
   single-object images (OUTPUT/retrieval.json).

  python tools/pretrain_toy_clip.py --output output/toy
  python tools/pretrain_toy_clip.py --output output/toy train.max_iter=300   # extra train_net overrides
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ovseg_d2.clip import build_clip, get_tokenizer
from ovseg_d2.data.toy import ToyWorldConfig, ToyWorldLayout, generate_toy_world
from ovseg_d2.data.toy.retrieval import evaluate_retrieval
from ovseg_d2.modeling.contrastive_clip import export_clip_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/toy/clip_pretrain.py"
CLIP_CONFIG = REPO / "configs/toy/tiny_clip.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/toy", help="folder of the world, the run and the checkpoint")
    parser.add_argument("--num-train", type=int, default=ToyWorldConfig.num_train)
    parser.add_argument("--seed", type=int, default=ToyWorldConfig.seed)
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to tools/train_net.py")
    return parser.parse_args()


def pretrain(world: Path, run_dir: Path, overrides: list[str]) -> None:
    """Run tools/train_net.py in a child process, as a user would. OpenMP threads sleep instead of
    spinning while waiting, which keeps small-matrix training fast on a busy machine."""
    cmd = [
        sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), "--num-gpus", "1",
        f"dataloader.train.shards={ToyWorldLayout(world).shard_dir}", f"train.output_dir={run_dir}", *overrides,
    ]
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def main() -> None:
    args = parse_args()
    output = Path(args.output).resolve()
    world, run_dir, weights = output / "toy_world", output / "clip_pretrain", output / "tiny_clip.pt"
    timings: dict[str, float] = {}

    start = time.perf_counter()
    generate_toy_world(world, ToyWorldConfig(num_train=args.num_train, seed=args.seed))
    timings["generate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    if not weights.exists():
        pretrain(world, run_dir, args.overrides)
        export_clip_checkpoint(run_dir / "model_final.pth", weights)
    timings["pretrain_s"] = time.perf_counter() - start

    start = time.perf_counter()
    clip = build_clip(CLIP_CONFIG, weights=weights)
    result = evaluate_retrieval(clip, get_tokenizer(CLIP_CONFIG), world)
    timings["retrieval_s"] = time.perf_counter() - start

    report = {"weights": str(weights), "retrieval": result, "timings": timings}
    (output / "retrieval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
