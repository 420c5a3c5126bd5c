"""PASCAL VOC 2012: ground truth for VOC-20, VOC-20b (background as class 20), VOC-21 and training.

Masks come from `SegmentationClassAug/` (SBD-augmented grayscale PNGs) when present, else from the
official `SegmentationClass/` palette PNGs (their palette indices are the labels). Raw labels:
0 background, 1..20 classes, 255 void. Outputs (uint8 PNG) under `VOCdevkit/VOC2012/`:

- `annotations_detectron2/val`      VOC-20:  0 -> 255, k -> k-1 (ids: Segmentation/val.txt)
- `annotations_detectron2_bg/val`   VOC-20b: 0 -> 20,  k -> k-1
- `annotations_detectron2_21/val`   VOC-21:  raw labels, 0 = background, 255 kept
- `annotations_detectron2/train`    VOC-20 mapping over the training ids: the 10,582-image
  "trainaug" list `ImageSets/SegmentationAug/train_aug.txt` when it exists (needs
  SegmentationClassAug), else the 1,464 ids of `ImageSets/Segmentation/train.txt`.

A map that would hold only 255 is not written (as CAT-Seg), so it never enters evaluation.

    python datasets/prepare_voc.py [--root R] [--workers N]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from _prepare_common import (
    MISSING, Job, Summary, cli, lut_from_pairs, parse_args, read_ids, read_label, require,
    run_jobs, save_array,
)

IGNORE = 255
VOC20_LUT = lut_from_pairs({k: k - 1 for k in range(1, 21)}, IGNORE)
VOC20B_LUT = lut_from_pairs({0: 20, **{k: k - 1 for k in range(1, 21)}}, IGNORE)
VOC21_LUT = lut_from_pairs({k: k for k in range(21)}, IGNORE)
VOC_ARCHIVE = (
    "download VOCtrainval_11-May-2012.tar (http://host.robots.ox.ac.uk/pascal/VOC/voc2012/) and "
    "extract it so that <root>/VOCdevkit/VOC2012/ImageSets/Segmentation exists (optionally add "
    "SegmentationClassAug.zip, the SBD-augmented masks, extracted into VOCdevkit/VOC2012/)"
)
# (output folder, lookup table) per split
OUTPUTS: dict[str, tuple[tuple[str, np.ndarray], ...]] = {
    "val": (
        ("annotations_detectron2/val", VOC20_LUT),
        ("annotations_detectron2_bg/val", VOC20B_LUT),
        ("annotations_detectron2_21/val", VOC21_LUT),
    ),
    "train": (("annotations_detectron2/train", VOC20_LUT),),
}


def mask_dir(voc: Path) -> Path:
    """SegmentationClassAug when present (grayscale; what CAT-Seg and HSNet read), else the
    official SegmentationClass palette PNGs."""
    aug = voc / "SegmentationClassAug"
    return aug if aug.is_dir() else require(voc / "SegmentationClass", VOC_ARCHIVE)


def split_ids(voc: Path, split: str) -> list[str]:
    """Image ids of `split`: val = Segmentation/val.txt; train = trainaug when its list and masks
    exist, else Segmentation/train.txt."""
    train_aug = voc / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    if split == "train" and train_aug.exists():
        require(voc / "SegmentationClassAug",
                f"{train_aug} needs SegmentationClassAug/: {VOC_ARCHIVE}")
        return read_ids(train_aug)
    return read_ids(require(voc / "ImageSets" / "Segmentation" / f"{split}.txt", VOC_ARCHIVE))


def convert(src: Path, targets: Sequence[tuple[Path, np.ndarray]]) -> list[str]:
    """Map one raw mask through each lookup table; all-ignore results are dropped."""
    if not src.exists():
        return [MISSING] * len(targets)
    raw = read_label(src)
    return [save_array(out, lut[raw], drop_value=IGNORE) for out, lut in targets]


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    voc = require(args.root / "VOCdevkit" / "VOC2012", VOC_ARCHIVE)
    masks = mask_dir(voc)
    print(f"masks from {masks}")
    summary = Summary("PASCAL VOC 2012")
    for split, outputs in OUTPUTS.items():
        jobs = []
        for image_id in split_ids(voc, split):
            targets = tuple((voc / folder / f"{image_id}.png", lut) for folder, lut in outputs)
            jobs.append(Job(tuple(out for out, _ in targets), (masks / f"{image_id}.png", targets)))
        run_jobs(summary, f"voc {split}", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
