"""The one way the project registers a semantic-segmentation dataset with Detectron2."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

EVALUATOR_TYPE = "ovseg_sem_seg"
FEWSHOT_EVALUATOR_TYPE = "ovseg_fewshot"
_EXAMPLES = 3  # file names quoted in a "files without their pair" error


def datasets_root() -> Path:
    """Root of all datasets: $DETECTRON2_DATASETS, default ./datasets (read at call time)."""
    return Path(os.getenv("DETECTRON2_DATASETS", "datasets"))


class DatasetNotPreparedError(FileNotFoundError):
    """A registered dataset's files are missing or malformed."""


def _list_files(folder: Path, suffix: str) -> dict[str, Path]:
    return {
        str(p.relative_to(folder))[: -len(suffix)]: p
        for p in folder.rglob("*" + suffix)
        if p.is_file()
    }


def load_sem_seg_records(
    dataset_name: str,
    image_root: Path,
    gt_root: Path,
    *,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    prepare_hint: str = "",
    image_suffix: str | None = None,
    gt_suffix: str | None = None,
    labels_for_all_images: bool = True,
) -> list[dict[str, Any]]:
    """Pair images and ground-truth maps by relative path without extension.

    Unlike Detectron2's `load_sem_seg`, a missing folder, a label map without its image, and (with
    `labels_for_all_images`) an image without its label map are errors naming the dataset, how many
    files lack their pair, the first few of them and the preparation script, instead of a silent
    fallback or a silently smaller dataset. Pass `labels_for_all_images=False` only when the image
    folder is shared by several splits (VOC's JPEGImages holds train, val and test images).
    `image_suffix` / `gt_suffix` (default "." + ext) are the file-name endings stripped before
    pairing, e.g. Cityscapes' "_leftImg8bit.png" and "_gtFine_labelTrainIds.png".
    """
    image_suffix = image_suffix or "." + image_ext
    gt_suffix = gt_suffix or "." + gt_ext
    hint = f" Prepare it with: {prepare_hint}" if prepare_hint else ""
    for folder in (image_root, gt_root):
        if not folder.is_dir():
            raise DatasetNotPreparedError(
                f"Dataset '{dataset_name}': expected folder {folder} does not exist "
                f"(datasets root: {datasets_root()}, set $DETECTRON2_DATASETS to change it).{hint}"
            )
    images = _list_files(image_root, image_suffix)
    labels = _list_files(gt_root, gt_suffix)
    if not labels:
        raise DatasetNotPreparedError(
            f"Dataset '{dataset_name}': no '*{gt_suffix}' ground truth under {gt_root}.{hint}"
        )
    without_image = sorted(set(labels) - set(images))
    if without_image:
        raise DatasetNotPreparedError(
            f"Dataset '{dataset_name}': {len(without_image)} label maps under {gt_root} have no "
            f"image '*{image_suffix}' under {image_root}: {_examples(without_image, labels)}.{hint}"
        )
    without_label = sorted(set(images) - set(labels)) if labels_for_all_images else []
    if without_label:
        raise DatasetNotPreparedError(
            f"Dataset '{dataset_name}': {len(without_label)} images under {image_root} have no "
            f"label map '*{gt_suffix}' under {gt_root}: {_examples(without_label, images)}.{hint}"
        )
    return [
        {"file_name": str(images[key]), "sem_seg_file_name": str(labels[key]), "image_id": key}
        for key in sorted(labels)
    ]


def _examples(keys: list[str], files: dict[str, Path]) -> str:
    more = f", ... ({len(keys) - _EXAMPLES} more)" if len(keys) > _EXAMPLES else ""
    return ", ".join(str(files[k]) for k in keys[:_EXAMPLES]) + more


def register_sem_seg_dataset(
    name: str,
    image_root: str | Path,
    gt_root: str | Path,
    *,
    stuff_classes: Sequence[str],
    ignore_label: int = 255,
    image_ext: str = "jpg",
    gt_ext: str = "png",
    prepare_hint: str = "",
    loader: Callable[[], list[dict[str, Any]]] | None = None,
    image_suffix: str | None = None,
    gt_suffix: str | None = None,
    labels_for_all_images: bool = True,
    evaluator_type: str = EVALUATOR_TYPE,
    **metadata: Any,
) -> None:
    """Register `name` in DatasetCatalog (lazy: nothing is read until the dataset is used) and set its
    metadata (keys documented in docs/architecture.md). Relative roots are resolved against
    `datasets_root()` at load time, so $DETECTRON2_DATASETS may be set after import.

    `loader`, when given, replaces the default image/label pairing (e.g. few-shot episode lists);
    `image_suffix`, `gt_suffix` and `labels_for_all_images` are passed to `load_sem_seg_records`.
    `evaluator_type` selects the evaluator (`ovseg_d2.evaluation.build_evaluator`).
    """

    def resolve(path: str | Path) -> Path:
        path = Path(path)
        return path if path.is_absolute() else datasets_root() / path

    def load() -> list[dict[str, Any]]:
        if loader is not None:
            return loader()
        return load_sem_seg_records(
            name, resolve(image_root), resolve(gt_root),
            image_ext=image_ext, gt_ext=gt_ext, prepare_hint=prepare_hint,
            image_suffix=image_suffix, gt_suffix=gt_suffix,
            labels_for_all_images=labels_for_all_images,
        )

    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    DatasetCatalog.register(name, load)
    metadata.setdefault("prompt_classes", list(stuff_classes))
    MetadataCatalog.get(name).set(
        stuff_classes=list(stuff_classes),
        ignore_label=ignore_label,
        evaluator_type=evaluator_type,
        image_root=str(image_root),
        sem_seg_root=str(gt_root),
        gt_ext=gt_ext,
        prepare_hint=prepare_hint,
        **metadata,
    )
