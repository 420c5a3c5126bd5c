"""Pixel statistics in 0-255 units (Detectron2 models normalise uint8-range images themselves).

CLIP towers expect OpenAI's statistics; some methods (TCL, Cascade-CLIP) feed CLIP with ImageNet
statistics instead, as their official code does, so both are kept here under explicit names.
"""

from __future__ import annotations

OPENAI_CLIP_MEAN: tuple[float, float, float] = (122.7709383, 116.7460125, 104.09373615)
OPENAI_CLIP_STD: tuple[float, float, float] = (68.5005327, 66.6321579, 70.3231630)
IMAGENET_MEAN: tuple[float, float, float] = (123.675, 116.28, 103.53)
IMAGENET_STD: tuple[float, float, float] = (58.395, 57.12, 57.375)

_PIXEL_STATS = {
    "openai": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "clip": (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


def clip_pixel_stats(kind: str = "openai") -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in RGB order, 0-255 units. `kind`: "openai" (alias "clip") or "imagenet"."""
    try:
        return _PIXEL_STATS[kind]
    except KeyError:
        raise ValueError(f"Unknown pixel statistics {kind!r}; expected one of {sorted(_PIXEL_STATS)}") from None
