"""TCL (Cha et al., CVPR 2023): text-grounded masks learned from image-caption pairs only.

A frozen CLIP, a trainable masker on its second-to-last block (a copy of the last block with
self-only attention, a gated x4 upsampling decoder and a copy of CLIP's `ln_post` + `proj`) and
`Sim2Mask` turn (image, text) into a soft mask per text at 1/4 resolution. Training: image-level
(masked image -> CLIP) and feature-level (mask-pooled dense embedding) contrastive losses with area
priors and TV smoothing (spec tcl.md 3.2). Evaluation: masks per crop, PAMR at the mask resolution,
mixed with the training-free prior of the frozen last block (self-only attention), upsampled;
background is the policy's constant threshold channel (tcl.md 4.4).
"""

from __future__ import annotations

import copy
import math
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
    self_attention_only_block,
    tokens_to_map,
)
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.inference.pamr import PAMR
from ovseg_d2.modeling import CLIPTextClassifier, OpenVocabSegmentor, Vocabulary, VocabularyOverride
from ovseg_d2.modeling.contrastive import all_gather_with_grad, symmetric_info_nce

from .losses import masked_average_pool, rank, text_grounded_info_nce
from .masker import ChannelLayerNorm, GatedUpsampleDecoder, Sim2Mask, gumbel_sigmoid_hard, total_variation

# Official loss weights (configs/tcl.yml): area 0.4 (priors 0.4 / 0), TCL_f and TCL_v 0.1, TV 1.0.
DEFAULT_LOSS_WEIGHTS = {"area": 0.4, "tcl_feature": 0.1, "tcl_image": 0.1, "tv": 1.0}
_INIT_LOGIT_SCALE = math.log(1 / 0.07)
_MAX_LOGIT_SCALE = 100.0


