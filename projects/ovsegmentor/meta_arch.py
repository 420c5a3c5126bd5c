"""OVSegmentor (Xu et al., CVPR 2023) meta-architecture on the ovseg-d2 core.

Training on image-caption pairs only: the GroupViT image encoder (`group_vit.py`) and a HuggingFace
text tower (BERT) with projection heads; losses: image-caption InfoNCE + masked entity completion
(stage 1) + 0.1 x cross-image mask consistency with a momentum image encoder (stage 2).
Segmentation (GroupViT's procedure): every pixel takes the scores of its group; a group's class
scores are restricted to the view's top-5 classes; background by a per-view threshold.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import HFTextClassifier, OpenVocabSegmentor, Vocabulary, VocabularyOverride
from ovseg_d2.modeling.contrastive import symmetric_info_nce
from ovseg_d2.modeling.hf_text import TextTokenizer, build_hf_text_model

from .group_vit import GroupViTEncoder, GroupViTOutput
from .heads import EntityCompletionHead, ProjectionHead
from .mask_consistency import MaskConsistency

__all__ = ["OVSegmentor", "TokenBatch"]

TokenBatch = Mapping[str, torch.Tensor]  # {"input_ids", "attention_mask"} (B, L)


@META_ARCH_REGISTRY.register()
class OVSegmentor(OpenVocabSegmentor):
    """Args:
        image_encoder: keyword arguments of `GroupViTEncoder` (ViT-B/16, 8 heads, 64 -> 8 groups).
        image_weights: ViT weights in timm / DINO layout (the paper: DINO ViT-B/16,
            dino_vitbase16_pretrain.pth) loaded into the encoder's blocks, patch embedding, positional
            table and final norm; None = random (e.g. when a converted checkpoint follows).
        text_model: `build_hf_text_model` spec: config dict with `model_type` (random weights) or a
            local HuggingFace folder. Built without the pooler (unused: the [CLS] state is the feature).
        tokenizer: local tokenizer folder (distilbert-base-uncased's vocab for BERT).
        context_length: training texts are padded / truncated to it (77).
        output_dim / projector_inner_dim: the projection heads (256 / 4096).
        entity_loss_weight: masked entity completion (1.0; 0 = no entity head).
        mask_loss_weight: cross-image mask consistency (stage 2: 0.1; 0 = no momentum encoder).
        momentum: EMA factor of the momentum image encoder (0.99, updated after every step).
        freeze_text: stage 2 freezes the text tower.
        sync_batchnorm: SyncBatchNorm in the heads (official; needs GPUs in multi-process training).
        templates: template set name or list ("simple": "a photo of a {}.").
        top_k_classes: per view, group scores only over the image-level top-k classes (5).
        entity_attend_padding: official bug switch: the entity head attends to padded question tokens.
        official_projector_stat_updates: official quirk switch: also run the projectors on outputs
            the losses never use (all text tokens, the segment tokens in stage 1, the momentum
            branch), as the official forward does; each run updates the BatchNorm running statistics
            that inference uses (spec 15.5). Off: the statistics come from the used branches only.
        background_threshold (in `inference`): per dataset; background = every class of a pixel's
            group below min(threshold, the view's best group score).
    """

    def __init__(
        self,
        *,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        image_encoder: Mapping[str, Any] | None = None,
        image_weights: str | None = None,
        text_model: str | Mapping[str, Any],
        tokenizer: str,
        context_length: int = 77,
        output_dim: int = 256,
        projector_inner_dim: int = 4096,
        logit_scale_init: float = math.log(1 / 0.07),
        logit_scale_max: float = 100.0,
        entity_loss_weight: float = 1.0,
        entity_heads: int = 8,
        entity_layers: int = 1,
        mask_loss_weight: float = 0.0,
        mask_threshold: float = 0.6,
        group_ratio: float = 0.5,
        momentum: float = 0.99,
        freeze_text: bool = False,
        sync_batchnorm: bool = False,
        templates: str | Sequence[str] = "simple",
        top_k_classes: int | None = 5,
        entity_attend_padding: bool = False,
        official_projector_stat_updates: bool = False,
        pixel_mean: Sequence[float] = IMAGENET_MEAN,
        pixel_std: Sequence[float] = IMAGENET_STD,
        inference: InferencePolicy | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
    ) -> None:
        super().__init__(
            pixel_mean=pixel_mean, pixel_std=pixel_std, train_class_names=train_class_names,
            test_class_names=test_class_names, vocabulary_overrides=vocabulary_overrides,
            # the test mapper sizes the image (mmseg's Resize(2048, 448) keep-ratio: MmsegResize)
            inference=inference or InferencePolicy(window=448, stride=224),
        )
        self.image_encoder = GroupViTEncoder(**dict(image_encoder or {}))
        if image_weights:
            self.image_encoder.load_vit_weights(image_weights)
        self.text_encoder = build_hf_text_model(text_model, add_pooling_layer=False)
        self.tokenizer = TextTokenizer(tokenizer)  # pads to the longest text unless given a length
        self.context_length = context_length
        image_width, text_width = self.image_encoder.width, self.text_encoder.config.hidden_size
        self.image_projector = ProjectionHead(image_width, projector_inner_dim, output_dim)
        self.text_projector = ProjectionHead(text_width, projector_inner_dim, output_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max = logit_scale_max
        self.entity_loss_weight = entity_loss_weight
        if entity_loss_weight > 0:
            width = min(image_width, text_width)
            # The wider side is projected to the narrower one (ViT-S + RoBERTa: the text side).
            self.align_image = nn.Linear(image_width, width) if image_width > width else nn.Identity()
            self.align_text = nn.Linear(text_width, width) if text_width > width else nn.Identity()
            self.entity_head = EntityCompletionHead(width, entity_heads, entity_layers, entity_attend_padding)
            self.entity_projector = ProjectionHead(width, projector_inner_dim, output_dim)
        self.mask_loss_weight = mask_loss_weight
        self.momentum = momentum
        if mask_loss_weight > 0:
            self.mask_consistency = MaskConsistency(mask_threshold, group_ratio)
            self.momentum_encoder = copy.deepcopy(self.image_encoder).requires_grad_(False)
            # False until the momentum encoder has been set to the online one (first step of a run
            # that starts from a stage-1 checkpoint); saved, so a resumed run keeps its momentum copy.
            self.register_buffer("momentum_synced", torch.tensor(False))
        if freeze_text:
            self.text_encoder.requires_grad_(False)
        if sync_batchnorm:
            for name in ("image_projector", "text_projector", "entity_projector"):
                if hasattr(self, name):
                    setattr(self, name, nn.SyncBatchNorm.convert_sync_batchnorm(getattr(self, name)))
        self.top_k_classes = top_k_classes
        self.official_projector_stat_updates = official_projector_stat_updates
        self.text_classifier = HFTextClassifier(
            self.text_encoder, self.tokenizer, templates, projector=self.text_projector,
            template_reduce="mean_then_normalize",
        )

    # ------------------------------------------------------------------ encoders
    @property
    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=self.logit_scale_max)

    def encode_text(self, tokens: TokenBatch) -> torch.Tensor:
        """(B, L, W) last hidden states of the text tower."""
        return self.text_encoder(
            input_ids=tokens["input_ids"].to(self.device), attention_mask=tokens["attention_mask"].to(self.device)
        ).last_hidden_state

    def project_text(self, states: torch.Tensor) -> torch.Tensor:
        """(B, L, W) states -> (B, E) projected [CLS] feature."""
        projected = self.text_projector(states[:, 0])
        if self.official_projector_stat_updates and self.training:
            self.text_projector(states)  # official: projects every token too (BatchNorm statistics only)
        return projected

    def encode_image(self, images: torch.Tensor, *, with_groups: bool = False
                     ) -> tuple[GroupViTOutput, torch.Tensor, torch.Tensor | None]:
        """Normalised images -> (encoder output, projected pooled feature (B, E), projected segment
        tokens (B, S, E) when `with_groups` else None)."""
        out = self.image_encoder(images)
        pooled = self.image_projector(out.pooled)
        groups = self.image_projector(out.feat) if with_groups else None
        if groups is None and self.official_projector_stat_updates and self.training:
            self.image_projector(out.feat)  # official: projects the segment tokens too (statistics only)
        return out, pooled, groups

    # ------------------------------------------------------------------ training
    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Records: "image", "caption"; with the entity loss "question" / "answer" (built by
        `ovseg_d2.data.image_text.entities`); with the mask loss "pair" = {"image", "entity"}."""
        images = self.normalize(self.stack_images(batched_inputs))
        texts = lambda key: self.tokenizer([r[key] for r in batched_inputs], self.context_length)  # noqa: E731
        question = answer = cross_images = cross_entity = None
        if self.entity_loss_weight > 0:
            question, answer = texts("question"), texts("answer")
        if self.mask_loss_weight > 0:
            pairs = [r["pair"] for r in batched_inputs]
            cross_images = self.normalize(self.stack_images(pairs))
            cross_entity = self.tokenizer(["A photo of " + p["entity"] for p in pairs], self.context_length)
        losses = self.compute_losses(images, texts("caption"), question, answer, cross_images, cross_entity)
        weights = {"matching": 1.0, "entity": self.entity_loss_weight, "mask": self.mask_loss_weight}
        return {f"loss_{name}": weights[name] * value for name, value in losses.items()}

    def compute_losses(
        self, images: torch.Tensor, caption: TokenBatch, question: TokenBatch | None = None,
        answer: TokenBatch | None = None, cross_images: torch.Tensor | None = None,
        cross_entity: TokenBatch | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted losses {"matching", "entity", "mask"} (the ones enabled) of normalised images
        and tokenised texts."""
        scale = self.scale
        text_x = self.project_text(self.encode_text(caption))
        with_groups = self.mask_loss_weight > 0
        image_out, image_x, image_groups = self.encode_image(images, with_groups=with_groups)
        losses = {"matching": symmetric_info_nce(image_x, text_x, scale)}
        if self.entity_loss_weight > 0:
            question_states = self.encode_text(question)
            if self.official_projector_stat_updates:
                self.project_text(question_states)  # official: the question is projected too (unused)
            answer_x = self.project_text(self.encode_text(answer))
            completed = self.entity_head(
                self.align_image(image_out.feat), self.align_text(question_states),
                question["attention_mask"].to(self.device),
            )
            losses["entity"] = symmetric_info_nce(self.entity_projector(completed), answer_x, scale)
        if self.mask_loss_weight > 0:
            with torch.no_grad():
                cross_out = self.momentum_encoder(cross_images)
                if self.official_projector_stat_updates:
                    self.image_projector(cross_out.pooled), self.image_projector(cross_out.feat)
                entity_x = self.project_text(self.encode_text(cross_entity))
                group_scores = (image_groups @ entity_x[:, :, None])[..., 0]
            losses["mask"] = self.mask_consistency(
                image_out.assignment.q, cross_out.assignment.q, cross_out.assignment.k, group_scores,
                grid=cross_out.grid, size=tuple(cross_images.shape[-2:]),
            )
        return losses

    # ------------------------------------------------------------------ momentum encoder (ModelStepHook)
    @torch.no_grad()
    def before_step(self) -> None:
        if self.mask_loss_weight > 0 and not bool(self.momentum_synced):
            self.momentum_encoder.load_state_dict(self.image_encoder.state_dict())
            self.momentum_synced.fill_(True)

    @torch.no_grad()
    def after_step(self, iteration: int) -> None:
        if self.mask_loss_weight > 0:
            online = dict(self.image_encoder.named_parameters())
            for name, param in self.momentum_encoder.named_parameters():
                param.mul_(self.momentum).add_(online[name].detach(), alpha=1 - self.momentum)

    # ------------------------------------------------------------------ segmentation
    def group_class_scores(self, groups: torch.Tensor, pooled: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """GroupViT's per-view class scores S (B, S, C) = M * P: P = softmax_c(s G T^T); M = the same
        softmax restricted to the view's top-k classes of softmax_c(s z T^T) (z: pooled feature)."""
        scale = self.scale
        logits = scale * F.normalize(groups, dim=-1) @ classes.T
        probs = logits.softmax(dim=-1)
        k = classes.shape[0] if self.top_k_classes is None else min(self.top_k_classes, classes.shape[0])
        image_probs = (scale * F.normalize(pooled, dim=-1) @ classes.T).softmax(dim=-1)
        top = image_probs.topk(k, dim=-1).indices
        keep = torch.zeros_like(image_probs).scatter_(1, top, 1.0).bool()
        restricted = logits.masked_fill(~keep[:, None, :], float("-inf")).softmax(dim=-1)
        return restricted * probs

    def group_index_map(self, out: GroupViTOutput, size: tuple[int, int]) -> torch.Tensor:
        """(B, H, W) group of every pixel: argmax of the soft assignment upsampled bilinearly."""
        soft = out.assignment.soft.unflatten(-1, out.grid)
        return F.interpolate(soft, size=size, mode="bilinear", align_corners=False).argmax(dim=1)

    def predict_views(self, views: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        """Views -> (B, N, h, w): foreground prompts get the score of the pixel's group; background
        prompts (when the policy has a threshold) get 1 where every class is below
        min(threshold, the view's best group score), else 0 (GroupViT's rule, per view)."""
        out, pooled, groups = self.encode_image(self.normalize(views), with_groups=True)
        classes = self.text_classifier(vocabulary).to(views.device)
        threshold = None if vocabulary.background_class is None else self.inference.threshold_for(self.test_dataset)
        background = [] if threshold is None else [
            p for p, c in enumerate(vocabulary.prompt_to_class) if c == vocabulary.background_class
        ]
        foreground = [p for p in range(len(vocabulary.entries)) if p not in background]
        scores = self.group_class_scores(groups, pooled, classes[foreground])  # (B, S, C)
        index = self.group_index_map(out, tuple(views.shape[-2:]))  # (B, H, W)
        pixel = torch.gather(scores.transpose(1, 2), 2, index.flatten(1)[:, None].expand(-1, scores.shape[2], -1))
        pixel = pixel.unflatten(-1, index.shape[1:])  # (B, C, H, W)
        result = pixel.new_zeros((views.shape[0], len(vocabulary.entries), *index.shape[1:]))
        result[:, foreground] = pixel
        if background:
            tau = torch.clamp(scores.flatten(1).amax(dim=1), max=threshold)
            result[:, background] = (pixel.amax(dim=1) < tau[:, None, None]).to(pixel.dtype)[:, None]
        return result

    def add_background(self, scores: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        """Background is decided per view inside `predict_views` (it needs the group scores)."""
        return scores
