#!/usr/bin/env python
"""The project's main job (`make demo`), on the generated toy world, every stage cached in --output:

1. generate the toy world and expand the shipped tiny CLIP, or with --pretrain pretrain it on the
   captions of a 40,000-image pretraining world (tools/pretrain_toy_clip.py);
2. evaluate the training-free dense-CLIP baseline (MaskCLIP-style) on the toy validation set;
3. train a tiny-width CAT-Seg (configs/catseg/catseg_toy.py, the paper's code path) on the 24 seen
   classes only, then evaluate it on all 30 classes (mIoU, seen, unseen, hIoU);
4. write overlays (image | CAT-Seg | ground truth | legend, upscaled) of a few validation images;
5. print a summary and write it to OUTPUT/summary.json.

  python tools/run_demo.py --output output/demo [--catseg-iters 300] [--num-overlays 6] [--threads 2]

With --methods, the toy-world leaderboard instead (`make leaderboard`): every toy config that declares
a `leaderboard` entry (ovseg_d2/data/toy/leaderboard.py; `--list` shows them), trained the way its
paper trains with its prerequisites, evaluated on toy_val, for every pretraining x training seed;
OUTPUT/leaderboard.md and .json (mean ± std per metric), OUTPUT/leaderboard_runs.json (every run).
Re-running resumes: finished stages are skipped. A failing stage is reported in its row (exit status 1).
The same command started again while one runs (e.g. in another terminal) shares the work: each
process takes the stages no other one holds, then waits for the rest; both print the whole table.

  python tools/run_demo.py --methods all --output output/leaderboard [--seeds 0 1 2] [--clip-seeds 0 1 2]
  python tools/run_demo.py --methods catseg,tcl --output output/leaderboard
  python tools/run_demo.py --methods all --output /tmp/smoke --max-iter 2   # smoke mode: every stage capped

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
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PRETRAIN_SCRIPT = REPO / "tools/pretrain_toy_clip.py"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default="output/demo", help="folder for every artefact of the run")
    parser.add_argument("--catseg-iters", type=int, default=None, help="demo: override CAT-Seg's train.max_iter")
    parser.add_argument("--num-overlays", type=int, default=6, help="demo: validation images drawn")
    parser.add_argument(
        "--threads", type=int, default=2,
        help="intra-op threads of every stage; the numbers are reproducible for a given value",
    )
    parser.add_argument("--pretrain", action="store_true",
                        help="retrain the tiny CLIP (passed to tools/pretrain_toy_clip.py) instead of shipped weights")
    board = parser.add_argument_group("leaderboard")
    board.add_argument("--methods", default=None,
                       help="`all` or comma-separated method folders / config ids (catseg,tcl): the leaderboard")
    board.add_argument("--list", action="store_true", help="print the discovered leaderboard entries and exit")
    board.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed)")
    board.add_argument("--clip-seeds", type=int, nargs="+", default=[0], help="tiny CLIP pretraining seeds")
    board.add_argument("--max-iter", type=int, default=None,
                       help="smoke mode: cap every stage's train.max_iter (the CLIP pretraining's too); "
                            "tests the machinery, the numbers mean nothing")
    board.add_argument("--device", default="cpu", help="train.device of every stage (cpu: reproducible numbers)")
    return parser.parse_args(argv)


def pretrain_command(
    output: Path, clip_seed: int | None = None, pretrain: bool = False, max_iter: int | None = None
) -> list[str]:
    """tools/pretrain_toy_clip.py for `output`: the shipped weights of `clip_seed` (default 0), or
    retrained with that seed under `pretrain`."""
    cmd = [sys.executable, str(PRETRAIN_SCRIPT), "--output", str(output)]
    if clip_seed is not None:
        cmd += ["--clip-seed", str(clip_seed)]
    if pretrain:
        cmd.append("--pretrain")
    if max_iter is not None:
        cmd.append(f"train.max_iter={max_iter}")
    return cmd


def link_shared_worlds(clip_folder: Path, pretrain: bool) -> None:
    """Point a pretraining seed's folder at the leaderboard's toy world and, under `pretrain`, its
    pretraining world, so that every seed uses one copy (the script finds them complete)."""
    from ovseg_d2.data.toy import DEFAULT_ROOT, PRETRAIN_ROOT

    clip_folder.mkdir(parents=True, exist_ok=True)
    for name in (DEFAULT_ROOT, PRETRAIN_ROOT) if pretrain else (DEFAULT_ROOT,):
        (clip_folder.parent / name).mkdir(exist_ok=True)
        if not (clip_folder / name).is_symlink():
            (clip_folder / name).symlink_to(Path("..") / name)


def pretrain_clip(output: Path, pretrain: bool = False) -> dict:
    subprocess.run(pretrain_command(output, pretrain=pretrain), check=True, cwd=REPO)
    return json.loads((output / "retrieval.json").read_text())


def run_stage(name: str, timings: dict[str, float], fn, *args):
    print(f"\n=== {name}", flush=True)
    start = time.perf_counter()
    result = fn(*args)
    timings[name] = round(time.perf_counter() - start, 1)
    return result


def run_demo(args: argparse.Namespace, output: Path) -> int:
    """Baseline + CAT-Seg + overlays (`make demo`)."""
    from detectron2.utils.logger import setup_logger

    from ovseg_d2.data.toy.demo import evaluate_baseline, train_and_evaluate_catseg, write_overlays

    setup_logger()  # detectron2: training progress and evaluation logs
    setup_logger(name="ovseg_d2")
    timings: dict[str, float] = {}
    clip = run_stage("toy world + tiny CLIP (shipped weights; --pretrain retrains)", timings, pretrain_clip,
                     output, args.pretrain)
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
    retrieval = clip["retrieval"]
    print(f"tiny CLIP zero-shot retrieval top-1: {retrieval['top1']:.1f}% (chance {retrieval['chance']:.1f}%); "
          f"shape {retrieval['shape']:.1f}% (chance 20%), colour {retrieval['colour']:.1f}%")
    for row in rows:
        print(f"{row[0]:<40}" + "".join(f"{c:>13}" for c in row[1:]))
    print(f"\noverlays (image | CAT-Seg | ground truth | legend): {output / 'overlays'}")
    print(f"all numbers: {output / 'summary.json'}")
    return 0


def list_methods() -> int:
    from ovseg_d2.data.toy.leaderboard import discover

    for entry in discover().values():
        extra = [f"after {entry.after}"] if entry.after else []
        extra += ["eval-only"] if entry.eval_only else []
        extra += ["reference"] if entry.reference else []
        print(f"{entry.id:<40} {entry.name} [{entry.trained_on}]" + (f" ({', '.join(extra)})" if extra else ""))
    return 0


def run_leaderboard(args: argparse.Namespace, output: Path) -> int:
    from ovseg_d2.data.toy import DEFAULT_ROOT, ToyWorldConfig, generate_toy_world
    from ovseg_d2.data.toy.leaderboard import Leaderboard, Options, any_failed, discover, select, write_report
    from ovseg_d2.utils.locks import exclusive, lock_file

    options = Options(output=output, clip_seeds=args.clip_seeds, seeds=args.seeds, max_iter=args.max_iter,
                      device=args.device)
    board = Leaderboard(select(discover(), args.methods), options)
    board.progress("toy world")
    with exclusive(lock_file(output / DEFAULT_ROOT)):  # another leaderboard process may share OUTPUT
        generate_toy_world(output / DEFAULT_ROOT, ToyWorldConfig())  # skipped where complete

    def tiny_clip(clip_seed: int) -> None:
        """OUTPUT/clip<seed>/tiny_clip.pt (+ retrieval.json, its final artefact) on the shared world."""
        folder = board.clip_dir(clip_seed)
        # One lock for every seed: under --pretrain the seeds share the pretraining world that the first builds.
        with exclusive(output / ".tiny_clip.lock"):
            if not (folder / "retrieval.json").exists():
                make_tiny_clip(folder, clip_seed)

    def make_tiny_clip(folder: Path, clip_seed: int) -> None:
        link_shared_worlds(folder, pretrain=args.pretrain)
        log = folder / "pretrain.log"
        with log.open("a") as stream:
            done = subprocess.run(pretrain_command(folder, clip_seed, args.pretrain, args.max_iter),
                                  cwd=REPO, stdout=stream, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise RuntimeError(f"tools/pretrain_toy_clip.py exited with status {done.returncode} (log: {log})")

    result = board.run(tiny_clip)
    command = shlex.join(["python", "tools/run_demo.py", *sys.argv[1:]])
    report = write_report(output, result, command, options)
    print()
    print((output / "leaderboard.md").read_text())
    print(f"tables: {output}/leaderboard.md, leaderboard.json; every run: {output}/leaderboard_runs.json")
    return 1 if any_failed(report["rows"]) else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        return list_methods()
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    # The toy datasets are registered under $DETECTRON2_DATASETS/toy_world (resolved at load time).
    os.environ["DETECTRON2_DATASETS"] = str(output)
    # Read by torch at start-up here and in the child processes (pretraining, prerequisites).
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)  # in case torch was imported before the variables were set
    if args.methods is None:
        return run_demo(args, output)
    return run_leaderboard(args, output)


if __name__ == "__main__":
    sys.exit(main())
