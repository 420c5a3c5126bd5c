"""PASCAL-5i and COCO-20i few-shot list files, built from the masks (HSNet/SAZS conventions).

Each line is `<image_id>__<class>` (class 1-based, two digits), one line per class an image
contains (at least `--min-area` pixels). As in HSNet's `splits/pascal/{trn,val}/fold<k>.txt`,
file `fold<k>` lists the pairs whose class belongs to fold k; training for fold f concatenates
the `trn` files of the other three folds (so it never sees a fold-f class), testing uses
`val/fold<f>.txt`. Folds: PASCAL-5i fold f = classes 5f+1..5f+5; COCO-20i fold f = classes c with
(c-1) % 4 == f (interleaved: the FWB split, PFENet's `use_split_coco`, used by HSNet/SAZS; not
PANet's contiguous blocks).

- PASCAL: `VOCdevkit/VOC2012/fewshot_splits/{trn,val}/fold{0..3}.txt` from
  `SegmentationClassAug/<id>.png`; trn ids = trainaug (`ImageSets/SegmentationAug/train_aug.txt`)
  if present, else Segmentation/train.txt; val ids = Segmentation/val.txt. Lines: `2007_000033__01`.
- COCO: `COCO2014/fewshot_splits/{trn,val}/fold{0..3}.txt` from the per-image masks
  `COCO2014/annotations/{train2014,val2014}/<image_id>.png` (values 0 background, 1..80 the COCO
  thing classes in category order, 255 ignore; HSNet's prepared masks). The image id is the
  path below `annotations/` without extension: `train2014/COCO_train2014_000000013279__01`.

The official HSNet lists are preferred when available (they are what published numbers use):
`--hsnet-splits <hsnet>/data/splits` copies `pascal/{trn,val}/fold*.txt` verbatim and converts
`coco/{trn,val}/fold*.pkl` ({0-based class: ["train2014/<name>.jpg", ...]}) to the text format,
instead of building lists from masks. HSNet's COCO `trn/fold<k>.pkl` holds the 60 *base* classes of
fold k, not fold k's classes; the registrations read the four files of a split together and keep
pairs by class, so both groupings load the same pairs.

    python datasets/prepare_fewshot_splits.py [--root R] [--workers N] [--dataset pascal coco]
        [--min-area PIXELS] [--hsnet-splits DIR]
"""
from __future__ import annotations

import argparse
import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from _prepare_common import (
    SKIPPED, WRITTEN, MissingRawDataError, Summary, atomic_write_bytes, cli, map_progress,
    parse_args, read_label, require,
)
from prepare_voc import VOC_ARCHIVE, split_ids

FOLDS = 4
SPLITS = ("trn", "val")
OUT_DIRS = {"pascal": "VOCdevkit/VOC2012/fewshot_splits", "coco": "COCO2014/fewshot_splits"}
HSNET_HINT = (
    "pass HSNet's data/splits folder (github.com/juhongm999/hsnet), holding pascal/ and coco/"
)
AUG_ARCHIVE = (
    "download SegmentationClassAug.zip (SBD-augmented VOC masks, e.g. https://www.dropbox.com/s/"
    "oeu149j8qtbs1x0/SegmentationClassAug.zip) and unzip it into <root>/VOCdevkit/VOC2012/"
)
COCO_ARCHIVE = (
    "put COCO 2014 (train2014.zip, val2014.zip from cocodataset.org) under <root>/COCO2014/ and "
    "its per-image class masks (HSNet's prepared annotations/{train2014,val2014}/*.png) under "
    "<root>/COCO2014/annotations/"
)


@dataclass(frozen=True)
class FewShotSource:
    """Where one benchmark's masks are, how many classes it has and how classes form folds."""

    name: str
    mask_root: Path  # list lines name a mask by its path relative to this, without extension
    masks: dict[str, list[Path]]  # split -> mask files, in list order
    num_classes: int
    fold_of: Callable[[int], int]  # 1-based class -> fold


def pascal_fold(c: int) -> int:
    return (c - 1) // 5


def coco_fold(c: int) -> int:
    return (c - 1) % FOLDS


