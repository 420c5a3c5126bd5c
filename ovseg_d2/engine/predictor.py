"""Single-image inference with a free-text vocabulary (the demo and the Python API)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from detectron2.config import instantiate
from omegaconf import DictConfig

from ovseg_d2.checkpoint import require_inference_weights
from ovseg_d2.data.mappers import read_image
from ovseg_d2.modeling import Vocabulary

from .train_loop import build_model, load_model_weights


class OpenVocabPredictor:
    """Builds `cfg.model`, loads `weights`, and segments image files with any vocabulary.

    Images are preprocessed by the config's test mapper (`cfg.dataloader.test.mapper`), exactly as
    during evaluation. Returns per-class scores at the image's original size.
    """

    def __init__(self, cfg: DictConfig, weights: str | None = None) -> None:
        """`weights`: a checkpoint (default: `cfg.train.init_checkpoint`), or "none" to run the model as
        the config builds it. Loading is strict unless `cfg.train.strict_load` is False."""
        self.model = build_model(cfg)
        weights = require_inference_weights(weights if weights is not None else cfg.train.init_checkpoint)
        load_model_weights(self.model, weights, strict=cfg.train.get("strict_load", True))
        self.model.eval()
        self.mapper = instantiate(cfg.dataloader.test.mapper)

    @torch.no_grad()
    def __call__(
        self, image_path: str | Path, vocabulary: Vocabulary | Sequence[str]
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Returns (the RGB image as read, uint8 HxWx3) and (N, H, W) scores, one channel per prompt of
        `vocabulary` (user words: `Vocabulary.from_text`). An unreadable image raises an OSError
        naming its file."""
        self.model.set_vocabulary(vocabulary)
        record = self.mapper({"file_name": str(image_path)})
        scores = self.model([record])[0]["sem_seg"]
        image = read_image(str(image_path), format="RGB")
        return image, scores.cpu()
