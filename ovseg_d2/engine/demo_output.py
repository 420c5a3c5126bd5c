"""What the demos (tools/demo.py, tools/web_demo.py) show for one image and a free-text vocabulary:
the label map, its overlay (image | prediction | legend) and its per-class area table."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ovseg_d2.modeling import Vocabulary
from ovseg_d2.utils.visualization import UNLABELED, area_percentages, render_segmentation

from .predictor import OpenVocabPredictor


def predict_labels(scores: torch.Tensor, vocabulary: Vocabulary, min_score: float | None) -> np.ndarray:
    """(P, H, W) prompt scores -> (H, W) scored-class ids, as the evaluator folds prompts
    (`prompt_to_class[argmax]`); -1 (unlabeled) where the best score is below `min_score`."""
    best, prompt = scores.max(dim=0)
    labels = np.asarray(vocabulary.prompt_to_class)[prompt.numpy()]
    if min_score is not None:
        labels[best.numpy() < min_score] = -1
    return labels


@dataclass(frozen=True)
class DemoSegmentation:
    """One image segmented with a vocabulary: the RGB image as read (H, W, 3 uint8), the (H, W) class
    ids (-1: unlabeled) and the vocabulary's class names."""

    image: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    def overlay(self, alpha: float = 0.6) -> np.ndarray:
        """image | prediction | legend (class, area %), upscaled as `render_segmentation` draws it."""
        return render_segmentation(self.image, [self.labels], ["area"], self.class_names, alpha=alpha)

    def area_table(self) -> list[tuple[str, float]]:
        """(class, % of pixels) for every class of the vocabulary, largest first (ties in vocabulary
        order), then (UNLABELED, %) when some pixels are unlabeled."""
        areas, unlabeled = area_percentages(self.labels, len(self.class_names))
        order = sorted(range(len(self.class_names)), key=lambda c: -areas[c])
        rows = [(self.class_names[c], float(areas[c])) for c in order]
        return rows + ([(UNLABELED, float(unlabeled))] if unlabeled > 0 else [])


def segment_image(
    predictor: OpenVocabPredictor, image_path: str | Path, vocabulary: Vocabulary, min_score: float | None = None
) -> DemoSegmentation:
    """Segments the image file with `vocabulary` (an unreadable image raises an OSError naming it)."""
    image, scores = predictor(image_path, vocabulary)
    return DemoSegmentation(image, predict_labels(scores, vocabulary, min_score), tuple(vocabulary.class_names))
