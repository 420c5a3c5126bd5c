"""Semantic-segmentation metrics from a confusion matrix, under both published conventions.

Kept separate from the evaluator so that the numbers can be recomputed offline from a saved
`sem_seg_evaluation.pth` without Detectron2's dataset catalogs.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

METRIC_CONVENTIONS = ("detectron2", "mmseg")


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """(K+1, K+1) int64 counts indexed [prediction, ground truth], as Detectron2's SemSegEvaluator.

    `gt` must already hold `num_classes` at ignored pixels (they land in the last column and are
    left out of every metric); `pred` must lie in [0, K). int64 indices keep K >= 255 and 16-bit
    ground truth exact.
    """
    n = num_classes + 1
    flat = n * pred.reshape(-1).astype(np.int64) + gt.reshape(-1).astype(np.int64)
    return np.bincount(flat, minlength=n * n).reshape(n, n)


def per_class_metrics(conf: np.ndarray, convention: str = "detectron2") -> dict[str, np.ndarray]:
    """Per-class IoU/accuracy plus the weights needed for the means.

    detectron2: a class has an IoU and an accuracy only if it has ground-truth pixels (classes that
    are predicted but absent are left out of the means). mmseg (`total_area_to_metrics`): IoU =
    intersection / union, NaN only when the union is empty, so a predicted-but-absent class counts
    as 0; accuracy is NaN without ground truth in both conventions.
    """
    if convention not in METRIC_CONVENTIONS:
        raise ValueError(
            f"metric_convention must be one of {METRIC_CONVENTIONS}, got {convention!r}"
        )
    conf = conf[:-1, :-1].astype(np.float64)
    tp = conf.diagonal()
    pos_gt = conf.sum(axis=0)
    pos_pred = conf.sum(axis=1)
    union = pos_gt + pos_pred - tp
    has_gt = pos_gt > 0
    iou_valid = union > 0 if convention == "mmseg" else has_gt & (union > 0)
    iou = np.full(len(tp), np.nan)
    acc = np.full(len(tp), np.nan)
    iou[iou_valid] = tp[iou_valid] / union[iou_valid]
    acc[has_gt] = tp[has_gt] / pos_gt[has_gt]
    return {"iou": iou, "acc": acc, "tp": tp, "pos_gt": pos_gt}


def _nanmean(values: np.ndarray) -> float:
    valid = ~np.isnan(values)
    return float(values[valid].mean()) if valid.any() else float("nan")


def summarize(
    conf: np.ndarray,
    class_names: Sequence[str],
    *,
    convention: str = "detectron2",
    unseen_classes: Sequence[int] = (),
) -> dict[str, float]:
    """All metrics in percent, keyed as Detectron2's SemSegEvaluator (without Boundary IoU).

    fwIoU weights each valid IoU by its ground-truth pixel frequency (identical in both conventions,
    since classes without ground truth have weight 0). With `unseen_classes`, adds `mIoU-seen`,
    `mIoU-unseen` (means over the valid IoUs of each group) and `hIoU` = 2SU / (S + U).
    """
    m = per_class_metrics(conf, convention)
    iou, acc, tp, pos_gt = m["iou"], m["acc"], m["tp"], m["pos_gt"]
    total = pos_gt.sum()
    valid = ~np.isnan(iou)
    res: dict[str, float] = {
        "mIoU": 100 * _nanmean(iou),
        "fwIoU": 100 * float(np.sum(iou[valid] * pos_gt[valid] / total)) if total else float("nan"),
    }
    for i, name in enumerate(class_names):
        res[f"IoU-{name}"] = 100 * iou[i]
    res["mACC"] = 100 * _nanmean(acc)
    res["pACC"] = 100 * float(tp.sum() / total) if total else float("nan")
    for i, name in enumerate(class_names):
        res[f"ACC-{name}"] = 100 * acc[i]
    if len(unseen_classes):
        unseen = np.zeros(len(class_names), dtype=bool)
        unseen[list(unseen_classes)] = True
        seen_miou, unseen_miou = 100 * _nanmean(iou[~unseen]), 100 * _nanmean(iou[unseen])
        res["mIoU-seen"] = seen_miou
        res["mIoU-unseen"] = unseen_miou
        res["hIoU"] = harmonic_iou(seen_miou, unseen_miou)
    return res


def harmonic_iou(seen: float, unseen: float) -> float:
    """2SU / (S + U), the zero-shot summary of ZegCLIP / Cascade-CLIP; 0 when both are 0."""
    if seen + unseen == 0:
        return 0.0
    return 2 * seen * unseen / (seen + unseen)
