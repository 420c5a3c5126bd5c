#!/usr/bin/env python
"""Toy world -> tiny CLIP -> retrieval report, each stage cached:

1. generate the toy world under OUTPUT/toy_world (tools/make_toy_world.py; skipped where it exists);
2. the tiny CLIP OUTPUT/tiny_clip.pt, an open_clip checkpoint (skipped if that file exists):
   - by default the shipped weights of pretraining seed --clip-seed
     (ovseg_d2/data/toy/weights/tiny_clip_seed<N>.pt, expanded to a normal checkpoint);
   - with --pretrain (or when no weights are shipped for that seed) pretrained here with
     tools/train_net.py and configs/toy/clip_pretrain.py, train.seed = --clip-seed, on the captions of
     a larger pretraining world OUTPUT/clip_world (--pretrain-images train images, streamed from its
     webdataset shards; generated on first use, ~1.5 min and 0.9 GB for the default 40,000). Its
     first 4,000 train images and its val / retrieval splits are the toy world's own: an image depends
     only on (seed, split, index). Token-embedding rows that no caption uses are zeroed, as in the
     shipped files; --ship also writes the compact file into the package (how the shipped ones were
     made: --pretrain --ship --clip-seed N, with the defaults);
3. load it with `ovseg_d2.clip.build_clip(configs/toy/tiny_clip.json, weights=...)`, as every method
   will, and report zero-shot image-to-text retrieval over the 30 class prompts on the toy world's
   held-out single-object images: top-1, shape and colour accuracy (OUTPUT/retrieval.json), and the
   shape-swap test on train and val images (`evaluate_shape_swap`: learnt vs memorised shape).

  python tools/pretrain_toy_clip.py --output output/toy                       # shipped seed-0 weights
  python tools/pretrain_toy_clip.py --output output/toy --pretrain --clip-seed 1
  python tools/pretrain_toy_clip.py --output output/toy --pretrain train.max_iter=300  # train_net overrides
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ovseg_d2.checkpoint import load_checkpoint_file
from ovseg_d2.clip import build_clip, get_tokenizer
from ovseg_d2.data.toy import (
    DEFAULT_ROOT,
    PRETRAIN_ROOT,
    ToyWorldConfig,
    ToyWorldLayout,
    generate_toy_world,
    read_meta,
)
from ovseg_d2.data.toy.retrieval import class_prompts, evaluate_retrieval, evaluate_shape_swap
from ovseg_d2.data.toy.shipped_clip import (
    compact_state_dict,
    expand_shipped_weights,
    shipped_weights,
    used_token_ids,
    zero_unused_token_rows,
)
from ovseg_d2.modeling.contrastive_clip import clip_state_dict
from ovseg_d2.utils.atomic import torch_save_atomic

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/toy/clip_pretrain.py"
CLIP_CONFIG = REPO / "configs/toy/tiny_clip.json"
# With 4,000 images the tiny CLIP memorises each training image's shapes instead of learning shape
# (shape-swap test: train 34 %, val 22 %); ten times more images make it learn them (61 % / 60 %,
# ovseg_d2/data/toy/README.md).
PRETRAIN_IMAGES = 40_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/toy", help="folder of the world, the run and the checkpoint")
    parser.add_argument("--num-train", type=int, default=ToyWorldConfig.num_train)
    parser.add_argument("--seed", type=int, default=ToyWorldConfig.seed, help="toy world generation seed")
    parser.add_argument("--clip-seed", type=int, default=0, help="tiny CLIP pretraining seed (train.seed)")
    parser.add_argument("--pretrain-images", type=int, default=PRETRAIN_IMAGES,
                        help="--pretrain: train images of the pretraining world OUTPUT/clip_world")
    parser.add_argument("--pretrain", action="store_true",
                        help="pretrain here instead of using the shipped weights of --clip-seed")
    parser.add_argument("--ship", action="store_true",
                        help="with --pretrain: also write the compact weights into ovseg_d2/data/toy/weights/")
    parser.add_argument("overrides", nargs="*", help="key=value overrides passed to tools/train_net.py (--pretrain)")
    args = parser.parse_args()
    if args.ship and not args.pretrain:
        parser.error("--ship needs --pretrain")
    return args


def pretrain(world: Path, run_dir: Path, seed: int, overrides: list[str]) -> None:
    """Run tools/train_net.py in a child process, as a user would. OpenMP threads sleep instead of
    spinning while waiting, which keeps small-matrix training fast on a busy machine."""
    cmd = [
        sys.executable, str(REPO / "tools/train_net.py"), "--config-file", str(CONFIG), "--num-gpus", "1",
        f"dataloader.train.shards={ToyWorldLayout(world).shard_dir}", f"train.output_dir={run_dir}",
        f"train.seed={seed}", *overrides,
    ]
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    subprocess.run(cmd, check=True, cwd=REPO, env=env)


def export_pretrained(pretrain_world: Path, run_dir: Path, weights: Path, ship_seed: int | None) -> None:
    """The trained CLIP as an open_clip checkpoint whose token rows outside the pretraining captions'
    and class prompts' tokens are zero (so it equals its compact form); optionally ship the compact form."""
    state = load_checkpoint_file(run_dir / "model_final.pth")
    captions = [r["caption"] for r in read_meta(ToyWorldLayout(pretrain_world), "train")] + class_prompts()
    sd = zero_unused_token_rows(clip_state_dict(state.get("model", state)),
                                used_token_ids(get_tokenizer(CLIP_CONFIG), captions))
    torch_save_atomic({"state_dict": sd}, weights)
    if ship_seed is not None:
        print(f"shipped: {torch_save_atomic(compact_state_dict(sd), shipped_weights(ship_seed))}")


