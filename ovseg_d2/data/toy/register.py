"""Detectron2 registrations of a generated toy world (see generate.py for the layout).

| name                     | content                                                                 |
| ------------------------ | ----------------------------------------------------------------------- |
| `toy_seen_train`         | train images; 24 seen classes; unseen pixels -> 255 at load (label_map) |
| `toy_train_all`          | train images; all 30 classes (the supervised upper bound)               |
| `toy_val`                | val images; all 30 classes, `unseen_classes` -> seen/unseen/hIoU        |
| `toy_captions_train`     | train image-caption pairs from the JSON-lines meta file                 |
| `toy_captions_train_wds` | the same pairs as webdataset shards (streamed: MetadataCatalog only)    |
| `toy_captions_val`       | val image-caption pairs (JSON lines)                                    |

Background is ignore (255), as in VOC-20 / PC-59: only the 30 object classes are scored.

Importing `ovseg_d2.data.toy` registers these names for the default root `$DETECTRON2_DATASETS/toy_world`
(resolved when a dataset is loaded, like every builtin dataset); `register_toy_world(root)` points
them at another world.
"""
from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any

from detectron2.data import DatasetCatalog

from ..datasets.common import datasets_root, load_sem_seg_records, register_sem_seg_dataset
from ..image_text import register_image_text_dataset
from .generate import ToyWorldLayout
from .world import CLASS_NAMES, IGNORE_LABEL, SEEN_CLASS_NAMES, UNSEEN_CLASS_IDS, UNSEEN_CLASS_NAMES, seen_label_map

SEM_SEG_DATASETS: tuple[str, ...] = ("toy_seen_train", "toy_train_all", "toy_val")
IMAGE_TEXT_DATASETS: tuple[str, ...] = ("toy_captions_train", "toy_captions_train_wds", "toy_captions_val")
DEFAULT_ROOT = "toy_world"  # relative to $DETECTRON2_DATASETS
# The tiny CLIP's larger pretraining world, beside the toy world (tools/pretrain_toy_clip.py --pretrain).
PRETRAIN_ROOT = "clip_world"


def _records_with_name(name: str, layout: ToyWorldLayout, split: str, hint: str) -> list[dict[str, Any]]:
    """Default pairing plus `dataset_name`, through which SemSegDatasetMapper finds the `label_map`."""
    root = layout.root if layout.root.is_absolute() else datasets_root() / layout.root
    layout = ToyWorldLayout(root)
    records = load_sem_seg_records(name, layout.image_dir(split), layout.label_dir(split), prepare_hint=hint)
    for record in records:
        record["dataset_name"] = name
    return records


def register_toy_world(root: str | os.PathLike | None = None) -> None:
    """Register the toy datasets of the world generated under `root`, a folder resolved against the
    working directory now (None: `$DETECTRON2_DATASETS/toy_world`, resolved at load time). Lazy and
    idempotent: re-registering points the names at the new root."""
    layout = ToyWorldLayout(Path(root).resolve() if root is not None else Path(DEFAULT_ROOT))
    where = layout.root if root is not None else f"$DETECTRON2_DATASETS/{DEFAULT_ROOT}"
    hint = f"python tools/make_toy_world.py --output {where}"
    common = dict(ignore_label=IGNORE_LABEL, prepare_hint=hint, metric_convention="detectron2")
    register_sem_seg_dataset(
        "toy_seen_train", layout.image_dir("train"), layout.label_dir("train"),
        stuff_classes=SEEN_CLASS_NAMES, label_map=seen_label_map(),
        unseen_class_names=list(UNSEEN_CLASS_NAMES),  # informational: excluded from training
        loader=partial(_records_with_name, "toy_seen_train", layout, "train", hint), **common,
    )
    register_sem_seg_dataset(
        "toy_train_all", layout.image_dir("train"), layout.label_dir("train"),
        stuff_classes=CLASS_NAMES, **common,
    )
    register_sem_seg_dataset(
        "toy_val", layout.image_dir("val"), layout.label_dir("val"),
        stuff_classes=CLASS_NAMES, unseen_classes=list(UNSEEN_CLASS_IDS), **common,
    )
    register_image_text_dataset("toy_captions_train", layout.captions_file("train"), image_root=layout.root)
    register_image_text_dataset("toy_captions_train_wds", layout.shard_dir, image_root=layout.root)
    register_image_text_dataset("toy_captions_val", layout.captions_file("val"), image_root=layout.root)


def load_toy_dataset(name: str, root: str | os.PathLike) -> list[dict[str, Any]]:
    """Register the world at `root` and return the records of `name`: the LazyConfig entry point
    (`dataset=L(load_toy_dataset)(name="toy_captions_train", root="output/toy_world")`)."""
    register_toy_world(root)
    return DatasetCatalog.get(name)
