"""Zero-shot image-to-text retrieval of a CLIP on the toy world's held-out single-object images.

Each `retrieval` image holds exactly one object; the CLIP must pick its class among the 30 class
prompts ("a photo of an orange star"), the 6 unseen classes included. This checks the "web-scale"
CLIP before any segmentation training: chance is 1/30. The prediction's colour and shape are also
scored on their own (chance 1/6 and 1/5): a CLIP that only sees colour reaches 100 % colour, 20 % shape.

`evaluate_shape_swap` asks the same of shape on the captioned (multi-object) splits: does an image
prefer its caption to copies with one shape word swapped? On train against val it tells shape that
was learnt from shape that was memorised per image.
"""
from __future__ import annotations

import os
import random
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ...clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from ..image_text import ImageTextMapper
from .captions import AttributeSwap, article
from .generate import ToyWorldLayout, read_meta
from .world import CLASS_NAMES, CLASSES, SHAPES, UNSEEN_CLASS_IDS


def class_prompts(names: Sequence[str] = CLASS_NAMES) -> list[str]:
    """The caption-style prompt of each class: "a photo of a red circle", "... of an orange star"."""
    return [f"a photo of {article(n)}" for n in names]


def _encode_images(
    clip: nn.Module,
    root: str | os.PathLike,
    records: list[dict],
    batch_size: int,
    pixel_mean: Sequence[float],
    pixel_std: Sequence[float],
    progress: bool = False,
    desc: str = "images",
) -> torch.Tensor:
    """The normalised CLIP image embeddings of `records` (their `file_name` under the world `root`),
    loaded as the test mapper loads them, in order and in batches: (N, E)."""
    device = next(clip.parameters()).device
    size = clip.visual.image_size
    mapper = ImageTextMapper(size if isinstance(size, int) else size[0], is_train=False)
    folder = ToyWorldLayout(root).root
    mean = torch.tensor(pixel_mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(pixel_std, device=device).view(1, 3, 1, 1)
    embeddings = []
    for start in tqdm(range(0, len(records), batch_size), desc=desc, disable=not progress):
        pixels = torch.stack([
            mapper({"file_name": str(folder / r["file_name"]), "caption": r["caption"]})["image"]
            for r in records[start:start + batch_size]
        ])
        embeddings.append(clip.encode_image((pixels.to(device, torch.float32) - mean) / std, normalize=True))
    return torch.cat(embeddings)


@torch.no_grad()
def evaluate_retrieval(
    clip: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    root: str | os.PathLike,
    *,
    batch_size: int = 100,
    pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
    pixel_std: Sequence[float] = OPENAI_CLIP_STD,
    progress: bool = True,
) -> dict[str, float]:
    """Top-1 accuracy (%) of an open_clip CLIP over the 30 class prompts: all images, images of seen
    classes, images of unseen classes; `shape` / `colour`: how often the predicted class has the
    image's shape / colour; `chance` (of top-1) for reference."""
    clip.eval()
    device = next(clip.parameters()).device
    records = read_meta(ToyWorldLayout(root), "retrieval")
    text = clip.encode_text(tokenizer(class_prompts()).to(device), normalize=True)
    image = _encode_images(clip, root, records, batch_size, pixel_mean, pixel_std, progress, "retrieval")
    labels = np.array([r["objects"][0]["class_id"] for r in records])
    predicted = (image @ text.T).argmax(dim=1).cpu().numpy()
    correct = predicted == labels
    unseen = np.isin(labels, UNSEEN_CLASS_IDS)
    same_shape = [CLASSES[p].shape == CLASSES[t].shape for p, t in zip(predicted, labels)]
    same_colour = [CLASSES[p].colour == CLASSES[t].colour for p, t in zip(predicted, labels)]
    return {
        "top1": 100.0 * correct.mean(),
        "shape": 100.0 * np.mean(same_shape),
        "colour": 100.0 * np.mean(same_colour),
        "top1_seen": 100.0 * correct[~unseen].mean(),
        "top1_unseen": 100.0 * correct[unseen].mean(),
        "chance": 100.0 / len(CLASS_NAMES),
        "num_images": float(len(records)),
    }


@torch.no_grad()
def evaluate_shape_swap(
    clip: nn.Module,
    tokenizer: Callable[[list[str]], torch.Tensor],
    root: str | os.PathLike,
    split: str,
    *,
    num_images: int = 600,
    negatives: int = 4,
    seed: int = 0,
    batch_size: int = 100,
    pixel_mean: Sequence[float] = OPENAI_CLIP_MEAN,
    pixel_std: Sequence[float] = OPENAI_CLIP_STD,
) -> dict[str, float]:
    """How often (%) an image's embedding scores its own caption above every one of `negatives` copies
    with one shape word swapped (`AttributeSwap`, drawn with `seed`), over the first `num_images`
    images of `split`: `image` with the image itself, `mean_image` with the mean embedding of those
    images (what the captions alone give away); `chance` = 100 / (negatives + 1)."""
    clip.eval()
    device = next(clip.parameters()).device
    records = read_meta(ToyWorldLayout(root), split)[:num_images]
    image = _encode_images(clip, root, records, batch_size, pixel_mean, pixel_std)
    swap = AttributeSwap(SHAPES, count=negatives, rng=random.Random(seed))
    positives, swapped = [], []
    for start in range(0, len(records), batch_size):
        captions = [r["caption"] for r in records[start:start + batch_size]]
        positives.append(clip.encode_text(tokenizer(captions).to(device), normalize=True))
        copies = tokenizer([c for caption in captions for c in swap(caption)]).to(device)
        swapped.append(clip.encode_text(copies, normalize=True).view(len(captions), negatives, -1))
    positive, negative = torch.cat(positives), torch.cat(swapped)

    def preferred(embedding: torch.Tensor) -> float:
        own = (embedding * positive).sum(-1, keepdim=True)
        return 100.0 * (own > torch.einsum("bd,bkd->bk", embedding, negative)).all(1).float().mean().item()

    return {
        "image": preferred(image),
        "mean_image": preferred(image.mean(0, keepdim=True).expand_as(image)),
        "chance": 100.0 / (negatives + 1),
        "num_images": float(len(records)),
    }
