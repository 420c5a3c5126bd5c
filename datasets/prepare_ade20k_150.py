"""ADE20K-150 (ADEChallengeData2016): shift labels to Detectron2 train ids.

Raw annotations hold 0 = "other" and 1..150 = classes. Output (uint8 PNG, same file names):
0 -> 255 (ignore), k -> k-1, written to `ADEChallengeData2016/annotations_detectron2/{training,
validation}` (the Detectron2 / CAT-Seg "uint8 wrap"). Images stay where they are.

    python datasets/prepare_ade20k_150.py [--root R] [--workers N]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from _prepare_common import Job, Summary, cli, parse_args, read_label, require, run_jobs, save_array

SPLITS = ("training", "validation")
ARCHIVE = (
    "download ADEChallengeData2016.zip (http://data.csail.mit.edu/places/ADEchallenge/"
    "ADEChallengeData2016.zip) and unzip it into the datasets root"
)


def convert(src: Path, dst: Path) -> list[str]:
    """uint8 wrap: subtracting 1 modulo 256 sends 0 to 255 and k to k-1 in one step."""
    return [save_array(dst, read_label(src).astype(np.uint8) - np.uint8(1))]


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    base = args.root / "ADEChallengeData2016"
    summary = Summary("ADE20K-150")
    for split in SPLITS:
        src_dir = require(base / "annotations" / split, ARCHIVE)
        out_dir = base / "annotations_detectron2" / split
        jobs = [Job((out_dir / src.name,), (src, out_dir / src.name))
                for src in sorted(src_dir.glob("*.png"))]
        run_jobs(summary, f"ade150 {split}", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
