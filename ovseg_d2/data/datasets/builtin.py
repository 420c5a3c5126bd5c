"""Registrations of every benchmark the project evaluates or trains on (names `ovseg_*`).

All roots are relative to $DETECTRON2_DATASETS, resolved when a dataset is first loaded; nothing is
read at import. Ground truth is in the Detectron2 layout written by `datasets/prepare_*.py`
(contiguous train ids, ignore 255 in PNG / 65535 in 16-bit TIFF). Metadata keys are documented in
docs/architecture.md.

PC-459 deviates from CAT-Seg on purpose: CAT-Seg stores `LabelMap - 1` and ignores 459, a value
that never occurs; our preparation maps LabelMap 0 to 65535 before subtracting 1 (as FC-CLIP does)
and ignores 65535. The official LabelMaps contain no 0, so both give the same scores on real data,
and ours cannot wrap a stray 0 into an out-of-range id.
"""
from __future__ import annotations

from functools import partial
from typing import Any

from ..vocab import (
    display_names,
    fewshot_base_classes,
    fewshot_classes,
    fewshot_default_convention,
    fewshot_novel_classes,
    load_vocabulary,
    seen_classes,
    unseen_classes,
)
from .common import (
    FEWSHOT_EVALUATOR_TYPE,
    datasets_root,
    load_sem_seg_records,
    register_sem_seg_dataset,
)
from .fewshot import (
    COCO20I_LAYOUT,
    NUM_TEST_EPISODES,
    PASCAL5I_LAYOUT,
    FewShotLayout,
    load_fewshot_episodes,
    load_fewshot_records,
)

IGNORE_8BIT = 255
IGNORE_16BIT = 65535

_ADE = "ADEChallengeData2016"
_ADE_FULL = "ADE20K_2021_17_01"
_VOC10 = "VOCdevkit/VOC2010"
_VOC12 = "VOCdevkit/VOC2012"
_COCO = "coco-stuff"
# VOC's JPEGImages folders hold the images of every split (and unlabelled test images), so an
# image without a label map is expected there; every other image folder is one split's.
_SHARED_IMAGES = dict(labels_for_all_images=False)
# HSNet's episode draws: PASCAL-5i walks the val list, COCO-20i draws a class then an image.
EPISODE_SAMPLING = {"pascal5i": "sequential", "coco20i": "class_uniform"}


def _hint(script: str) -> str:
    return f"python datasets/{script}"


def _register(
    name: str,
    image_root: str,
    gt_root: str,
    vocabulary: str,
    script: str,
    *,
    convention: str = "detectron2",
    **kwargs: Any,
) -> None:
    """Register with `stuff_classes` = unique display names and `prompt_classes` = full entries
    (with synonyms) of `vocabulary`, unless given."""
    entries = load_vocabulary(vocabulary)
    kwargs.setdefault("stuff_classes", display_names(entries, unique=True))
    kwargs.setdefault("prompt_classes", entries)
    register_sem_seg_dataset(
        name, image_root, gt_root,
        prepare_hint=_hint(script), metric_convention=convention, vocabulary=vocabulary, **kwargs,
    )


def _with_dataset_name(
    name: str, image_root: str, gt_root: str, script: str, labels_for_all_images: bool = True
) -> list[dict[str, Any]]:
    """Default pairing plus a `dataset_name` field, through which the mapper finds the dataset's
    `label_map` (several datasets may be mixed in one training loader)."""
    records = load_sem_seg_records(
        name, datasets_root() / image_root, datasets_root() / gt_root, prepare_hint=_hint(script),
        labels_for_all_images=labels_for_all_images,
    )
    for record in records:
        record["dataset_name"] = name
    return records


def register_seen_dataset(
    name: str,
    image_root: str,
    gt_root: str,
    vocabulary: str,
    script: str,
    labels_for_all_images: bool = True,
) -> None:
    """Inductive zero-shot training set: only the seen classes are named; `label_map` (full id ->
    seen id or ignore) is applied by the mapper, so unseen pixels never reach the loss."""
    entries = load_vocabulary(vocabulary)
    seen = seen_classes(vocabulary)
    label_map = [IGNORE_8BIT] * len(entries)
    for new_id, old_id in enumerate(seen):
        label_map[old_id] = new_id
    _register(
        name, image_root, gt_root, vocabulary, script,
        stuff_classes=display_names([entries[i] for i in seen], unique=True),
        prompt_classes=[entries[i] for i in seen],
        label_map=label_map,
        loader=partial(
            _with_dataset_name, name, image_root, gt_root, script, labels_for_all_images
        ),
    )


