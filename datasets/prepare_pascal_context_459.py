"""PASCAL-Context 459 classes (validation): uint16 TIFF ground truth from the full `.mat` labels.

For each id of `VOCdevkit/VOC2010/pascalcontext_val.txt` (5,104 ids, shipped with CAT-Seg), reads
`VOC2010/trainval/<id>.mat` (`LabelMap`, labels 1..459 in labels.txt order) and writes
`VOC2010/annotations_detectron2/pc459_val/<id>.tif` (uint16): k -> k-1 (train ids 0..458) and
0 (unlabelled, never present in the release) -> 65535. CAT-Seg subtracts 1 without the 0 case, so
on the released data both give identical files; a registration may use ignore 65535 or CAT-Seg's
459 (no pixel holds either). Ids whose `.mat` file is absent are skipped and counted, as upstream.

    python datasets/prepare_pascal_context_459.py [--root R] [--workers N]
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

from _prepare_common import (
    MISSING, Job, Summary, cli, parse_args, read_ids, require, run_jobs, save_array,
)

IGNORE = 65535
MAT_ARCHIVE = (
    "download trainval.tar.gz (https://roozbehm.info/pascal-context/trainval.tar.gz) and extract "
    "it into <root>/VOCdevkit/VOC2010/ (gives trainval/<id>.mat and labels.txt)"
)
LIST_ARCHIVE = (
    "copy pascalcontext_val.txt (the 5,104 validation ids, from CAT-Seg's datasets/ folder) "
    "into <root>/VOCdevkit/VOC2010/"
)


def to_train_ids(label_map: np.ndarray) -> np.ndarray:
    """0 -> 65535 (ignore), k -> k-1, computed in int64 so nothing wraps silently."""
    labels = label_map.astype(np.int64)
    return np.where(labels == 0, IGNORE, labels - 1).astype(np.uint16)


def convert(mat_path: Path, out_path: Path) -> list[str]:
    if not mat_path.exists():
        return [MISSING]
    return [save_array(out_path, to_train_ids(scipy.io.loadmat(mat_path)["LabelMap"]))]


def main(argv: Sequence[str] | None = None) -> Summary:
    args = parse_args(__doc__.splitlines()[0], argv)
    voc = args.root / "VOCdevkit" / "VOC2010"
    mat_dir = require(voc / "trainval", MAT_ARCHIVE)
    ids = read_ids(require(voc / "pascalcontext_val.txt", LIST_ARCHIVE))
    out_dir = voc / "annotations_detectron2" / "pc459_val"
    jobs = [Job((out_dir / f"{i}.tif",), (mat_dir / f"{i}.mat", out_dir / f"{i}.tif")) for i in ids]
    summary = Summary("PASCAL-Context 459")
    run_jobs(summary, "pc459 val", jobs, convert, args.workers)
    return summary


if __name__ == "__main__":
    cli(main)
