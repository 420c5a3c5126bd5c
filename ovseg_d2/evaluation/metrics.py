"""Semantic-segmentation metrics from a confusion matrix, under both published conventions, and
the few-shot (1-way, per-class accumulated) IoUs of HSNet / SAZS.

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


# ----------------------------------------------------------------------------- few-shot (1-way)

def fewshot_areas(
    pred: np.ndarray, gt: np.ndarray, ignore_label: int = 255, void_in_union: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union of one episode for k in (background 0, foreground 1), int64 (2,).

    `pred` in {0, 1}; `gt` in {0, 1, ignore_label}. Void pixels are left out of both counts (HSNet);
    with `void_in_union` the prediction is counted over all pixels, void included, as SAZS's
    evaluator does (its masking of void writes into a copy), which lowers both IoUs.
    """
    valid = gt != ignore_label
    inter = np.array([np.sum((pred == k) & (gt == k)) for k in (0, 1)], dtype=np.int64)
    pred_area = np.array(
        [np.sum(pred == k) if void_in_union else np.sum((pred == k) & valid) for k in (0, 1)],
        dtype=np.int64,
    )
    gt_area = np.array([np.sum(gt == k) for k in (0, 1)], dtype=np.int64)
    return inter, pred_area + gt_area - inter


def select_by_ground_truth(
    pred: np.ndarray, candidates: np.ndarray, gt: np.ndarray, ignore_label: int = 255, void_in_union: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """SAZS's "paper-oracle": of the prediction and the (K, H, W) {0, 1} candidate masks (eigen-segments),
    keep the one with the highest foreground IoU *against the ground truth* (ties: the prediction, then
    the first candidate). Returns its (intersection, union) as `fewshot_areas` and its index (0 = the
    prediction, k + 1 = candidate k). A foreground union of 0 counts as IoU 0. It needs the ground
    truth, so it is not a zero-shot result: only for comparing with SAZS's published numbers."""
    areas = [fewshot_areas(m, gt, ignore_label, void_in_union) for m in (pred, *candidates)]
    ious = [inter[1] / union[1] if union[1] > 0 else 0.0 for inter, union in areas]
    best = 1 + int(np.argmax(ious[1:])) if len(ious) > 1 else 0
    kept = 0 if ious[0] >= ious[best] else best
    return areas[kept][0], areas[kept][1], kept


def summarize_fewshot(
    inter: np.ndarray, union: np.ndarray, classes: Sequence[int], class_names: Sequence[str]
) -> dict[str, float]:
    """Few-shot metrics in percent from (2, C) intersections/unions summed over episodes per class.

    `IoU-<name>` = foreground intersection / max(union, 1) of each class in `classes` (a class that
    never had an episode counts as 0, as in HSNet); `mIoU` = their mean; `FB-IoU` = mean over
    background and foreground of (intersection summed over `classes`) / (union summed likewise).
    """
    classes = list(classes)
    fg_iou = inter[1, classes] / np.maximum(union[1, classes], 1)
    summed_union = union[:, classes].sum(axis=1)
    fb = inter[:, classes].sum(axis=1) / np.maximum(summed_union, 1)
    res = {"mIoU": 100 * float(fg_iou.mean()), "FB-IoU": 100 * float(fb.mean())}
    for c, iou in zip(classes, fg_iou):
        res[f"IoU-{class_names[c]}"] = 100 * float(iou)
    return res
