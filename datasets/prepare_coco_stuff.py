"""COCO-Stuff-171 and COCO-Object-80 (+ background) from the COCO-Stuff stuffthingmaps.

Raw maps (`coco-stuff/annotations/{train2017,val2017}/*.png`) hold COCO category id - 1: things
0..89 (80 used), stuff 91..181, 255 unlabelled. Two uint8 PNG outputs per map:

- `coco-stuff/annotations_detectron2/<split>/`: the 171 used ids in ascending order -> 0..170
  (80 things then 91 stuff, the coco_stuff171 vocabulary order), everything else 255 (ignore);
- `coco-stuff/annotations_detectron2_object/<split>/` (COCO-Object, as GroupViT/TCL's
  convert_coco_object.py): the 80 things -> 1..80, every stuff id and 255 -> 0 (background), so
  COCO-Object has no ignored pixel.

    python datasets/prepare_coco_stuff.py [--root R] [--workers N]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


from _prepare_common import (
    Job, Summary, cli, lut_from_pairs, parse_args, read_label, require, run_jobs, save_array,
)

SPLITS = ("train2017", "val2017")
# 0-based COCO ids of the 80 thing classes (data: COCO ids 1-11, 13-25, 27, 28, 31-44, 46-65, 67,
# 70, 72-82, 84-90, minus 1).
THING_IDS: tuple[int, ...] = tuple(
    i - 1 for i in [*range(1, 12), *range(13, 26), 27, 28, *range(31, 45), *range(46, 66), 67, 70,
                    *range(72, 83), *range(84, 91)]
)
STUFF_IDS: tuple[int, ...] = tuple(range(91, 182))
STUFF171_LUT = lut_from_pairs({raw: i for i, raw in enumerate(THING_IDS + STUFF_IDS)}, 255)
OBJECT_LUT = lut_from_pairs({raw: i + 1 for i, raw in enumerate(THING_IDS)}, 0)
# Files mmseg's / GroupViT's converters write next to the raw maps; not raw input.
MMSEG_SUFFIXES = ("_labelTrainIds", "_instanceTrainIds")
ARCHIVE = (
    "download stuffthingmaps_trainval2017.zip (http://calvin.inf.ed.ac.uk/wp-content/uploads/data/"
    "cocostuffdataset/stuffthingmaps_trainval2017.zip) and unzip it into <root>/coco-stuff/"
    "annotations/ (gives annotations/{train2017,val2017}/*.png); COCO 2017 images "
    "(train2017.zip, val2017.zip from cocodataset.org) go to <root>/coco-stuff/images/"
)


def convert(src: Path, out_stuff: Path, out_object: Path) -> list[str]:
    raw = read_label(src)
    return [save_array(out_stuff, STUFF171_LUT[raw]), save_array(out_object, OBJECT_LUT[raw])]


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    base = args.root / "coco-stuff"
    summary = Summary("COCO-Stuff-171 / COCO-Object")
    for split in SPLITS:
        src_dir = require(base / "annotations" / split, ARCHIVE)
        jobs = []
        for src in sorted(src_dir.glob("*.png")):
            if src.stem.endswith(MMSEG_SUFFIXES):
                continue
            outs = (base / "annotations_detectron2" / split / src.name,
                    base / "annotations_detectron2_object" / split / src.name)
            jobs.append(Job(outs, (src, *outs)))
        run_jobs(summary, f"coco-stuff {split}", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
