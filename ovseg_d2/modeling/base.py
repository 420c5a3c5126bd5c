"""The base meta-architecture shared by every open-vocabulary segmentor of the project.

It owns what all methods do the same way: moving Detectron2 input dicts to the model's device,
pixel normalisation, the vocabulary (training names vs. the test/demo vocabulary) and resizing
the predicted scores back to each image's original size. A method implements `losses` and
`predict_image`, nothing else.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ovseg_d2.inference import resize_to_original


class OpenVocabSegmentor(nn.Module):
    """Base class; subclasses are registered in detectron2's META_ARCH_REGISTRY.

    Vocabulary: in training mode the model segments `train_class_names` (the prompt classes of the
    training dataset); in eval mode it segments the test vocabulary, set by `set_vocabulary(names)`
    (the trainer does this per test dataset from its metadata; the demo from the user's words).
    Class entries may hold synonyms separated by ", " (see `ovseg_d2.clip.text.split_synonyms`).
    """

    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        size_divisibility: int = 0,
        ignore_value: int = 255,
    ) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.train_class_names = list(train_class_names)
        self.test_class_names = list(test_class_names or train_class_names)
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def class_names(self) -> list[str]:
        """The vocabulary the model segments in its current mode."""
        return self.train_class_names if self.training else self.test_class_names

    def set_vocabulary(self, class_names: Sequence[str]) -> None:
        """Set the test-time vocabulary (eval mode and demo). Cached text embeddings of other
        vocabularies are not reused: caches are keyed by the vocabulary itself."""
        names = [str(n) for n in class_names]
        if not names:
            raise ValueError("set_vocabulary needs at least one class name")
        self.test_class_names = names

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0-255 -> normalised with the model's pixel statistics."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict]:
        if self.training:
            return self.losses(batched_inputs)
        outputs = []
        for item in batched_inputs:
            image = item["image"].to(self.device, non_blocking=True).float()
            scores = self.predict_image(image, self.test_class_names)
            height = item.get("height", image.shape[-2])
            width = item.get("width", image.shape[-1])
            outputs.append({"sem_seg": resize_to_original(scores, (height, width))})
        return outputs

    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict_image(self, image: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """(3, H, W) float RGB 0-255 on the model's device -> (N, H', W') class scores."""
        raise NotImplementedError

    def stack_images(self, batched_inputs: list[dict[str, Any]]) -> torch.Tensor:
        """Training images of one batch (equal sizes after cropping) -> (B, 3, H, W) float 0-255."""
        return torch.stack([x["image"].to(self.device, non_blocking=True).float() for x in batched_inputs])

    def stack_targets(self, batched_inputs: list[dict[str, Any]]) -> torch.Tensor:
        """Training label maps -> (B, H, W) long."""
        return torch.stack([x["sem_seg"].to(self.device, non_blocking=True).long() for x in batched_inputs])

