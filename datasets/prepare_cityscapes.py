"""Cityscapes-19: `*_gtFine_labelTrainIds.png` from the `*_gtFine_labelIds.png` in gtFine.

What cityscapesscripts' createTrainIdLabelImgs.py produces, without depending on it: the
labelIds maps shipped in gtFine_trainvaltest.zip are mapped through the id -> trainId table of
cityscapesscripts/helpers/labels.py (19 evaluated classes -> 0..18, every other id -> 255).
Outputs are written next to their inputs in `cityscapes/gtFine/{train,val}/<city>/`.

    python datasets/prepare_cityscapes.py [--root R] [--workers N]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from _prepare_common import (
    Job, Summary, cli, lut_from_pairs, parse_args, read_label, require, run_jobs, save_array,
)

SPLITS = ("train", "val")
# label id -> train id for road, sidewalk, building, wall, fence, pole, traffic light,
# traffic sign, vegetation, terrain, sky, person, rider, car, truck, bus, train, motorcycle,
# bicycle (data from cityscapesscripts' labels.py).
ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
TRAIN_ID_LUT = lut_from_pairs(ID_TO_TRAIN_ID, 255)
SUFFIX_IN, SUFFIX_OUT = "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"
ARCHIVE = (
    "download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip "
    "(https://www.cityscapes-dataset.com/downloads/, login required) and unzip both into "
    "<root>/cityscapes/"
)


def convert(src: Path, dst: Path) -> list[str]:
    return [save_array(dst, TRAIN_ID_LUT[read_label(src)])]


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    gt_root = require(args.root / "cityscapes" / "gtFine", ARCHIVE)
    summary = Summary("Cityscapes-19")
    for split in SPLITS:
        split_dir = require(gt_root / split, ARCHIVE)
        jobs = []
        for src in sorted(split_dir.glob(f"*/*{SUFFIX_IN}")):
            dst = src.with_name(src.name[: -len(SUFFIX_IN)] + SUFFIX_OUT)
            jobs.append(Job((dst,), (src, dst)))
        run_jobs(summary, f"cityscapes {split}", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
