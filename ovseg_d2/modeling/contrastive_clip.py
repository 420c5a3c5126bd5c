"""Contrastive CLIP pretraining as a Detectron2 meta-architecture (the toy world's "web-scale" CLIP).

`ContrastiveCLIP` wraps an open_clip `CLIP` built by `ovseg_d2.clip.build_clip` and trains it with
the shared symmetric InfoNCE (`ovseg_d2.modeling.contrastive`) on `{"image", "caption"}` dicts
(ovseg_d2.data.image_text: the streaming loader and `ImageTextMapper`), so the standard trainer
(tools/train_net.py) pretrains it. `export_clip_checkpoint` turns the trainer's
checkpoint into an open_clip-format file (`{"state_dict": clip_sd}`) that `build_clip(config,
weights=path)` loads exactly like released CLIP weights.

Optional hard text negatives (NegCLIP-style): `text_negatives` turns each caption into K captions
that differ from it in one attribute word (the toy world: another shape, `ovseg_d2.data.toy.captions.
AttributeSwap`), and `loss_hard_negative` asks each image to prefer its caption over them. Without it,
an attribute that the rest of a caption already separates from every other caption of the batch
(the toy shape next to colours, counts and sizes) earns almost no gradient.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.utils.events import get_event_storage
from torch import nn

from ovseg_d2.checkpoint import load_checkpoint_file
from ovseg_d2.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, build_clip, get_tokenizer
from ovseg_d2.utils.atomic import torch_save_atomic

from .contrastive import symmetric_info_nce

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp of the learnt temperature


@META_ARCH_REGISTRY.register()
class ContrastiveCLIP(nn.Module):
    """Image-text contrastive training of an open_clip CLIP.

    Training: `forward(batched_inputs)` -> `{"loss_contrastive": symmetric InfoNCE}` of the local
    images and captions against all ranks' (gathered with gradients), plus, with `text_negatives`,
    `{"loss_hard_negative": hard_negative_weight x CE(s x image @ [caption, negatives...]^T, 0)}`.
    Eval: `[{"image_embedding": (E,) L2-normalised}]` per image; `encode_text` embeds captions.
    Images are resized to the CLIP's input size if the mapper did not already produce it. Training
    logs the temperature to the event storage, so it runs inside a Detectron2 `EventStorage`.
    """

    def __init__(
        self,
        *,
        clip_model: str | os.PathLike,
        clip_weights: str | os.PathLike | None = None,
        pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        pixel_std: Sequence[float] = OPENAI_CLIP_STD,
        text_negatives: Callable[[str], list[str]] | None = None,
        hard_negative_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.text_negatives = text_negatives
        self.hard_negative_weight = hard_negative_weight
        self.clip = build_clip(clip_model, clip_weights)
        self.tokenizer = get_tokenizer(clip_model)
        size = self.clip.visual.image_size
        self.image_size: tuple[int, int] = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """0-255 RGB CHW images -> normalised (B, 3, H, W) batch at the CLIP's input size."""
        batch = []
        for image in images:
            image = image.to(self.device, torch.float32)
            if tuple(image.shape[-2:]) != self.image_size:
                image = F.interpolate(image[None], self.image_size, mode="bilinear", antialias=True)[0]
            batch.append(image)
        return (torch.stack(batch) - self.pixel_mean) / self.pixel_std

    def encode_image(self, images: Sequence[torch.Tensor]) -> torch.Tensor:
        """L2-normalised image embeddings (B, E) of 0-255 RGB CHW images."""
        return self.clip.encode_image(self.preprocess(images), normalize=True)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N, E)."""
        return self.clip.encode_text(self.tokenizer(list(texts)).to(self.device), normalize=True)

    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict[str, Any]]:
        image_features = self.encode_image([x["image"] for x in batched_inputs])
        if not self.training:
            return [{"image_embedding": f} for f in image_features]
        text_features = self.encode_text([x["caption"] for x in batched_inputs])
        logit_scale = self.clip.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        get_event_storage().put_scalar("clip/logit_scale", logit_scale.item())
        losses = {"loss_contrastive": symmetric_info_nce(image_features, text_features, logit_scale)}
        if self.text_negatives is not None:
            captions = [x["caption"] for x in batched_inputs]
            losses["loss_hard_negative"] = self.hard_negative_weight * self.hard_negative_loss(
                image_features, text_features, captions, logit_scale
            )
        return losses

    def hard_negative_loss(
        self, image_features: torch.Tensor, text_features: torch.Tensor, captions: list[str],
        logit_scale: torch.Tensor,
    ) -> torch.Tensor:
        """CE of each image over its own caption (index 0) and that caption's K hard negatives; local
        to the rank (the negatives of image i only compete with caption i)."""
        negatives = [self.text_negatives(c) for c in captions]
        counts = {len(n) for n in negatives}
        if len(counts) != 1 or 0 in counts:
            raise ValueError(f"text_negatives must return the same number (>= 1) of captions for every "
                             f"caption; got counts {sorted(counts)} for a batch")
        k = counts.pop()
        negative_features = self.encode_text([n for group in negatives for n in group]).view(len(captions), k, -1)
        candidates = torch.cat([text_features[:, None], negative_features], dim=1)  # (B, 1 + K, E)
        logits = logit_scale * torch.einsum("be,bke->bk", image_features, candidates)
        return F.cross_entropy(logits, torch.zeros(len(captions), dtype=torch.long, device=logits.device))


def clip_state_dict(model_state: dict[str, torch.Tensor], prefix: str = "clip.") -> dict[str, torch.Tensor]:
    """The CLIP's own entries of a ContrastiveCLIP state dict, with `prefix` stripped."""
    sd = {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}
    if not sd:
        raise ValueError(f"no '{prefix}*' entries: not a ContrastiveCLIP state dict")
    return sd


def export_clip_checkpoint(checkpoint: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the CLIP of a trainer checkpoint (`{"model": ContrastiveCLIP state}`) as an open_clip
    checkpoint `{"state_dict": clip_sd}`, atomically (a reader never sees a partial file)."""
    state = load_checkpoint_file(checkpoint)
    sd = clip_state_dict(state.get("model", state))
    return torch_save_atomic({"state_dict": sd}, output)

