"""Record -> model input for image-caption training, with the augmentations the specs list.

TCL and OVSegmentor stage 1 use timm's DeiT train transform: RandomResizedCrop (scale 0.08-1,
bilinear) -> hflip 0.5 -> RandAugment 'rand-m9-mstd0.5-inc1' -> normalise -> RandomErasing
(p 0.25, per-pixel N(0, 1) noise, one box). `ImageTextMapper` builds that chain from its arguments
(set them in the config); OVSegmentor stage 2 is the same without RandAugment and erasing.
"""
from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
from PIL import Image
from timm.data.auto_augment import rand_augment_transform
from timm.data.random_erasing import RandomErasing
from torchvision import transforms as T

from ...clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from .sources import read_record_image


class EraseInNormalisedSpace:
    """timm's RandomErasing ('pixel' mode: N(0, 1) noise, as in the normalised tensors it was
    written for) on a 0-255 image: normalise, erase, map back. The model's own normalisation (same
    mean/std) then sees exactly timm's output."""

    def __init__(self, probability: float, pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> None:
        self.erase = RandomErasing(probability, mode="pixel", max_count=1, device="cpu")
        self.mean = torch.tensor(pixel_mean).view(-1, 1, 1)
        self.std = torch.tensor(pixel_std).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        normalised = (image.float() - self.mean) / self.std
        return self.erase(normalised) * self.std + self.mean


class ImageTextMapper:
    """Record (see `sources.py`) -> `{"image": CHW tensor in 0-255 units, "caption", "image_id", ...}`;
    every other record key except the raw image bytes is kept.

    Training: random resized crop to `image_size` (`scale` of the area, `ratio`), optional
    horizontal flip (p 0.5), optional RandAugment (`auto_augment`, a timm config string such as
    "rand-m9-mstd0.5-inc1"), optional RandomErasing (`random_erasing` = probability). Flip defaults
    to off because captions may state left/right relations (the toy world's do). The image is uint8,
    or float32 when erasing is on (its noise leaves the 0-255 range).
    Test: resize the short side to `image_size`, centre crop a square; uint8.
    `pixel_mean`/`pixel_std` (0-255 units) must be the model's: RandAugment fills with the mean,
    erasing draws its noise in the normalised space.
    """

    def __init__(
        self,
        image_size: int,
        is_train: bool = True,
        *,
        scale: tuple[float, float] = (0.5, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: bool = False,
        auto_augment: str | None = None,
        random_erasing: float = 0.0,
        pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
        pixel_std: Sequence[float] = OPENAI_CLIP_STD,
    ) -> None:
        if not is_train:
            ops: list[Any] = [T.Resize(image_size, antialias=True), T.CenterCrop(image_size), T.PILToTensor()]
        else:
            ops = [T.RandomResizedCrop(image_size, scale=scale, ratio=ratio, antialias=True)]
            if hflip:
                ops.append(T.RandomHorizontalFlip(0.5))
            if auto_augment:
                if not auto_augment.startswith("rand"):
                    raise ValueError(f"auto_augment={auto_augment!r}: only RandAugment ('rand-...') is supported")
                hparams = {  # as timm's create_transform sets them
                    "translate_const": int(image_size * 0.45),
                    "img_mean": tuple(round(m) for m in pixel_mean),
                    "interpolation": Image.BILINEAR,
                }
                ops.append(rand_augment_transform(auto_augment, hparams))
            ops.append(T.PILToTensor())
            if random_erasing > 0:
                ops.append(EraseInNormalisedSpace(random_erasing, pixel_mean, pixel_std))
        self.transform = T.Compose(ops)

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        out = copy.copy(record)
        out.pop("image_bytes", None)
        out["image"] = self.transform(read_record_image(record))
        return out

