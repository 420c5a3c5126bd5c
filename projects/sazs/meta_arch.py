"""The SAZS meta-architecture: pixel embeddings (DPT ViT or DRN) scored against two CLIP prompts per
episode ("others", class), trained with the segmentation NLL plus the boundary losses.

Scores: S[b, k] = <F[b, :, y, x], T[b, k]> with the raw (not normalised) CLIP text embedding, no
temperature; log-softmax over the two prompts. Training targets and losses live at the embedder's stride (1/8).

Evaluation modes (`eval_mode`):
- "model": the model's prediction (default, zero-shot);
- "fused": the prediction snapped to the best-agreeing eigen-segment (`fusion.snap_to_eigen_segment`;
  multi-class records: `fusion.relabel_eigen_segments`); no ground truth involved: zero-shot;
- "paper_oracle": the output also carries the eigen-segments as `candidates`, and the evaluator
  (`FewShotEvaluator(paper_oracle=True)`) keeps whichever of prediction / segments is best *against the
  ground truth*, as the official test does. Only for comparing with the published numbers.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from detectron2.modeling import META_ARCH_REGISTRY
from torch import nn

from ovseg_d2.clip import CLIPTextTower, build_clip, get_tokenizer, read_state_dict
from ovseg_d2.data.spectral import EigenSegmentCache
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import CLIPTextClassifier, OpenVocabSegmentor, Vocabulary

from .fusion import relabel_eigen_segments, snap_to_eigen_segment
from .loss import boundary_map, downsample_nearest, edge_attention_loss, edge_bce_loss, seg_nll_loss

__all__ = ["SAZS", "DRN_CITYSCAPES_MEAN", "DRN_CITYSCAPES_STD", "EVAL_MODES", "build_text_tower"]

# The official scripts normalise with DRN's Cityscapes statistics (datasets/*/info.json), x 255 here.
DRN_CITYSCAPES_MEAN = (0.29010095242892997 * 255, 0.32808144844279574 * 255, 0.28696394422942517 * 255)
DRN_CITYSCAPES_STD = (0.1829540508368939 * 255, 0.18656561047509476 * 255, 0.18447508988480435 * 255)
EVAL_MODES = ("model", "fused", "paper_oracle")
_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def build_text_tower(clip_model: str, weights: str | None = None) -> CLIPTextTower:
    """Frozen CLIP text tower of `clip_model` (open_clip config name or ours), with the text weights of
    a CLIP file (OpenAI .pt, open_clip, or a text-only state dict) when given."""
    tower = CLIPTextTower(build_clip(clip_model), get_tokenizer(clip_model))
    if weights is not None:
        state = {k: v for k, v in read_state_dict(weights).items() if k.startswith(_TEXT_PREFIXES)}
        missing, unexpected = tower.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{weights}: CLIP text weights do not fit {clip_model}: missing {missing}, unexpected {unexpected}")
    return tower.float().requires_grad_(False)


@META_ARCH_REGISTRY.register()
class SAZS(OpenVocabSegmentor):
    def __init__(
        self,
        *,
        pixel_embedder: nn.Module,
        text_tower: CLIPTextTower,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        background_prompt: str = "others",
        seg_weight: float = 1.0,
        edge_weight: float = 0.3,
        att_weight: float = 0.1,
        att_threshold: float = 0.8,
        edge_radius: int = 2,
        void_as_background: bool = False,
        eval_mode: str = "model",
        eigen_segments: EigenSegmentCache | None = None,
        fusion_min_iou: float = 0.5,
        pixel_mean: Sequence[float] = DRN_CITYSCAPES_MEAN,
        pixel_std: Sequence[float] = DRN_CITYSCAPES_STD,
        inference: InferencePolicy | None = None,
        vocabulary_overrides: dict | None = None,
    ) -> None:
        """`void_as_background=True` reproduces the official training targets (void pixels become
        "others" in the NLL; a bug: the void mask is taken before resizing). Default: void ignored."""
        super().__init__(
            pixel_mean=pixel_mean, pixel_std=pixel_std, train_class_names=train_class_names,
            test_class_names=test_class_names, vocabulary_overrides=vocabulary_overrides,
            inference=inference or InferencePolicy(resize="squash", size=(512, 512)),
        )
        if eval_mode not in EVAL_MODES:
            raise ValueError(f"eval_mode must be one of {EVAL_MODES}, got {eval_mode!r}")
        if eval_mode != "model" and eigen_segments is None:
            raise ValueError(f"eval_mode={eval_mode!r} needs eigen_segments (an EigenSegmentCache; build it with tools/build_eigen_cache.py)")
        self.pixel_embedder = pixel_embedder
        self.text_tower = text_tower.requires_grad_(False)
        self.text = CLIPTextClassifier(self.text_tower, ["{}"], normalize=False)
        self.background_prompt = background_prompt
        self.loss_weights = {"loss_seg": seg_weight, "loss_edge": edge_weight, "loss_edge_att": att_weight}
        self.att_threshold = att_threshold
        self.edge_radius = edge_radius
        self.void_as_background = void_as_background
        self.eval_mode = eval_mode
        self.eigen_segments = eigen_segments
        self.fusion_min_iou = fusion_min_iou

    # ------------------------------------------------------------------ vocabulary
    def episode_vocabulary(self, class_name: str) -> Vocabulary:
        return Vocabulary.from_entries([self.background_prompt, class_name], source="SAZS episode")

    def record_vocabulary(self, record: dict[str, Any]) -> Vocabulary:
        """Few-shot records: ("others", the episode's class); other records: the test vocabulary."""
        if "class_id" not in record:
            return self.test_vocabulary
        return self.episode_vocabulary(self.test_vocabulary.entries[int(record["class_id"])])

    def episode_text(self, class_names: Sequence[str]) -> torch.Tensor:
        """(B, 2, E) raw text embeddings of ("others", name) for every sample."""
        names = list(dict.fromkeys(class_names))
        table = self.text(Vocabulary.from_entries([self.background_prompt, *names], source="SAZS batch"))
        table = table.to(self.device)
        index = torch.tensor([names.index(n) + 1 for n in class_names], device=self.device)
        return torch.stack([table[0].expand(len(class_names), -1), table[index]], dim=1)

    # ------------------------------------------------------------------ forward pieces
    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, H, W) RGB 0-255 -> (features (B, C, H/8, W/8), edge logits (B, 1, H/8, W/8))."""
        return self.pixel_embedder(self.normalize(images))

    @staticmethod
    def log_probs(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) x (B, 2, C) -> (B, 2, h, w) log-softmax of the raw dot products."""
        return torch.einsum("bchw,bkc->bkhw", features, text).log_softmax(dim=1)

    def predict_views(self, views: torch.Tensor, vocabulary: Vocabulary) -> torch.Tensor:
        """Episode vocabulary ("others", class): the official log-probs. Any other vocabulary (semantic
        segmentation, the demo): per class, the log-probability of the class in its own two-prompt
        episode, log p(c | {others, c}); the argmax over classes is the most confident episode."""
        features, _ = self.embed(views)
        text = self.text(vocabulary).to(features)
        if len(vocabulary.entries) == 2 and vocabulary.entries[0] == self.background_prompt:
            return self.log_probs(features, text.unsqueeze(0).expand(features.shape[0], -1, -1))
        background = self.text(Vocabulary.from_entries([self.background_prompt], source="SAZS"))[0].to(features)
        scores = torch.einsum("bchw,kc->bkhw", features, text)
        others = torch.einsum("bchw,c->bhw", features, background).unsqueeze(1)
        return scores - torch.logaddexp(scores, others)

    # ------------------------------------------------------------------ training
    def training_targets(self, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, W) binary masks (1 class, 0 others, 255 void) -> seg and edge targets at the feature
        stride (1/8: top-left pixel of every cell).
        Edges: within `edge_radius` of a class / others / void boundary (computed at full size)."""
        edges = np.stack([boundary_map(t, (0, 1), self.edge_radius) for t in targets.cpu().numpy()])
        edges = torch.from_numpy(edges).to(targets.device).unsqueeze(1).float()
        stride = self.pixel_embedder.stride
        seg = downsample_nearest(targets, stride)
        if self.void_as_background:
            seg = torch.where(seg == self.ignore_value, torch.zeros_like(seg), seg)
        return seg, downsample_nearest(edges, stride)

    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        images = self.stack_images(batched_inputs)
        stride = self.pixel_embedder.stride
        if images.shape[-1] % stride or images.shape[-2] % stride:
            raise ValueError(f"SAZS training crops must be multiples of {stride}, got {tuple(images.shape[-2:])}")
        names = [self.train_vocabulary.entries[int(x["class_id"])] for x in batched_inputs]
        features, edge_logits = self.embed(images)
        log_probs = self.log_probs(features, self.episode_text(names))
        seg, edge = self.training_targets(self.stack_targets(batched_inputs))
        terms = {
            "loss_seg": seg_nll_loss(log_probs, seg, self.ignore_value),
            "loss_edge": edge_bce_loss(edge_logits, edge),
            "loss_edge_att": edge_attention_loss(log_probs, seg, edge_logits, self.att_threshold),
        }
        return {k: v * self.loss_weights[k] for k, v in terms.items()}

    # ------------------------------------------------------------------ evaluation with eigen-segments
    def forward(self, batched_inputs: list[dict[str, Any]]) -> dict[str, torch.Tensor] | list[dict]:
        outputs = super().forward(batched_inputs)
        if self.training or self.eval_mode == "model":
            return outputs
        for record, output in zip(batched_inputs, outputs):
            scores = output["sem_seg"]
            segments = self.eigen_segments.segments(record["file_name"], tuple(scores.shape[-2:])).to(scores.device)
            if self.eval_mode == "fused" and "class_id" in record:
                output["sem_seg"] = snap_to_eigen_segment(scores, segments, self.fusion_min_iou)
            elif self.eval_mode == "fused":
                output["sem_seg"] = relabel_eigen_segments(scores, segments, self.fusion_min_iou)
            else:
                output["candidates"] = segments
        return outputs