def main() -> None:
    args = parse_args()
    output = Path(args.output).resolve()
    world, run_dir, weights = output / DEFAULT_ROOT, output / "clip_pretrain", output / "tiny_clip.pt"
    shipped = shipped_weights(args.clip_seed)
    timings: dict[str, float] = {}

    start = time.perf_counter()
    generate_toy_world(world, ToyWorldConfig(num_train=args.num_train, seed=args.seed))
    timings["generate_s"] = time.perf_counter() - start

    start = time.perf_counter()
    source = "existing file"
    if not weights.exists():
        if args.pretrain or not shipped.exists():
            source = f"pretrained here on {args.pretrain_images} images, seed {args.clip_seed}"
            pretrain_world = output / PRETRAIN_ROOT
            generate_toy_world(pretrain_world, ToyWorldConfig(num_train=args.pretrain_images, seed=args.seed),
                               splits=("train",))
            timings["generate_pretraining_world_s"] = time.perf_counter() - start
            start = time.perf_counter()
            pretrain(pretrain_world, run_dir, args.clip_seed, args.overrides)
            export_pretrained(pretrain_world, run_dir, weights, args.clip_seed if args.ship else None)
        else:
            source = f"shipped {shipped.relative_to(REPO)}"
            if args.overrides:
                print(f"note: train_net overrides {args.overrides} unused: shipped weights (add --pretrain to train)")
            expand_shipped_weights(shipped, weights)
    timings["pretrain_s"] = time.perf_counter() - start

    start = time.perf_counter()
    clip = build_clip(CLIP_CONFIG, weights=weights)
    tokenizer = get_tokenizer(CLIP_CONFIG)
    result = evaluate_retrieval(clip, tokenizer, world)
    # learnt vs memorised shape: the swap test on train images against held-out val images
    shape_swap = {split: evaluate_shape_swap(clip, tokenizer, world, split) for split in ("train", "val")}
    timings["retrieval_s"] = time.perf_counter() - start

    report = {"weights": str(weights), "clip_seed": args.clip_seed, "source": source,
              "retrieval": result, "shape_swap": shape_swap, "timings": timings}
    (output / "retrieval.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
