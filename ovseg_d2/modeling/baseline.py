"""The dense-CLIP baseline: cosine similarity of CLIP's dense patch embeddings with the class
text embeddings (MaskCLIP-style), optionally refined by a small trainable head.

With `head="none"` it is training-free: the floor every method must beat on unseen classes.
With `head="conv"` it is the project's minimal trainable open-vocabulary model (plumbing check):
CLIP stays frozen and a class-agnostic conv head refines each class's similarity map.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ovseg_d2.clip import (
    CLIPTextTower,
    CLIPVisionTower,
    build_clip,
    clip_pixel_stats,
    get_tokenizer,
    value_projection,
)
from ovseg_d2.inference import InferencePolicy

from .base import OpenVocabSegmentor
from .text_classifiers import CLIPTextClassifier
from .vocabulary import Vocabulary, VocabularyOverride


def maskclip_last_block(
    block: nn.Module, x: torch.Tensor, attn_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """MaskCLIP: the last block reduced to its value path (no residual, no MLP), so each patch
    embedding stays local yet lives in the space that `ln_post` + `proj` map to the text space
    (a `BlockOverride`; `attn_mask` is unused: no token attends to another)."""
    return block.ls_1(value_projection(block.attn, block.ln_1(x)))


@META_ARCH_REGISTRY.register()
class DenseCLIPBaseline(OpenVocabSegmentor):
    """Dense CLIP patch-text similarity (+ optional conv head) as a semantic segmentor.

    Args:
        clip_model / clip_weights: passed to `ovseg_d2.clip.build_clip`.
        templates: name of a template set (`ovseg_d2/clip/templates`).
        clip_resolution: (H, W) the image is resized to before CLIP (None: keep the input size).
        head: "none" (training-free) or "conv" (trainable refinement of each similarity map).
        temperature: initial logit scale of the cosine similarities.
        inference: the test procedure (`ovseg_d2.inference.InferencePolicy`; default: whole image).
    """

    def __init__(
        self,
        *,
        clip_model: str,
        clip_weights: str | None = None,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        templates: str = "simple",
        clip_resolution: tuple[int, int] | None = None,
        head: str = "conv",
        head_channels: int = 16,
        temperature: float = 50.0,
        ignore_value: int = 255,
        inference: InferencePolicy | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
    ) -> None:
        mean, std = clip_pixel_stats("openai")
        super().__init__(
            pixel_mean=mean,
            pixel_std=std,
            train_class_names=train_class_names,
            test_class_names=test_class_names,
            ignore_value=ignore_value,
            inference=inference,
            vocabulary_overrides=vocabulary_overrides,
        )
        if head not in ("none", "conv"):
            raise ValueError(f"head must be 'none' or 'conv', got {head!r}")
        clip = build_clip(clip_model, clip_weights)
        clip.requires_grad_(False)
        self.vision = CLIPVisionTower(clip.visual)
        self.text = CLIPTextTower(clip, get_tokenizer(clip_model))
        self.keep_in_eval_mode("vision", "text")  # CLIP is frozen: deterministic while the head trains
        self.text_classifier = CLIPTextClassifier(self.text, templates, synonyms="mean")
        self.clip_resolution = tuple(clip_resolution) if clip_resolution else None
        self.logit_scale = nn.Parameter(torch.tensor(float(temperature)).log(), requires_grad=head != "none")
        self.head = (
            nn.Sequential(
                nn.Conv2d(1, head_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(head_channels, 1, 3, padding=1),
            )
            if head == "conv"
            else None
        )

    def logits(self, images: torch.Tensor, class_names: Sequence[str]) -> torch.Tensor:
        """(B, 3, H, W) RGB 0-255 -> (B, N, h, w) logits on CLIP's patch grid."""
        x = images
        if self.clip_resolution and tuple(x.shape[-2:]) != self.clip_resolution:
            x = F.interpolate(x, size=self.clip_resolution, mode="bilinear", align_corners=False)
        with torch.no_grad():
            features = self.vision(self.normalize(x), block_overrides={-1: maskclip_last_block})
            dense = F.normalize(features.dense(), dim=1)
            text = self.text_classifier(Vocabulary.from_entries(class_names))
        cosine = torch.einsum("bchw,nc->bnhw", dense, text.to(dense.dtype))
        logits = cosine * self.logit_scale.exp()
        if self.head is not None:
            b, n, h, w = cosine.shape
            logits = logits + self.head(cosine.reshape(b * n, 1, h, w)).reshape(b, n, h, w)
        return logits

    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if self.head is None:
            raise RuntimeError("DenseCLIPBaseline(head='none') is training-free; use head='conv' to train")
        images = self.stack_images(batched_inputs)
        targets = self.stack_targets(batched_inputs)
        logits = self.logits(images, self.train_class_names)
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
        return {"loss_sem_seg": F.cross_entropy(logits, targets, ignore_index=self.ignore_value)}

    def predict_views(self, views: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        logits = self.logits(views, vocabulary.entries)
        logits = F.interpolate(logits, size=views.shape[-2:], mode="bilinear", align_corners=False)
        return logits.softmax(dim=1)
