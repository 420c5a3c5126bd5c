"""PASCAL-Context 59 and 60 classes from `trainval_merged.json`.

As CAT-Seg's prepare_pascal_context_59.py: each annotation's RLE segmentation (pycocotools) is
painted in file order with its `category_id` (ids of the full 459-label space) onto a 0
(= unlabelled) canvas. uint8 PNG outputs under `VOCdevkit/VOC2010/annotations_detectron2/`:

- `pc59_val/<id>.png` (`phase == "val"`, 5,105 images) and `pc59_train/<id>.png` (`phase ==
  "train"`, 4,998; for zero-shot training): the 59 classes -> 0..58 in ascending id order (the
  pc59 vocabulary order), unlabelled and any other id -> 255 (ignore);
- `pc60_val/<id>.png`: background 0, the 59 classes -> 1..59; unlabelled and any id outside the
  59 -> 0 (PC-60 scores everything that is not one of the 59 classes as background).

    python datasets/prepare_pascal_context_59.py [--root R] [--workers N]
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as mask_utils

from _prepare_common import (
    Job, Summary, cli, lut_from_pairs, parse_args, require, run_jobs, save_array,
)

# Full-label-space ids (labels.txt) of the 59 classes, ascending = PC-59 train id order (data).
PC59_IDS: tuple[int, ...] = (
    2, 9, 18, 19, 22, 23, 25, 31, 33, 34, 44, 45, 46, 59, 65, 68, 72, 80, 85, 98, 104, 105, 113,
    115, 144, 158, 159, 162, 187, 189, 207, 220, 232, 258, 259, 260, 284, 295, 296, 308, 324, 326,
    347, 349, 354, 355, 360, 366, 368, 397, 415, 416, 420, 424, 427, 440, 445, 454, 458,
)
LUT_SIZE = 1 << 16
PC59_LUT = lut_from_pairs({cid: i for i, cid in enumerate(PC59_IDS)}, 255, size=LUT_SIZE)
PC60_LUT = lut_from_pairs({cid: i + 1 for i, cid in enumerate(PC59_IDS)}, 0, size=LUT_SIZE)
LUTS = {"pc59": PC59_LUT, "pc60": PC60_LUT}  # named, so jobs do not pickle 64 KiB tables
# phase -> (output folder, lookup table name)
OUTPUTS: dict[str, tuple[tuple[str, str], ...]] = {
    "val": (("pc59_val", "pc59"), ("pc60_val", "pc60")),
    "train": (("pc59_train", "pc59"),),
}
VOC2010_ARCHIVE = (
    "download VOCtrainval_03-May-2010.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2010/) and "
    "extract it so that <root>/VOCdevkit/VOC2010/JPEGImages exists"
)
JSON_ARCHIVE = (
    "download trainval_merged.json (https://codalabuser.blob.core.windows.net/public/"
    "trainval_merged.json) into <root>/VOCdevkit/VOC2010/"
)


def paint(annotations: Sequence[tuple[int, dict[str, Any]]], height: int, width: int) -> np.ndarray:
    """Full-label-space map: later annotations overwrite earlier ones, as upstream."""
    canvas = np.zeros((height, width), dtype=np.int32)
    for category_id, rle in annotations:
        canvas[mask_utils.decode(rle).astype(bool)] = category_id
    return canvas


def convert(
    annotations: Sequence[tuple[int, dict[str, Any]]], height: int, width: int,
    targets: Sequence[tuple[Path, str]],
) -> list[str]:
    full = paint(annotations, height, width)
    return [save_array(out, LUTS[lut][full]) for out, lut in targets]


def annotations_by_phase(json_path: Path) -> dict[str, list[tuple[dict[str, Any], list]]]:
    """phase -> [(image record, [(category_id, rle), ...]), ...], in file order."""
    with open(json_path) as f:
        data = json.load(f)
    per_image: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    for ann in data["annos_segmentation"]:
        per_image[ann["image_id"]].append((int(ann["category_id"]), ann["segmentation"]))
    phases: dict[str, list[tuple[dict[str, Any], list]]] = defaultdict(list)
    for img in data["images"]:
        phases[img["phase"]].append((img, per_image[img["image_id"]]))
    return phases


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    voc = require(args.root / "VOCdevkit" / "VOC2010", VOC2010_ARCHIVE)
    json_path = require(voc / "trainval_merged.json", JSON_ARCHIVE)
    out_dir = voc / "annotations_detectron2"
    print(f"loading {json_path} ...")
    phases = annotations_by_phase(json_path)
    summary = Summary("PASCAL-Context 59/60")
    for phase, outputs in OUTPUTS.items():
        jobs = []
        for img, anns in phases[phase]:
            name = Path(img["file_name"]).stem + ".png"
            targets = tuple((out_dir / folder / name, lut) for folder, lut in outputs)
            jobs.append(Job(tuple(out for out, _ in targets),
                            (anns, int(img["height"]), int(img["width"]), targets)))
        run_jobs(summary, f"pascal context {phase}", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
