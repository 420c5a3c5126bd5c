"""Eigen-segments at test time, without the ground truth.

The official test (`test_sp`) keeps, per episode, whichever of {model prediction, eigen-segment 0..4}
has the highest foreground IoU *with the ground-truth mask*: an oracle, available here only as the
evaluator's clearly labelled "paper-oracle" mode (`FewShotEvaluator(paper_oracle=True)`).
`snap_to_eigen_segment` is the zero-shot rule used instead: it compares the eigen-segments with the
model's own prediction and never sees the ground truth.
"""
from __future__ import annotations

import torch

__all__ = ["mask_iou", "relabel_eigen_segments", "snap_to_eigen_segment"]


def mask_iou(masks: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """IoU of every (K, H, W) boolean mask with a (H, W) boolean reference; 0 when both are empty."""
    inter = (masks & reference).flatten(1).sum(1).float()
    union = (masks | reference).flatten(1).sum(1).float()
    return inter / union.clamp(min=1)


def snap_to_eigen_segment(scores: torch.Tensor, segments: torch.Tensor, min_iou: float) -> torch.Tensor:
    """(2, H, W) scores (background, class) and (K, H, W) boolean eigen-segments -> fused scores.

    The eigen-segment that agrees best with the predicted foreground replaces it when their IoU is at
    least `min_iou` (the segment follows the object's shape); otherwise the prediction is kept. The
    result is one-hot scores (background, class) of the chosen mask.
    """
    if segments.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"eigen-segments of size {tuple(segments.shape[-2:])} do not match the prediction {tuple(scores.shape[-2:])}")
    foreground = scores[1] > scores[0]  # argmax with ties to background, as the evaluator
    if segments.shape[0] == 0:
        return scores
    iou = mask_iou(segments.bool(), foreground)
    best = int(iou.argmax())
    if float(iou[best]) < min_iou:
        return scores
    chosen = segments[best].to(scores.dtype)
    return torch.stack([1.0 - chosen, chosen])


def relabel_eigen_segments(scores: torch.Tensor, segments: torch.Tensor, min_iou: float) -> torch.Tensor:
    """Multi-class version for a (C, H, W) vocabulary without a background channel (toy world, demo):
    each eigen-segment takes the class the model predicts on most of it, when it agrees with that class's
    predicted region (IoU >= `min_iou`); segments are applied from the largest to the smallest, so a small
    segment inside a large one keeps its own class. Returns one-hot scores; no ground truth involved."""
    if segments.shape[-2:] != scores.shape[-2:]:
        raise ValueError(f"eigen-segments of size {tuple(segments.shape[-2:])} do not match the prediction {tuple(scores.shape[-2:])}")
    pred = scores.argmax(dim=0)
    labels = pred.clone()
    for k in torch.argsort(segments.flatten(1).sum(1), descending=True).tolist():
        segment = segments[k].bool()
        if not segment.any() or segment.all():
            continue
        cls = int(torch.mode(pred[segment]).values)
        if float(mask_iou(segment[None], pred == cls)[0]) >= min_iou:
            labels[segment] = cls
    return torch.nn.functional.one_hot(labels, scores.shape[0]).permute(2, 0, 1).to(scores.dtype)
