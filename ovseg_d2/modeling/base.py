"""The base meta-architecture shared by every open-vocabulary segmentor of the project.

It owns what all methods do the same way: moving Detectron2 input dicts to the model's device,
pixel normalisation, the vocabulary (training names vs. the test/demo vocabulary) and the whole
test procedure (`ovseg_d2.inference.InferencePolicy`: resize policy, sliding windows with a global
view, background by threshold, resizing to each image's original size). A method implements
`losses` and `predict_views` (views -> per-class scores), nothing else.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ovseg_d2.inference import InferencePolicy, run_inference

from .vocabulary import Vocabulary, VocabularyOverride, check_overrides


class OpenVocabSegmentor(nn.Module):
    """Base class; subclasses are registered in detectron2's META_ARCH_REGISTRY.

    Vocabulary (`ovseg_d2.modeling.Vocabulary`): in training mode the model segments
    `train_vocabulary` (the prompt classes of the training dataset); in eval mode `test_vocabulary`,
    set by `set_vocabulary` (the trainer does this per test dataset with `vocabulary_for(name)`; the
    demo from the user's words). `vocabulary_overrides` renames a dataset's prompts for this model
    ({dataset name: {old: new} or a vocabulary name / JSON file}), checked at construction.

    Evaluation (`forward` in eval mode): for every record, `predict_image(image,
    record_vocabulary(record), (height, width))` runs `inference` (an `InferencePolicy`) with the
    method's `predict_views`; `add_background` applies the policy's background threshold to each
    view's scores. `test_dataset` names the dataset being evaluated (set by the trainer), for
    per-dataset settings.

    Frozen submodules named with `keep_in_eval_mode` stay in eval mode when the model trains.
    """

    def __init__(
        self,
        *,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
        size_divisibility: int = 0,
        ignore_value: int = 255,
        inference: InferencePolicy | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.train_vocabulary = Vocabulary.from_entries(train_class_names, source="train_class_names")
        self.test_vocabulary = Vocabulary.from_entries(test_class_names or train_class_names, source="test_class_names")
        self.vocabulary_overrides = dict(vocabulary_overrides or {})
        check_overrides(self.vocabulary_overrides)
        self.size_divisibility = size_divisibility
        self.ignore_value = ignore_value
        self.inference = inference or InferencePolicy()
        self.test_dataset: str | None = None
        self.eval_mode_modules: tuple[str, ...] = ()

    def keep_in_eval_mode(self, *names: str) -> None:
        """`train()` leaves the submodules `names` (attribute names) in eval mode: frozen towers stay
        deterministic (no dropout) while the rest trains, and their text embeddings stay cacheable."""
        missing = [name for name in names if not isinstance(getattr(self, name, None), nn.Module)]
        if missing:
            raise AttributeError(f"{type(self).__name__}.keep_in_eval_mode: no submodule named {missing}")
        self.eval_mode_modules = (*self.eval_mode_modules, *names)

    def train(self, mode: bool = True) -> "OpenVocabSegmentor":
        super().train(mode)
        for name in self.eval_mode_modules:
            getattr(self, name).eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def vocabulary(self) -> Vocabulary:
        """The vocabulary the model segments in its current mode."""
        return self.train_vocabulary if self.training else self.test_vocabulary

    @property
    def class_names(self) -> list[str]:
        """The prompt entries of `vocabulary`."""
        return list(self.vocabulary.entries)

    @property
    def train_class_names(self) -> list[str]:
        return list(self.train_vocabulary.entries)

    @property
    def test_class_names(self) -> list[str]:
        return list(self.test_vocabulary.entries)

    def vocabulary_for(self, dataset_name: str) -> Vocabulary:
        """The vocabulary of a registered dataset, with this model's override for it if any."""
        return Vocabulary.from_metadata(dataset_name, self.vocabulary_overrides.get(dataset_name))

    def set_vocabulary(self, vocabulary: Vocabulary | Sequence[str]) -> None:
        """Set the test-time vocabulary (eval mode and demo); a list of class entries is taken as
        `Vocabulary.from_entries`. Text-embedding caches are keyed by the vocabulary itself."""
        if not isinstance(vocabulary, Vocabulary):
            vocabulary = Vocabulary.from_entries(vocabulary, source="set_vocabulary")
        self.test_vocabulary = vocabulary

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in 0-255 -> normalised with the model's pixel statistics."""
        return (images - self.pixel_mean) / self.pixel_std

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict]:
        if self.training:
            return self.losses(batched_inputs)
        outputs = []
        for record in batched_inputs:
            image = record["image"]
            size = (record.get("height", image.shape[-2]), record.get("width", image.shape[-1]))
            outputs.append({"sem_seg": self.predict_image(image, self.record_vocabulary(record), size)})
        return outputs

    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def predict_views(self, views: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        """(B, 3, h, w) float RGB 0-255 views on the model's device -> (B, N, h', w') scores, one
        channel per prompt of `vocabulary`. With sliding windows (`inference.sliding`) the scores must
        be at the view resolution (h, w); a whole-image view may return any resolution (resized
        bilinearly to the output size). The scores are merged as returned: return probabilities to
        average probabilities."""
        raise NotImplementedError

    def record_vocabulary(self, record: dict[str, Any]) -> Vocabulary:
        """The vocabulary one test record is scored with: the test vocabulary. A method whose records
        carry their own classes (a few-shot episode's class) overrides this."""
        return self.test_vocabulary

    def add_background(self, scores: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        """Per-view scores (B, N, h, w) -> the same with background by threshold: when the policy has
        a threshold and the vocabulary a background class, the channels of the prompts folding into it
        become the constant threshold (TCL's rule: background iff every class scores below it)."""
        if self.inference.background_threshold is None or vocabulary.background_class is None:
            return scores
        channels = [p for p, c in enumerate(vocabulary.prompt_to_class) if c == vocabulary.background_class]
        if not channels:
            raise ValueError(
                f"{vocabulary.source}: background class {vocabulary.class_names[vocabulary.background_class]!r} "
                "has no prompt channel to hold the background threshold"
            )
        scores = scores.clone()
        scores[:, channels] = self.inference.threshold_for(self.test_dataset)
        return scores

    def predict_image(
        self,
        image: torch.Tensor,
        vocabulary: Vocabulary | Sequence[str],
        output_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """(3, H, W) RGB 0-255 -> (N, *output_size) float32 scores (default size: the image's) by
        the `inference` policy. A list of class entries is taken as `Vocabulary.from_entries`."""
        if not isinstance(vocabulary, Vocabulary):
            vocabulary = Vocabulary.from_entries(vocabulary, source="predict_image")
        image = image.to(self.device, non_blocking=True).float()
        output_size = tuple(int(s) for s in (output_size or image.shape[-2:]))

        def predict(views: torch.Tensor) -> torch.Tensor:
            return self.add_background(self.predict_views(views, vocabulary).float(), vocabulary)

        return run_inference(predict, image, self.inference, output_size).float()

    def stack_images(self, batched_inputs: list[dict[str, Any]]) -> torch.Tensor:
        """Training images of one batch (equal sizes after cropping) -> (B, 3, H, W) float 0-255."""
        return torch.stack([x["image"].to(self.device, non_blocking=True).float() for x in batched_inputs])

    def stack_targets(self, batched_inputs: list[dict[str, Any]]) -> torch.Tensor:
        """Training label maps -> (B, H, W) long."""
        return torch.stack([x["sem_seg"].to(self.device, non_blocking=True).long() for x in batched_inputs])