@META_ARCH_REGISTRY.register()
class TCL(OpenVocabSegmentor):
    """TCL on open_clip.

    Args:
        clip_model / clip_weights: `ovseg_d2.clip.build_clip` (OpenAI ViT-B/16: "ViT-B-16-quickgelu").
        templates: template set of the class embeddings ("tcl_custom": the 9 official templates;
            "identity" for free-form demo queries).
        pamr / pamr_iterations / pamr_dilations: refine each crop's masks at the mask resolution.
        prior_weight: weight of the frozen-CLIP prior sigmoid((cos - 0.25) * 10) in the final mask
            (official kp_w 0.3; 0 turns it off).
        pad_divisor: crops are zero-padded (centred) to a multiple of this (the patch size).
        loss_weights: {"area", "tcl_feature", "tcl_image", "tv"}; area_priors: (positive, negative).
        freeze_masker_block: build with the masker block frozen (the official decoder-only first
            stage; a `TrainableSchedule` hook unfreezes it, official: at iteration 30k).
        deterministic_hard_mask: TCL_v's hard mask = 1[soft > 0.5] (no Gumbel noise, no gradient to
            the mask) instead of the straight-through Gumbel-sigmoid (official training).
        gumbel_tau: temperature of the Gumbel-sigmoid.
        official_multi_gpu_text_side: reproduce the official TCL_f text side with several processes
            (each caption scored against other ranks' images pooled with the wrong caption's mask;
            see `text_grounded_info_nce`). Off: the loss of the global batch, as in one process.
    """

    def __init__(
        self,
        *,
        clip_model: str,
        clip_weights: str | None = None,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        templates: str = "tcl_custom",
        decoder_stages: int = 2,
        pamr: bool = True,
        pamr_iterations: int = 10,
        pamr_dilations: Sequence[int] = (1, 2, 4, 8, 12, 24),
        prior_weight: float = 0.3,
        pad_divisor: int = 16,
        loss_weights: Mapping[str, float] | None = None,
        area_priors: tuple[float, float] = (0.4, 0.0),
        freeze_masker_block: bool = False,
        deterministic_hard_mask: bool = False,
        gumbel_tau: float = 1.0,
        official_multi_gpu_text_side: bool = False,
        inference: InferencePolicy | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
    ) -> None:
        mean, std = clip_pixel_stats("imagenet")  # the official code normalises with ImageNet's statistics
        super().__init__(
            pixel_mean=mean,
            pixel_std=std,
            train_class_names=train_class_names,
            test_class_names=test_class_names,
            inference=inference,
            vocabulary_overrides=vocabulary_overrides,
        )
        weights = dict(DEFAULT_LOSS_WEIGHTS, **(loss_weights or {}))
        unknown = sorted(set(weights) - set(DEFAULT_LOSS_WEIGHTS))
        if unknown:
            raise KeyError(f"TCL.loss_weights: unknown {unknown}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}")
        if not 0.0 <= prior_weight <= 1.0:
            raise ValueError(f"TCL.prior_weight must be in [0, 1], got {prior_weight}")
        clip = build_clip(clip_model, clip_weights)
        clip.requires_grad_(False)
        self.clip_image = CLIPVisionTower(clip.visual, pos_interpolation="bicubic")
        self.clip_text = CLIPTextTower(clip, get_tokenizer(clip_model))
        self.keep_in_eval_mode("clip_image", "clip_text")  # frozen CLIP: deterministic in training too
        self.text_classifier = CLIPTextClassifier(self.clip_text, templates, synonyms="first")
        self.templates = self.text_classifier.templates
        visual = clip.visual
        if self.clip_image.num_blocks < 2 or visual.proj is None:
            raise ValueError(f"{clip_model}: TCL needs a projected CLIP ViT with at least 2 blocks")
        width = visual.ln_post.normalized_shape[0]

        # The masker starts as copies of CLIP's last block and head (spec tcl.md 6.2).
        self.masker_block = copy.deepcopy(self.clip_image.blocks[-1]).requires_grad_(not freeze_masker_block)
        self.decoder = GatedUpsampleDecoder(width, decoder_stages)
        self.proj_ln = ChannelLayerNorm(width)
        self.proj_ln.load_state_dict(visual.ln_post.state_dict())
        self.proj = nn.Parameter(visual.proj.detach().clone())
        self.sim2mask = Sim2Mask()
        self.logit_scale_feature = nn.Parameter(torch.tensor(_INIT_LOGIT_SCALE))
        self.logit_scale_image = nn.Parameter(torch.tensor(_INIT_LOGIT_SCALE))

        self.pamr = PAMR(pamr_iterations, pamr_dilations) if pamr else None
        self.prior_weight = float(prior_weight)
        self.pad_divisor = int(pad_divisor)
        self.loss_weights = weights
        self.area_priors = tuple(float(p) for p in area_priors)
        self.deterministic_hard_mask = deterministic_hard_mask
        self.gumbel_tau = float(gumbel_tau)
        self.official_multi_gpu_text_side = official_multi_gpu_text_side

    # ------------------------------------------------------------------ shared forward
    def clip_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Normalised (B, 3, H, W) -> (masker input = output of the second-to-last block, output of
        the frozen last block with self-only attention, grid); tokens batch-first, class token first."""
        tower = self.clip_image
        x, _ = tower.run_blocks(tower.embed(images), stop=tower.num_blocks - 1)
        last = self_attention_only_block(tower.blocks[-1], x)
        return x, last, tower.grid_for(images.shape[-2:])

    def dense_embedding(self, tap: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The masker: (B, L, W) tap tokens -> (B, E, 4h, 4w) dense embedding V^s (not normalised)."""
        x = tokens_to_map(self_attention_only_block(self.masker_block, tap), grid)
        x = self.proj_ln(self.decoder(x))
        return torch.einsum("bwhx,we->behx", x, self.proj)

    @staticmethod
    def cosine(dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, E, H, W) x (N, E) -> (B, N, H, W) cosine similarities (eps 1e-6 as the official code)."""
        return torch.einsum("behw,ne->bnhw", F.normalize(dense, dim=1, eps=1e-6), F.normalize(text, dim=-1, eps=1e-6))

    # ------------------------------------------------------------------ evaluation
    def masks(self, images: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Normalised (B, 3, H, W), H and W multiples of the patch size, and (N, E) text embeddings
        -> (B, N, H, W) masks in [0, 1] (official `generate_masks` without padding)."""
        tap, last, grid = self.clip_features(images)
        masks = self.sim2mask(self.cosine(self.dense_embedding(tap, grid), text)).sigmoid()
        if self.pamr is not None:
            guide = F.interpolate(images, size=masks.shape[-2:], mode="bilinear", align_corners=True)
            masks = self.pamr(guide, masks)
        if self.prior_weight > 0:
            prior = self.cosine(tokens_to_map(self.clip_image.project(last), grid), text)
            prior = F.interpolate(((prior - 0.25) * 10).sigmoid(), size=masks.shape[-2:], mode="bilinear", align_corners=False)
            masks = self.prior_weight * prior + (1 - self.prior_weight) * masks
        return F.interpolate(masks, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def predict_views(self, views: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        text = self.text_classifier(vocabulary).to(views.device)
        h, w = views.shape[-2:]
        pad_h, pad_w = -h % self.pad_divisor, -w % self.pad_divisor
        top, left = pad_h // 2, pad_w // 2
        images = F.pad(self.normalize(views), (left, pad_w - left, top, pad_h - top))
        return self.masks(images, text)[..., top : top + h, left : left + w]

    # ------------------------------------------------------------------ training
    def sample_uniform(self, logits: torch.Tensor) -> torch.Tensor:
        """U[0, 1) noise of the Gumbel-sigmoid (a method, so tests can inject recorded noise)."""
        return torch.rand_like(logits)

    def hard_mask(self, logits: torch.Tensor) -> torch.Tensor:
        if self.deterministic_hard_mask:
            return (logits.sigmoid() > 0.5).to(logits.dtype)
        return gumbel_sigmoid_hard(logits, self.sample_uniform(logits), self.gumbel_tau)

    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        missing = [i for i, r in enumerate(batched_inputs) if "caption" not in r]
        if missing:
            raise KeyError(f"TCL trains on image-caption records; records {missing[:8]} have no 'caption'")
        images = self.normalize(self.stack_images(batched_inputs))
        with torch.no_grad():
            text = self.clip_text.encode_tokens(self.clip_text.tokenize([r["caption"] for r in batched_inputs]))
            tap, _, grid = self.clip_features(images)
        dense = self.dense_embedding(tap, grid)
        all_text = all_gather_with_grad(F.normalize(text, dim=-1, eps=1e-6))
        logits = self.sim2mask(self.cosine(dense, all_text))  # (B, N, H', W'), N = B x world
        soft = logits.sigmoid()
        b, n = soft.shape[:2]
        if n < 2:
            raise ValueError("TCL's contrastive losses need at least 2 image-caption pairs per global batch")
        rows = torch.arange(b, device=soft.device)
        positives = rows + b * rank()
        is_negative = torch.ones(b, n, dtype=torch.bool, device=soft.device)
        is_negative[rows, positives] = False

        w = self.loss_weights
        pos_prior, neg_prior = self.area_priors
        losses = {
            "loss_area": w["area"] * (soft[rows, positives].mean() - pos_prior).abs(),
            "loss_neg_area": w["area"] * (soft[is_negative].mean() - neg_prior).abs(),
            "loss_tcl_feature": w["tcl_feature"]
            * text_grounded_info_nce(
                masked_average_pool(dense, soft),
                text,
                self.logit_scale_feature.exp().clamp(max=_MAX_LOGIT_SCALE),
                self.official_multi_gpu_text_side,
            ),
            "loss_tv_image": w["tv"] * total_variation(dense),
            "loss_tv_mask": w["tv"] * total_variation(soft),
        }
        hard = self.hard_mask(logits[rows, positives][:, None])
        masked = images * F.interpolate(hard, size=images.shape[-2:], mode="nearest")
        losses["loss_tcl_image"] = w["tcl_image"] * symmetric_info_nce(
            self.clip_image.encode_image(masked), text, self.logit_scale_image.exp().clamp(max=_MAX_LOGIT_SCALE)
        )
        return losses
