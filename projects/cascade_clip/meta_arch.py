"""Cascade-CLIP meta-architecture (HVision-NKU/Cascade-CLIP, ICML 2024) on the shared CLIP core.

Data flow: ImageNet-normalised view -> :class:`CascadeCLIPBackbone` (frozen CLIP ViT with deep visual
prompts; unit-norm maps of the taps after blocks 5..10, the final map and the global embedding) ->
:class:`CascadeHead` (NGA fusion into two stage memories + the final map, per-stage
relationship-descriptor queries, three cross-attention decoders) -> summed stage logits, upsampled
to the view. Training: focal x100 + dice (:mod:`.loss`), transductive runs pseudo-label the pixels
of unseen classes online. Testing: sigmoid minus `seen_bias` on the channels of classes seen in
training, merged over 512 windows at stride 426 by the base class.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD, CLIPTextTower, build_clip, get_tokenizer
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import CLIPTextClassifier, OpenVocabSegmentor, Vocabulary, VocabularyOverride
from ovseg_d2.modeling.text_classifiers import TextClassifier

from .backbone import CascadeCLIPBackbone
from .converter import convert_cascade_clip_checkpoint, is_official_state_dict
from .head import CascadeHead
from .loss import focal_dice_loss, pseudo_label_unseen

__all__ = ["CascadeCLIP"]

logger = logging.getLogger(__name__)


@META_ARCH_REGISTRY.register()
class CascadeCLIP(OpenVocabSegmentor):
    """Cascade-CLIP.

    Args:
        clip_model / clip_weights / image_size: open_clip config (or ours), optional OpenAI / open_clip
            weights, and the training crop the vision tower is built for (its positional table is resized
            once to that grid, bilinearly, on load; official: ViT-B/16 at 512).
        num_prompt_tokens: deep VPT tokens (official: 50 COCO-Stuff, 35 PASCAL Context, 10 VOC).
        tap_blocks / stage_taps: tapped blocks and, per NGA stage, the indices of its taps.
        text_classifier: class embeddings of the vocabulary, e.g. the official fixed embeddings
            (`PrecomputedTextClassifier`); None = live encoding with this CLIP's text tower and
            `templates` (`normalize_then_mean`, the official notebook's recipe).
        test_text_classifiers: per test dataset name, a classifier used instead of `text_classifier`
            (official cross-dataset evaluations read another dataset's embedding file).
        seen_bias: subtracted from the sigmoid scores of the test prompts that are in the training
            vocabulary (official inductive calibration 0.1; 0 for transductive models).
        unseen_train_classes: indices (in the training vocabulary) of unseen classes whose pixels get
            online pseudo-labels (transductive self-training); None = inductive training.
        train_crop_size: training images are zero-padded (after normalisation; labels with the ignore
            value) to this size, as mmseg's `Pad`.
        double_class_embedding: official quirk, see `CascadeVisionTower` (True for official checkpoints).
        freeze_tap_projections: official quirk: the tap LayerNorms / projections are new but frozen,
            so they keep their random init (True reproduces the official recipe).
    """

    def __init__(
        self,
        *,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        clip_model: str = "ViT-B-16-quickgelu",
        clip_weights: str | None = None,
        image_size: int = 512,
        num_prompt_tokens: int = 50,
        prompt_dropout: float = 0.1,
        tap_blocks: Sequence[int] = (5, 6, 7, 8, 9, 10),
        stage_taps: Sequence[Sequence[int]] = ((0, 1, 2), (3, 4, 5)),
        decoder_layers: int = 3,
        decoder_heads: int = 8,
        decoder_dropout: float = 0.1,
        text_classifier: TextClassifier | None = None,
        test_text_classifiers: Mapping[str, TextClassifier] | None = None,
        templates: str | Sequence[str] = "cascade_clip_multi",
        seen_bias: float = 0.1,
        unseen_train_classes: Sequence[int] | None = None,
        focal_weight: float = 100.0,
        dice_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        train_crop_size: Sequence[int] | None = (512, 512),
        double_class_embedding: bool = False,
        freeze_tap_projections: bool = False,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        ignore_value: int = 255,
        inference: InferencePolicy | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
    ) -> None:
        super().__init__(
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            train_class_names=train_class_names,
            test_class_names=test_class_names,
            vocabulary_overrides=vocabulary_overrides,
            ignore_value=ignore_value,
            inference=inference or InferencePolicy(window=512, stride=426),
        )
        clip = build_clip(clip_model, clip_weights, image_size=image_size, pos_interpolation="bilinear")
        self.backbone = CascadeCLIPBackbone(
            clip.visual,
            num_prompt_tokens=num_prompt_tokens,
            tap_blocks=tap_blocks,
            prompt_dropout=prompt_dropout,
            double_class_embedding=double_class_embedding,
        )
        embed_dim = clip.visual.proj.shape[1]
        self.head = CascadeHead(
            embed_dim, stage_taps=stage_taps, num_layers=decoder_layers, num_heads=decoder_heads, dropout=decoder_dropout
        )
        for name, given in (("text_classifier", text_classifier), *((f"test_text_classifiers[{k!r}]", v) for k, v in (test_text_classifiers or {}).items())):
            if given is not None and not isinstance(given, TextClassifier):
                raise TypeError(f"{name} must be a TextClassifier (or None for live text), got {given!r}")
        if text_classifier is None:
            self.clip_text = CLIPTextTower(clip, get_tokenizer(clip_model)).requires_grad_(False)
            self.keep_in_eval_mode("clip_text")  # frozen tower: no dropout, cacheable embeddings
            text_classifier = CLIPTextClassifier(
                self.clip_text, templates, synonyms="first", template_reduce="normalize_then_mean"
            )
        self.text_classifier = text_classifier
        self.test_text_classifiers = dict(test_text_classifiers or {})
        self.seen_bias = float(seen_bias)
        self.unseen_train_classes = None if unseen_train_classes is None else tuple(int(i) for i in unseen_train_classes)
        if self.unseen_train_classes is not None:
            bad = [i for i in self.unseen_train_classes if not 0 <= i < len(self.train_vocabulary)]
            if bad or not self.unseen_train_classes:
                raise ValueError(
                    f"unseen_train_classes {self.unseen_train_classes} must be non-empty indices into the "
                    f"{len(self.train_vocabulary)} training classes"
                )
        self.loss_weights = dict(focal_weight=focal_weight, dice_weight=dice_weight, alpha=focal_alpha, gamma=focal_gamma)
        self.train_crop_size = None if train_crop_size is None else tuple(int(s) for s in train_crop_size)

        # Official freezing rule: the CLIP tower is frozen, the prompts and the head are trained.
        self.backbone.tower.requires_grad_(False)
        for p in (*self.backbone.tap_norms.parameters(), self.backbone.tap_proj):
            p.requires_grad_(not freeze_tap_projections)
        self._register_load_state_dict_pre_hook(self._convert_official_state_dict)

    # ------------------------------------------------------------------ text
    def classifier_for_test(self) -> TextClassifier:
        return self.test_text_classifiers.get(self.test_dataset, self.text_classifier)

    def text_embeddings(self, vocabulary: Vocabulary) -> Tensor:
        """(N, E) class embeddings (fixed: computed without gradients)."""
        classifier = self.text_classifier if self.training else self.classifier_for_test()
        with torch.no_grad():
            return classifier(vocabulary).to(self.device, torch.float32)

    def seen_channels(self, vocabulary: Vocabulary) -> list[int]:
        """Prompts of `vocabulary` that are classes of the training vocabulary."""
        seen = set(self.train_vocabulary.entries)
        return [p for p, entry in enumerate(vocabulary.entries) if entry in seen]

    # ------------------------------------------------------------------ forward pieces
    def stage_logits(self, images: Tensor, text: Tensor) -> list[Tensor]:
        """Normalised images (B, 3, H, W), text (N, E) -> per-stage logits (B, N, H/16, W/16)."""
        return self.head(self.backbone(images), text)

    def mask_logits(self, images: Tensor, text: Tensor) -> Tensor:
        """Summed stage logits upsampled (bilinear) to the image size: the official `pred_masks`."""
        logits = torch.stack(self.stage_logits(images, text)).sum(0)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)

    # ------------------------------------------------------------------ train / eval
    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, Tensor]:
        images = self.normalize(self.stack_images(batched_inputs))
        targets = self.stack_targets(batched_inputs)
        if self.train_crop_size is not None:
            ph, pw = (max(s - c, 0) for s, c in zip(self.train_crop_size, images.shape[-2:]))
            images = F.pad(images, (0, pw, 0, ph), value=0.0)
            targets = F.pad(targets, (0, pw, 0, ph), value=self.ignore_value)
        logits = self.mask_logits(images, self.text_embeddings(self.train_vocabulary))
        if self.unseen_train_classes is not None:
            targets = pseudo_label_unseen(logits, targets, self.unseen_train_classes)
        return focal_dice_loss(logits, targets, ignore_value=self.ignore_value, **self.loss_weights)

    def predict_views(self, views: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Sigmoid scores at the view resolution, minus `seen_bias` on the seen classes' channels."""
        scores = self.mask_logits(self.normalize(views), self.text_embeddings(vocabulary)).float().sigmoid_()
        seen = self.seen_channels(vocabulary)
        if self.seen_bias and seen:
            # One in-place pass with a per-channel shift (0 on unseen channels) instead of gathering the
            # seen channels and writing them back: the score maps are full-resolution (N, 512, 512).
            shift = torch.zeros(scores.shape[1], device=scores.device, dtype=scores.dtype)
            shift[seen] = self.seen_bias
            scores.sub_(shift.view(1, -1, 1, 1))
        return scores

    def _convert_official_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        """load_state_dict pre-hook: an official state dict is converted in place ("cascade_clip"
        converter); text-tower weights are dropped (with a log line) when the model reads fixed
        embeddings and has no text tower."""
        keys = [k for k in state_dict if k.startswith(prefix)]
        if is_official_state_dict(k[len(prefix) :] for k in keys):
            converted = convert_cascade_clip_checkpoint({k[len(prefix) :]: state_dict.pop(k) for k in keys})
            state_dict.update({prefix + k: v for k, v in converted.items()})
        text = [k for k in state_dict if k.startswith(prefix + "clip_text.")]
        if text and not hasattr(self, "clip_text"):
            for k in text:
                del state_dict[k]
            logger.info(f"ignored {len(text)} text-tower tensors of the checkpoint: the model reads fixed text embeddings")
