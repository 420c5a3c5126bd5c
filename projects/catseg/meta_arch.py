"""CAT-Seg meta-architecture (CVPR 2024 version of cvlab-kaist/CAT-Seg) on the shared CLIP core.

Data flow: CLIP-normalised image -> pad to ``size_divisibility`` -> resize to the CLIP resolution ->
dense CLIP vision tower (value-path last block with class-token residual, ln_post + proj on every
token) with taps after two intermediate blocks -> transposed-conv upsampling of the taps (decoder
guidance) -> cosine cost volume against the text embeddings of the vocabulary (one template, first
synonym, text tower fine-tuned) -> :class:`CATSegAggregator` -> per-class logits at 1/4 of the CLIP
input. Training: per-class BCE (see :mod:`.loss`). Testing: sigmoid, the base class's test pipeline
(official: sliding window + global view).

The pre-CVPR version (official tree before the CVPR release; what mmsegmentation's
``projects/CAT-Seg`` ports) is the same model with options: a ``feature_backbone`` (Detectron2 ResNet or
Swin, ImageNet-normalised input resized to ``feature_backbone_resolution``) gives the appearance guidance
(its res4) and the decoder guidance (res3, res2) instead of the CLIP taps; the last CLIP block adds each
token's own residual (``last_block_residual="token"``); the text side averages 80 templates and all
synonyms of a frozen text tower (``templates="imagenet80"``, ``text_recipe``); ``clip_finetune=
"visual_attention"`` trains the visual tower's attention and positional table; no class padding /
top-k (``aggregator.pad_len=0``). See ``configs/catseg/catseg_fb_*.py`` and the package README.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn

from ovseg_d2.checkpoint import get_converter
from ovseg_d2.clip import (
    CATSEG_ATTENTION_RULES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    CLIPTextTower,
    CLIPVisionTower,
    apply_trainable_rules,
    build_clip,
    get_tokenizer,
    split_attention_projections,
    value_path_block,
)
from ovseg_d2.inference import InferencePolicy
from ovseg_d2.modeling import CLIPTextClassifier, OpenVocabSegmentor, Vocabulary, VocabularyOverride

from . import converter_feature_backbone  # noqa: F401  (registers the pre-CVPR converters)
from .aggregator import CATSegAggregator
from .converter import OFFICIAL_PREFIX
from .loss import catseg_bce_loss, catseg_cross_entropy_loss

__all__ = ["CATSeg", "CLIP_PRESETS"]

# Official CLIP_PRETRAINED settings: open_clip config, CLIP input resolution, tapped blocks (0-based).
CLIP_PRESETS: dict[str, dict[str, Any]] = {
    "ViT-B/16": dict(clip_model="ViT-B-16-quickgelu", clip_resolution=(384, 384), tap_blocks=(3, 7)),
    "ViT-L/14@336": dict(clip_model="ViT-L-14-336-quickgelu", clip_resolution=(336, 336), tap_blocks=(7, 15)),
}
# Other spellings of a preset: the official yaml writes CLIP_PRETRAINED: "ViT-L/14@336px" (OpenAI's name).
CLIP_PRESET_ALIASES: dict[str, str] = {"ViT-L/14@336px": "ViT-L/14@336"}

_FINETUNE_MODES = ("attention", "visual_attention", "full", "none")
# Pre-CVPR CLIP_FINETUNE "attention": visual-tower names containing "attn" or "position" (every attention
# projection and bias, and the positional table); the text tower stays frozen.
VISUAL_ATTENTION_RULES: tuple[str, ...] = (r"^clip_image\..*(attn|position)",)
_LOSSES = {"bce": catseg_bce_loss, "cross_entropy": catseg_cross_entropy_loss}
_ACTIVATIONS = ("sigmoid", "none")


@META_ARCH_REGISTRY.register()
class CATSeg(OpenVocabSegmentor):
    """CAT-Seg: cost aggregation over a CLIP cost volume.

    Args:
        train_class_names / test_class_names: vocabularies (entries may hold ", "-separated synonyms;
            only the first synonym is encoded, as officially).
        clip_model: open_clip config name or one of ``ovseg_d2/clip/model_configs`` (tiny test models).
        clip_weights: optional CLIP weights (OpenAI ``.pt`` or open_clip checkpoint). A converted
            CAT-Seg checkpoint contains CLIP too, so this is only needed to train from CLIP.
        clip_resolution: the size every view is resized to before CLIP (384 for ViT-B/16, 336 for ViT-L/14@336).
        tap_blocks: the two vision blocks whose outputs feed the decoder guidance.
        tap_upsample_dims: output channels of the two transposed convs applied to the taps (x2, x4).
        clip_finetune: "attention" (official: q and v projection weights of both towers),
            "visual_attention" (pre-CVPR: every attention parameter of the visual tower and its positional
            table; text tower frozen), "full" or "none".
        templates: template set name (``ovseg_d2.clip.get_templates``) or a list of templates; with P
            templates the cost volume has P channels per class.
        text_recipe: keyword arguments of :class:`CLIPTextClassifier` (``synonyms``, ``template_reduce``);
            official CVPR: first synonym; pre-CVPR: ``dict(synonyms="mean", template_reduce="normalize_then_mean")``
            (each prompt normalised, synonyms averaged per template, renormalised).
        last_block_residual: "cls" (CVPR) or "token" (pre-CVPR) residual of the dense last CLIP block.
        feature_backbone: a Detectron2 ``Backbone`` (``forward(images) -> {name: map}``, ``output_shape()``)
            giving the guidance (pre-CVPR version); None = the CLIP taps (CVPR version).
        guidance_features: the backbone outputs used as appearance guidance, then decoder guidance of
            stage 1 and 2 (1/16, 1/8, 1/4 of the backbone input).
        feature_backbone_mean / feature_backbone_std: its input normalisation (ImageNet, 0-255 units).
        feature_backbone_resolution: its input is resized to this (official: 384x384).
        freeze_feature_backbone: pre-CVPR Swin-B setting (BACKBONE_MULTIPLIER 0).
        loss: "bce" (official) or "cross_entropy" (mmseg port: softmax CE averaged over non-ignored pixels).
        score_activation: what the views return: "sigmoid" probabilities (official) or "none" (raw logits,
            merged in logit space as mmseg's slide inference does).
        train_pooling_size / test_pooling_size: class-aggregation pooling (official 2x2 / 1x1).
        sliding_window: the official test procedure (TEST.SLIDING_WINDOW), run by the base class as the
            `InferencePolicy` squash to ``sliding_resize`` -> ``window`` crops with ``stride`` + one global
            view (``global_view``), one batched forward; False = the plain path (the whole image, padded
            to ``size_divisibility`` and squashed to the CLIP resolution, as one view).
        inference: an explicit test procedure (e.g. the mmseg port's slide 384/384 on the image its test
            mapper resized), replacing the one the sliding-window switches describe.
        aggregator: keyword arguments of :class:`CATSegAggregator` other than the CLIP-derived widths
            (pre-CVPR: ``pad_len=0``; the mmseg port's bug switches, see :mod:`.aggregator`).
    """

    def __init__(
        self,
        *,
        train_class_names: Sequence[str],
        test_class_names: Sequence[str] | None = None,
        clip_model: str = "ViT-B-16-quickgelu",
        clip_weights: str | None = None,
        clip_resolution: Sequence[int] = (384, 384),
        tap_blocks: Sequence[int] = (3, 7),
        tap_upsample_dims: Sequence[int] = (256, 128),
        clip_finetune: str = "attention",
        templates: str | Sequence[str] = "catseg",
        text_recipe: Mapping[str, Any] | None = None,
        last_block_residual: str = "cls",
        feature_backbone: nn.Module | None = None,
        guidance_features: Sequence[str] = ("res4", "res3", "res2"),
        feature_backbone_mean: Sequence[float] = IMAGENET_MEAN,
        feature_backbone_std: Sequence[float] = IMAGENET_STD,
        feature_backbone_resolution: Sequence[int] | None = (384, 384),
        freeze_feature_backbone: bool = False,
        loss: str = "bce",
        score_activation: str = "sigmoid",
        pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        pixel_std: Sequence[float] = OPENAI_CLIP_STD,
        size_divisibility: int = 32,
        ignore_value: int = 255,
        train_pooling_size: Sequence[int] | None = (2, 2),
        test_pooling_size: Sequence[int] | None = (1, 1),
        sliding_window: bool = True,
        window: int = 384,
        stride: int = 256,
        sliding_resize: Sequence[int] = (640, 640),
        global_view: bool = True,
        inference: InferencePolicy | None = None,
        aggregator: dict[str, Any] | None = None,
        vocabulary_overrides: Mapping[str, VocabularyOverride] | None = None,
    ) -> None:
        if inference is None:
            inference = (
                InferencePolicy(
                    resize="squash", size=sliding_resize, window=window, stride=stride, global_view=global_view
                )
                if sliding_window
                else InferencePolicy()
            )
        super().__init__(
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            train_class_names=train_class_names,
            test_class_names=test_class_names,
            size_divisibility=size_divisibility,
            ignore_value=ignore_value,
            vocabulary_overrides=vocabulary_overrides,
            inference=inference,
        )
        if clip_finetune not in _FINETUNE_MODES:
            raise ValueError(f"clip_finetune must be one of {_FINETUNE_MODES}, got {clip_finetune!r}")
        if loss not in _LOSSES:
            raise ValueError(f"loss must be one of {sorted(_LOSSES)}, got {loss!r}")
        if score_activation not in _ACTIVATIONS:
            raise ValueError(f"score_activation must be one of {_ACTIVATIONS}, got {score_activation!r}")
        if feature_backbone is None and (len(tap_blocks) != 2 or len(tap_upsample_dims) != 2):
            raise ValueError("CAT-Seg taps exactly two vision blocks")

        clip = build_clip(clip_model, clip_weights)
        split_attention_projections(clip)  # separate q/k/v Parameters: q/v-only fine-tuning as officially
        self.clip_image = CLIPVisionTower(clip.visual, pos_interpolation="bicubic")
        self.clip_text = CLIPTextTower(clip, get_tokenizer(clip_model))
        # `clip.logit_scale` is not used by CAT-Seg and not kept.
        recipe = dict(text_recipe or {"synonyms": "first"})
        self.text_classifier = CLIPTextClassifier(self.clip_text, templates, keep_templates=True, **recipe)
        self.templates = self.text_classifier.templates
        self.last_block = value_path_block(residual=last_block_residual)

        width = clip.visual.conv1.out_channels
        embed_dim = clip.visual.output_dim
        self.clip_resolution = tuple(clip_resolution)
        self.feature_backbone = feature_backbone
        if feature_backbone is None:
            self._build_taps(len(clip.visual.transformer.resblocks), width, tap_blocks, tap_upsample_dims)
            appearance_dim, decoder_guidance_dims = embed_dim, tuple(tap_upsample_dims)
        else:
            appearance_dim, decoder_guidance_dims = self._attach_feature_backbone(
                guidance_features, feature_backbone_mean, feature_backbone_std, feature_backbone_resolution
            )
            if freeze_feature_backbone:
                feature_backbone.requires_grad_(False)  # (not the reverse: keep a ResNet's own freeze_at)
        agg_kwargs = dict(aggregator or {})
        agg_kwargs.setdefault("pooling_size", train_pooling_size)
        self.aggregator = CATSegAggregator(
            text_dim=embed_dim,
            appearance_dim=appearance_dim,
            prompt_channels=len(self.templates),
            decoder_guidance_dims=decoder_guidance_dims,
            **agg_kwargs,
        )
        self.loss_fn = _LOSSES[loss]
        self.score_activation = score_activation
        self.train_pooling_size = tuple(train_pooling_size) if train_pooling_size is not None else None
        self.test_pooling_size = tuple(test_pooling_size) if test_pooling_size is not None else None

        self.clip_finetune = clip_finetune
        self._set_trainable(clip_finetune)

        self._register_load_state_dict_pre_hook(_convert_official_state_dict)

    # ------------------------------------------------------------------ setup
    def _build_taps(
        self, num_blocks: int, width: int, tap_blocks: Sequence[int], tap_upsample_dims: Sequence[int]
    ) -> None:
        """CVPR guidance: transposed convs (x2, x4) on the outputs of two CLIP vision blocks."""
        if not all(0 <= i < num_blocks - 1 for i in tap_blocks):
            raise ValueError(
                f"tap_blocks {tuple(tap_blocks)} must be ordinary blocks in [0, {num_blocks - 2}]: the last of the "
                f"{num_blocks} vision blocks is the dense value-path block (the official code cannot tap it either)"
            )
        self.tap_blocks = tuple(tap_blocks)
        self.tap_upsample = nn.ModuleList(
            [
                nn.ConvTranspose2d(width, tap_upsample_dims[0], kernel_size=2, stride=2),
                nn.ConvTranspose2d(width, tap_upsample_dims[1], kernel_size=4, stride=4),
            ]
        )

    def _attach_feature_backbone(
        self,
        guidance_features: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        resolution: Sequence[int] | None,
    ) -> tuple[int, tuple[int, ...]]:
        """Pre-CVPR guidance from ``self.feature_backbone``; returns the appearance and decoder guidance widths."""
        shapes = self.feature_backbone.output_shape()
        missing = [name for name in guidance_features if name not in shapes]
        if len(guidance_features) != 3 or missing:
            raise ValueError(
                f"guidance_features must name 3 outputs of the feature backbone (appearance, decoder 1, decoder 2); "
                f"got {tuple(guidance_features)}, the backbone has {sorted(shapes)}"
            )
        self.guidance_features = tuple(guidance_features)
        self.feature_backbone_resolution = tuple(resolution) if resolution is not None else None
        self.register_buffer("backbone_pixel_mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("backbone_pixel_std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        channels = [shapes[name].channels for name in guidance_features]
        return channels[0], tuple(channels[1:])

    def _set_trainable(self, mode: str) -> None:
        towers = nn.ModuleDict({"clip_image": self.clip_image, "clip_text": self.clip_text})
        if mode == "attention":
            apply_trainable_rules(towers, CATSEG_ATTENTION_RULES)
        elif mode == "visual_attention":
            apply_trainable_rules(towers, VISUAL_ATTENTION_RULES)
        else:
            for p in towers.parameters():
                p.requires_grad_(mode == "full")

    @property
    def sliding_window(self) -> bool:
        return self.inference.sliding

    @property
    def window(self) -> int | tuple[int, int] | None:
        return self.inference.window

    @property
    def stride(self) -> int | tuple[int, int] | None:
        return self.inference.stride

    @property
    def sliding_resize(self) -> tuple[int, int] | None:
        return self.inference.size

    @classmethod
    def preset(cls, name: str) -> dict[str, Any]:
        """Keyword arguments of an official CLIP setting: "ViT-B/16" or "ViT-L/14@336" (also "ViT-L/14@336px")."""
        name = CLIP_PRESET_ALIASES.get(name, name)
        if name not in CLIP_PRESETS:
            known = sorted(CLIP_PRESETS) + sorted(CLIP_PRESET_ALIASES)
            raise KeyError(f"unknown CAT-Seg CLIP preset {name!r}; known: {', '.join(known)}")
        return dict(CLIP_PRESETS[name])

    def train(self, mode: bool = True) -> "CATSeg":
        if mode:
            self.text_classifier.clear_cache()
        return super().train(mode)

    # ------------------------------------------------------------------ text
    def text_embeddings(self, class_names: Sequence[str]) -> Tensor:
        """``(N, P, E)`` L2-normalised class embeddings, one per template. Cached per vocabulary and
        weights whenever no gradient is needed (eval mode, or a frozen text tower: pre-CVPR, computed
        once per vocabulary); computed with gradients in training when the text tower is trained."""
        vocabulary = Vocabulary.from_entries(class_names)
        if self.training:
            return self.text_classifier(vocabulary)
        with torch.no_grad():
            return self.text_classifier(vocabulary)

    # ------------------------------------------------------------------ image
    def clip_features(self, clip_images: Tensor) -> tuple[Tensor, list[Tensor]]:
        """CLIP-resolution normalised images -> dense embedding ``(B, E, h, w)`` and the upsampled taps
        (none with a feature backbone)."""
        last = self.clip_image.num_blocks - 1
        taps = self.tap_blocks if self.feature_backbone is None else ()
        feats = self.clip_image(clip_images, taps=taps, block_overrides={last: self.last_block})
        if self.feature_backbone is None:
            return feats.dense(), [up(feats.tap_map(i)) for up, i in zip(self.tap_upsample, self.tap_blocks)]
        return feats.dense(), []

    def backbone_features(self, images: Tensor) -> list[Tensor]:
        """(B, 3, H, W) 0-255 -> the ``guidance_features`` maps of the feature backbone: ImageNet-normalised,
        zero-padded to ``size_divisibility`` and resized to ``feature_backbone_resolution`` (official)."""
        x = self._pad((images - self.backbone_pixel_mean) / self.backbone_pixel_std)
        size = self.feature_backbone_resolution
        if size is not None and tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        feats = self.feature_backbone(x)
        return [feats[name] for name in self.guidance_features]

    def _pad(self, x: Tensor) -> Tensor:
        if self.size_divisibility > 1:
            h, w = x.shape[-2:]
            d = self.size_divisibility
            ph, pw = (-h) % d, (-w) % d
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), value=0.0)
        return x

    def to_clip_input(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) 0-255 -> normalised, zero-padded to ``size_divisibility``, resized to the CLIP resolution."""
        x = self._pad(self.normalize(images))
        if tuple(x.shape[-2:]) != self.clip_resolution:
            x = F.interpolate(x, size=self.clip_resolution, mode="bilinear", align_corners=False)
        return x

    def predict_logits(self, images: Tensor, class_names: Sequence[str], *, return_info: bool = False):
        """(B, 3, H, W) 0-255 images -> logits ``(B, N, h, w)`` at 1/4 of the CLIP resolution."""
        self.aggregator.set_pooling_size(self.train_pooling_size if self.training else self.test_pooling_size)
        text = self.text_embeddings(class_names)
        dense, guidance = self.clip_features(self.to_clip_input(images))
        appearance = None
        if self.feature_backbone is not None:
            appearance, *guidance = self.backbone_features(images)
        return self.aggregator(dense, text, guidance, appearance=appearance, return_info=return_info)

    # ------------------------------------------------------------------ train / eval
    def losses(self, batched_inputs: list[dict[str, Any]]) -> dict[str, Tensor]:
        images = self.stack_images(batched_inputs)
        targets = self.stack_targets(batched_inputs)
        logits = self.predict_logits(images, self.train_class_names)
        return {"loss_sem_seg": self.loss_fn(logits, targets, self.ignore_value)}

    def predict_views(self, views: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Sigmoid probabilities (or raw logits, ``score_activation="none"``) of the views, in float32
        (views are merged in float32 under autocast).

        As officially (and in mmseg's slide inference), the sliding-window path resizes the logits to the
        view (384) before the activation, while the plain path takes the sigmoid of the 1/4-resolution
        logits, which the base class then resizes straight to the output size (the padding is not cropped).
        """
        logits = self.predict_logits(views, vocabulary.entries).float()
        if self.sliding_window:
            logits = F.interpolate(logits, size=views.shape[-2:], mode="bilinear", align_corners=False)
        return logits.sigmoid() if self.score_activation == "sigmoid" else logits


def _convert_official_state_dict(state_dict: dict, prefix: str, *args: Any) -> None:
    """load_state_dict pre-hook: an official CAT-Seg state dict (e.g. `train.init_checkpoint=model_base.pth`
    given to detectron2's checkpointer) is converted in place: by "catseg" (CVPR release),
    "catseg_d2_legacy" (pre-CVPR release: also has `backbone.*`) or "catseg_mmseg" (mmseg port: `neck.*`)."""
    keys = [k for k in state_dict if k.startswith(prefix)]
    names = [k[len(prefix) :] for k in keys]
    if any(n.startswith(("neck.", "decode_head.")) for n in names):
        method, official_prefixes = "catseg_mmseg", ("backbone.", "neck.", "decode_head.")
    elif any(n.startswith(OFFICIAL_PREFIX) for n in names):
        legacy = any(n.startswith("backbone.") for n in names)
        method = "catseg_d2_legacy" if legacy else "catseg"
        official_prefixes = (OFFICIAL_PREFIX, "backbone.") if legacy else (OFFICIAL_PREFIX, "upsample")
    else:
        return
    if any(not n.startswith(official_prefixes) for n in names):
        raise ValueError(f"state dict mixes official CAT-Seg keys ({method} layout) and converted keys")
    converted = get_converter(method)({n: state_dict.pop(k) for k, n in zip(keys, names)})
    state_dict.update({prefix + k: v for k, v in converted.items()})
