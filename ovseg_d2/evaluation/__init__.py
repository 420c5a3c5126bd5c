"""Evaluation of open-vocabulary semantic segmentation (see `OpenVocabSemSegEvaluator`)."""

from .metrics import confusion_matrix, harmonic_iou, per_class_metrics, summarize
from .sem_seg_evaluator import OpenVocabSemSegEvaluator, build_evaluator

__all__ = [
    "OpenVocabSemSegEvaluator",
    "build_evaluator",
    "confusion_matrix",
    "harmonic_iou",
    "per_class_metrics",
    "summarize",
]