def pascal_source(root: Path) -> FewShotSource:
    voc = require(root / "VOCdevkit" / "VOC2012", VOC_ARCHIVE)
    masks = require(voc / "SegmentationClassAug", AUG_ARCHIVE)
    split_names = {"trn": "train", "val": "val"}
    return FewShotSource(
        "PASCAL-5i", masks,
        {s: [masks / f"{i}.png" for i in split_ids(voc, v)] for s, v in split_names.items()},
        20, pascal_fold,
    )


def coco_source(root: Path) -> FewShotSource:
    base = root / "COCO2014"
    folders = {"trn": "train2014", "val": "val2014"}
    masks = {s: sorted(require(base / "annotations" / f, COCO_ARCHIVE).glob("*.png"))
             for s, f in folders.items()}
    return FewShotSource("COCO-20i", base / "annotations", masks, 80, coco_fold)


def classes_present(mask_path: Path, num_classes: int, min_area: int) -> list[int]:
    """1-based classes with at least `min_area` pixels (background 0 and 255 never count)."""
    counts = np.bincount(read_label(mask_path).ravel(), minlength=256)[1 : num_classes + 1]
    return [int(c) + 1 for c in np.flatnonzero(counts >= max(min_area, 1))]


def fold_lines(
    source: FewShotSource, split: str, min_area: int, workers: int
) -> list[list[str]]:
    """Per fold, the `<id>__<class>` lines of `split`, in list order then class order."""
    files = source.masks[split]
    missing = [p for p in files if not p.exists()]
    if missing:
        raise MissingRawDataError(
            f"{len(missing)} {source.name} masks missing, first: {missing[0]}")
    folds: list[list[str]] = [[] for _ in range(FOLDS)]
    args = [(p, source.num_classes, min_area) for p in files]
    results = map_progress(classes_present, args, workers, f"{source.name} {split}")
    for path, classes in zip(files, results):
        image_id = path.relative_to(source.mask_root).with_suffix("").as_posix()
        for c in classes:
            folds[source.fold_of(c)].append(f"{image_id}__{c:02d}")
    return folds


def hsnet_lines(splits_dir: Path, benchmark: str, split: str) -> list[list[str]]:
    """Per fold, the lines of HSNet's official lists (PASCAL text as is, COCO pickles converted)."""
    if benchmark == "pascal":
        files = [splits_dir / "pascal" / split / f"fold{k}.txt" for k in range(FOLDS)]
        return [require(path, HSNET_HINT).read_text().split() for path in files]
    folds = []
    for k in range(FOLDS):
        with open(require(splits_dir / "coco" / split / f"fold{k}.pkl", HSNET_HINT), "rb") as f:
            per_class = pickle.load(f)
        folds.append([f"{Path(path).with_suffix('').as_posix()}__{int(c) + 1:02d}"
                      for c in sorted(per_class) for path in per_class[c]])
    return folds


def write_lists(
    out_dir: Path, lines_for: Callable[[str], list[list[str]]], summary: Summary
) -> None:
    """Write the 2 x 4 list files of one benchmark; existing files are kept (resumable)."""
    for split in SPLITS:
        outs = [out_dir / split / f"fold{f}.txt" for f in range(FOLDS)]
        if all(p.exists() for p in outs):
            summary.add([SKIPPED] * FOLDS)
            continue
        for out, lines in zip(outs, lines_for(split)):
            if out.exists():
                summary.add([SKIPPED])
                continue
            atomic_write_bytes(out, "".join(f"{line}\n" for line in lines).encode())
            summary.add([WRITTEN])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", nargs="+", choices=("pascal", "coco"),
                        default=["pascal", "coco"], help="which benchmarks (default: both)")
    parser.add_argument("--min-area", type=int, default=1,
                        help="pixels a class needs in an image to list the pair (default 1)")
    parser.add_argument("--hsnet-splits", type=Path, default=None,
                        help="HSNet's data/splits folder: use the official lists instead")


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv, add_arguments)
    builders = {"pascal": pascal_source, "coco": coco_source}
    summary = Summary("few-shot splits")
    for name in args.dataset:
        if args.hsnet_splits is not None:
            lines_for = partial(hsnet_lines, args.hsnet_splits, name)
        else:
            source = builders[name](args.root)
            lines_for = partial(fold_lines, source, min_area=args.min_area, workers=args.workers)
        write_lists(args.root / OUT_DIRS[name], lines_for, summary)
    return summary


if __name__ == "__main__":
    cli(main)
