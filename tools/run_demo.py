#!/usr/bin/env python
"""The project's main job (`make demo`), on the generated toy world, every stage cached in --output:

1. generate the toy world and pretrain the tiny CLIP on its captions (tools/pretrain_toy_clip.py);
2. evaluate the training-free dense-CLIP baseline (MaskCLIP-style) on the toy validation set;
3. train a tiny-width CAT-Seg (configs/catseg/catseg_toy.py, the paper's code path) on the 24 seen
   classes only, then evaluate it on all 30 classes (mIoU, seen, unseen, hIoU);
4. write overlays (image | CAT-Seg | ground truth | legend, upscaled) of a few validation images;
5. print a summary and write it to OUTPUT/summary.json.

  python tools/run_demo.py --output output/demo [--catseg-iters 300] [--num-overlays 6] [--threads 2]

Reproducible: every stage is seeded (world generation, data order, augmentations, model init) and
every stage, the pretraining child process included, runs with `--threads` intra-op threads. Float
sums are split across threads, so the number of threads changes the last bits of every result and,
over hundreds of iterations, the reported numbers; pinned, a fresh run prints the same numbers on
any machine with the same CPU kind, whatever its core count or load (tests/toy/test_reproducible.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo", help="folder for every artefact of the run")
    parser.add_argument("--catseg-iters", type=int, default=None, help="override CAT-Seg's train.max_iter")
    parser.add_argument("--num-overlays", type=int, default=6)
    parser.add_argument(
        "--threads", type=int, default=2,
        help="intra-op threads of every stage; the numbers are reproducible for a given value",
    )
    return parser.parse_args()


def run_stage(name: str, timings: dict[str, float], fn, *args):
    print(f"\n=== {name}", flush=True)
    start = time.perf_counter()
    result = fn(*args)
    timings[name] = round(time.perf_counter() - start, 1)
    return result


def pretrain_clip(output: Path) -> dict:
    subprocess.run([sys.executable, str(REPO / "tools/pretrain_toy_clip.py"), "--output", str(output)],
                   check=True, cwd=REPO)
    return json.loads((output / "retrieval.json").read_text())


def main() -> int:
    args = parse_args()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    # The toy datasets are registered under $DETECTRON2_DATASETS/toy_world (resolved at load time).
    os.environ["DETECTRON2_DATASETS"] = str(output)
    # Read by torch at start-up here and in the pretraining child process.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch
    from detectron2.utils.logger import setup_logger

    from ovseg_d2.data.toy.demo import evaluate_baseline, train_and_evaluate_catseg, write_overlays

    torch.set_num_threads(args.threads)  # in case torch was imported before the variables were set
    setup_logger()  # detectron2: training progress and evaluation logs
    setup_logger(name="ovseg_d2")
    timings: dict[str, float] = {}
    clip = run_stage("toy world + tiny CLIP pretraining", timings, pretrain_clip, output)
    weights = clip["weights"]
    baseline = run_stage("training-free dense baseline", timings, evaluate_baseline, weights, output / "baseline")
    model, catseg = run_stage(
        "CAT-Seg: train on seen classes, evaluate on all", timings,
        train_and_evaluate_catseg, weights, output / "catseg", args.catseg_iters,
    )
    overlays = run_stage("overlays", timings, write_overlays, model, output / "overlays", args.num_overlays)

    summary = {
        "clip_retrieval_top1": clip["retrieval"],
        "dense_baseline": baseline,
        "catseg": catseg,
        "timings_s": {**clip["timings"], **timings},
        "overlays": [str(p) for p in overlays],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = [("model", "mIoU", "mIoU seen", "mIoU unseen", "hIoU")]
    for name, res in (("dense CLIP baseline (training-free)", baseline), ("CAT-Seg (seen masks only)", catseg)):
        rows.append((name, *(f"{res[k]:.1f}" for k in ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU"))))
    print("\n=== Summary (toy validation set: 30 classes, 6 unseen during segmentation training)")
    print(f"tiny CLIP zero-shot retrieval top-1: {clip['retrieval']['top1']:.1f}% (chance {clip['retrieval']['chance']:.1f}%)")
    for row in rows:
        print(f"{row[0]:<40}" + "".join(f"{c:>13}" for c in row[1:]))
    print(f"\noverlays (image | CAT-Seg | ground truth | legend): {output / 'overlays'}")
    print(f"all numbers: {output / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
