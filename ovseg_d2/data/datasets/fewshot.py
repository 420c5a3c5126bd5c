"""Few-shot fold datasets (PASCAL-5i, COCO-20i) as one record per (image, class) pair.

Layout (relative to $DETECTRON2_DATASETS; written by `datasets/prepare_fewshot_splits.py`):

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClassAug/<id>.png         raw masks: 0 bg, c+1 = class c, 255 void
    VOCdevkit/VOC2012/fewshot_splits/{trn,val}/fold{0..3}.txt
    COCO2014/{train2014,val2014}/<name>.jpg
    COCO2014/annotations/{train2014,val2014}/<name>.png     raw masks: 0 bg, c+1 = class c
    COCO2014/fewshot_splits/{trn,val}/fold{0..3}.txt

A list line is `<image path relative to the image root, no extension>__<class, 1-based>`, e.g.
`2007_000033__01` or `train2014/COCO_train2014_000000013279__1`. The PASCAL files are HSNet's
`data/splits/pascal/{trn,val}/fold*.txt` copied verbatim (file k lists the pairs whose class is in
fold k). The four files of a split are read together and the pairs filtered by class: a fold's
training set keeps its base classes, its validation set its novel classes. For PASCAL this equals
HSNet (train = trn files of the other folds, val = val/fold f, same order); for COCO it lets HSNet's
per-fold pickles (converted to text, duplicates allowed) serve both the interleaved and the
PFENet-contiguous convention.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .common import DatasetNotPreparedError, datasets_root

NUM_FOLD_FILES = 4
_SPLIT_DIRS = {"train": "trn", "val": "val"}


@dataclass(frozen=True)
class FewShotLayout:
    """Folders of one few-shot benchmark, relative to $DETECTRON2_DATASETS (or absolute)."""

    image_root: str
    mask_root: str
    list_root: str
    image_ext: str = "jpg"
    mask_ext: str = "png"

    def resolve(self, path: str) -> Path:
        p = Path(path)
        return p if p.is_absolute() else datasets_root() / p


PASCAL5I_LAYOUT = FewShotLayout(
    image_root="VOCdevkit/VOC2012/JPEGImages",
    mask_root="VOCdevkit/VOC2012/SegmentationClassAug",
    list_root="VOCdevkit/VOC2012/fewshot_splits",
)
COCO20I_LAYOUT = FewShotLayout(
    image_root="COCO2014",
    mask_root="COCO2014/annotations",
    list_root="COCO2014/fewshot_splits",
)


def parse_pair(line: str) -> tuple[str, int]:
    """`"2007_000033__01"` -> `("2007_000033", 0)` (0-based class)."""
    image_id, sep, cls = line.rpartition("__")
    if not sep or not image_id or not cls.isdigit() or int(cls) < 1:
        raise ValueError(f"malformed few-shot pair {line!r}; expected '<image>__<class 1-based>'")
    return image_id, int(cls) - 1


def load_fewshot_records(
    dataset_name: str,
    layout: FewShotLayout,
    split: str,
    classes: Sequence[int],
    *,
    prepare_hint: str = "",
) -> list[dict[str, Any]]:
    """Records `{file_name, sem_seg_file_name, image_id, class_id}` for the pairs of `split`
    ("train" or "val") whose 0-based class is in `classes`, in list-file order, deduplicated.
    Only folders and list files are checked (a split holds up to ~100k pairs)."""
    hint = f" Prepare it with: {prepare_hint}" if prepare_hint else ""
    image_root, mask_root = layout.resolve(layout.image_root), layout.resolve(layout.mask_root)
    list_dir = layout.resolve(layout.list_root) / _SPLIT_DIRS[split]
    files = [list_dir / f"fold{k}.txt" for k in range(NUM_FOLD_FILES)]
    for path in (image_root, mask_root, *files):
        if not path.exists():
            raise DatasetNotPreparedError(
                f"Dataset '{dataset_name}': expected {path} does not exist "
                f"(datasets root: {datasets_root()}, set $DETECTRON2_DATASETS to change it).{hint}"
            )
    wanted = set(classes)
    pairs: dict[tuple[str, int], None] = {}
    for path in files:
        for line in path.read_text().split():
            pair = parse_pair(line)
            if pair[1] in wanted:
                pairs.setdefault(pair)
    if not pairs:
        raise DatasetNotPreparedError(
            f"Dataset '{dataset_name}': no pairs of classes {sorted(wanted)} in {list_dir}.{hint}"
        )
    return [
        {
            "file_name": str(image_root / f"{image_id}.{layout.image_ext}"),
            "sem_seg_file_name": str(mask_root / f"{image_id}.{layout.mask_ext}"),
            "image_id": f"{image_id}__{cls + 1}",
            "class_id": cls,
        }
        for image_id, cls in pairs
    ]
