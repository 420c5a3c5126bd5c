"""Single-image inference with a free-text vocabulary (the demo and the Python API)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import detection_utils
from omegaconf import DictConfig

from .train_loop import build_model


def parse_vocabulary(text: str) -> list[str]:
    """"cat, dog|puppy, a red car" -> ["cat", "dog, puppy", "a red car"].

    Classes are separated by commas; synonyms of one class by "|" (stored the project's way, joined
    by ", ", see `ovseg_d2.clip.text.split_synonyms`). Empty entries and duplicates are errors.
    """
    classes = []
    for raw in text.split(","):
        synonyms = [s.strip() for s in raw.split("|") if s.strip()]
        if not synonyms:
            raise ValueError(f"empty class name in vocabulary {text!r}")
        classes.append(", ".join(synonyms))
    duplicates = {c for c in classes if classes.count(c) > 1}
    if duplicates:
        raise ValueError(f"duplicate classes in vocabulary: {sorted(duplicates)}")
    return classes


class OpenVocabPredictor:
    """Builds `cfg.model`, loads `weights`, and segments image files with any vocabulary.

    Images are preprocessed by the config's test mapper (`cfg.dataloader.test.mapper`), exactly as
    during evaluation. Returns per-class scores at the image's original size.
    """

    def __init__(self, cfg: DictConfig, weights: str | None = None) -> None:
        self.model = build_model(cfg)
        if weights:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"weights file not found: {weights}")
            DetectionCheckpointer(self.model).load(weights)
        self.model.eval()
        self.mapper = instantiate(cfg.dataloader.test.mapper)

    @torch.no_grad()
    def __call__(self, image_path: str | Path, vocabulary: Sequence[str]) -> tuple[np.ndarray, torch.Tensor]:
        """Returns (the RGB image as read, uint8 HxWx3) and (N, H, W) scores."""
        self.model.set_vocabulary(vocabulary)
        record = self.mapper({"file_name": str(image_path)})
        scores = self.model([record])[0]["sem_seg"]
        image = detection_utils.read_image(str(image_path), format="RGB")
        return image, scores.cpu()