def register_all_semseg() -> None:
    ade, pc, voc, coco = (
        "prepare_ade20k_150.py", "prepare_pascal_context_59.py", "prepare_voc.py",
        "prepare_coco_stuff.py",
    )
    for split, folder in (("val", "validation"), ("train", "training")):
        _register(f"ovseg_ade150_{split}", f"{_ADE}/images/{folder}",
                  f"{_ADE}/annotations_detectron2/{folder}", "ade150", ade)
    _register("ovseg_ade847_val", f"{_ADE_FULL}/images_detectron2/validation",
              f"{_ADE_FULL}/annotations_detectron2/validation", "ade847", "prepare_ade20k_847.py",
              gt_ext="tif", ignore_label=IGNORE_16BIT)

    pc_images = f"{_VOC10}/JPEGImages"
    for split in ("val", "train"):
        _register(f"ovseg_pc59_{split}", pc_images, f"{_VOC10}/annotations_detectron2/pc59_{split}",
                  "pc59", pc, unseen_classes=unseen_classes("pc59"), **_SHARED_IMAGES)
    _register("ovseg_pc60_val", pc_images, f"{_VOC10}/annotations_detectron2/pc60_val", "pc60", pc,
              convention="mmseg", background_class=0, **_SHARED_IMAGES)
    _register("ovseg_pc459_val", pc_images, f"{_VOC10}/annotations_detectron2/pc459_val", "pc459",
              "prepare_pascal_context_459.py", gt_ext="tif", ignore_label=IGNORE_16BIT,
              **_SHARED_IMAGES)

    voc_images = f"{_VOC12}/JPEGImages"
    for split in ("val", "train"):
        _register(f"ovseg_voc20_{split}", voc_images, f"{_VOC12}/annotations_detectron2/{split}",
                  "voc20", voc, unseen_classes=unseen_classes("voc20"), **_SHARED_IMAGES)
    voc20 = load_vocabulary("voc20")
    _register("ovseg_voc20b_val", voc_images, f"{_VOC12}/annotations_detectron2_bg/val", "voc20b",
              voc, stuff_classes=voc20 + ["background"],
              prompt_to_class=list(range(20)) + [20] * 39, background_class=20, **_SHARED_IMAGES)
    _register("ovseg_voc21_val", voc_images, f"{_VOC12}/annotations_detectron2_21/val", "voc21",
              voc, convention="mmseg", background_class=0, **_SHARED_IMAGES)

    for split, folder in (("train", "train2017"), ("val", "val2017")):
        _register(f"ovseg_coco_stuff171_{split}", f"{_COCO}/images/{folder}",
                  f"{_COCO}/annotations_detectron2/{folder}", "coco_stuff171", coco,
                  unseen_classes=unseen_classes("coco_stuff171"))
    _register("ovseg_coco_object_val", f"{_COCO}/images/val2017",
              f"{_COCO}/annotations_detectron2_object/val2017", "coco_object81", coco,
              convention="mmseg", background_class=0)

    _register("ovseg_cityscapes19_val", "cityscapes/leftImg8bit/val", "cityscapes/gtFine/val",
              "cityscapes19", "prepare_cityscapes.py", image_ext="png",
              image_suffix="_leftImg8bit.png", gt_suffix="_gtFine_labelTrainIds.png")

    register_seen_dataset("ovseg_voc20_seen_train", voc_images,
                          f"{_VOC12}/annotations_detectron2/train", "voc20", voc, **_SHARED_IMAGES)
    register_seen_dataset("ovseg_pc59_seen_train", pc_images,
                          f"{_VOC10}/annotations_detectron2/pc59_train", "pc59", pc,
                          **_SHARED_IMAGES)
    register_seen_dataset("ovseg_coco_stuff171_seen_train", f"{_COCO}/images/train2017",
                          f"{_COCO}/annotations_detectron2/train2017", "coco_stuff171", coco)


def register_fewshot_datasets(
    benchmark: str,
    layout: FewShotLayout,
    convention: str | None = None,
    prefix: str | None = None,
    *,
    shot: int = 0,
    num_episodes: int = NUM_TEST_EPISODES,
    seed: int = 0,
) -> list[str]:
    """Register `<prefix>_fold{f}_{train,val}` for the 4 folds of `benchmark` ("pascal5i" or
    "coco20i") under a fold `convention` (default: the benchmark's usual one); returns the names.

    `_train` records are the (image, class) pairs of the base classes, `_val` records are
    `num_episodes` episodes of the novel classes with `shot` supports each, drawn with `seed` as
    HSNet does (`fewshot.sample_episodes`). `stuff_classes` lists all classes of the benchmark and
    a record's `class_id` indexes it; masks are raw (value = class_id + 1, 0 background, 255 void):
    `FewShotDatasetMapper` binarises them. Both splits are scored by `FewShotEvaluator` over their
    `split_classes`.
    """
    convention = convention or fewshot_default_convention(benchmark)
    prefix = prefix or f"ovseg_{benchmark}"
    script = _hint("prepare_fewshot_splits.py")
    sampling = EPISODE_SAMPLING[benchmark]
    names = []
    for fold in range(4):
        novel = fewshot_novel_classes(benchmark, fold, convention)
        base = fewshot_base_classes(benchmark, fold, convention)
        for split, classes in (("train", base), ("val", novel)):
            name = f"{prefix}_fold{fold}_{split}"
            if split == "train":
                loader = partial(load_fewshot_records, name, layout, split, classes,
                                 prepare_hint=script)
                episodes: dict[str, Any] = {}
            else:
                episodes = dict(num_episodes=num_episodes, shot=shot, episode_seed=seed,
                                episode_sampling=sampling)
                loader = partial(load_fewshot_episodes, name, layout, classes,
                                 num_episodes=num_episodes, shot=shot, seed=seed,
                                 sampling=sampling, prepare_hint=script)
            register_sem_seg_dataset(
                name, layout.image_root, layout.mask_root,
                stuff_classes=display_names(fewshot_classes(benchmark), unique=True),
                prepare_hint=script, loader=loader, evaluator_type=FEWSHOT_EVALUATOR_TYPE,
                benchmark=benchmark, fold=fold, fold_convention=convention, split=split,
                novel_classes=novel, base_classes=base, split_classes=classes,
                mask_encoding="class_id + 1, 0 background", **episodes,
            )
            names.append(name)
    return names


def register_all_fewshot() -> None:
    register_fewshot_datasets("pascal5i", PASCAL5I_LAYOUT)
    register_fewshot_datasets("coco20i", COCO20I_LAYOUT)
    register_fewshot_datasets("coco20i", COCO20I_LAYOUT, "contiguous", "ovseg_coco20i_contiguous")


def register_all() -> None:
    register_all_semseg()
    register_all_fewshot()


register_all()
