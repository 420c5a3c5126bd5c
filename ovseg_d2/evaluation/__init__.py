"""Evaluation of open-vocabulary semantic segmentation (`OpenVocabSemSegEvaluator`) and of few-shot
folds (`FewShotEvaluator`); `build_evaluator` picks one from a dataset's `evaluator_type`."""

from .fewshot_evaluator import FewShotEvaluator
from .metrics import (
    confusion_matrix,
    fewshot_areas,
    harmonic_iou,
    per_class_metrics,
    select_by_ground_truth,
    summarize,
    summarize_fewshot,
)
from .sem_seg_evaluator import OpenVocabSemSegEvaluator, build_evaluator

__all__ = [
    "OpenVocabSemSegEvaluator",
    "FewShotEvaluator",
    "build_evaluator",
    "confusion_matrix",
    "harmonic_iou",
    "per_class_metrics",
    "summarize",
    "fewshot_areas",
    "select_by_ground_truth",
    "summarize_fewshot",
]
