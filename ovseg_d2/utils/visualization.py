"""Segmentation overlays through Detectron2's Visualizer, without touching MetadataCatalog.

Open-vocabulary demos draw arbitrary user vocabularies; registering a metadata entry per vocabulary
would hit the catalog's write-once keys (SAN and others work around it with `MetadataCatalog.remove`).
A throwaway `Metadata` object avoids that entirely.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer
from PIL import Image

Color = tuple[int, int, int]


def class_colors(num_classes: int) -> list[Color]:
    """Deterministic, pairwise-distinct RGB colours for any number of classes.

    The PASCAL VOC bit-interleaving palette, skipping its entry 0 (black), so class i gets VOC
    colour i + 1: the same colour for a class in every image and run, distinct up to 2^24 - 1 classes.
    """
    colors = []
    for index in range(1, num_classes + 1):
        r = g = b = 0
        value = index
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors.append((r, g, b))
    return colors


def draw_sem_seg_overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Color] | None = None,
    alpha: float = 0.6,
) -> np.ndarray:
    """Draw `labels` (H, W) over `image_rgb` (H, W, 3 uint8) with class names; returns H x W x 3 uint8.

    Labels outside [0, len(class_names)) (ignore values such as 255/65535, or -1) are not drawn.
    """
    if image_rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and labels {labels.shape} differ in size")
    if colors is None:
        colors = class_colors(len(class_names))
    labels = np.asarray(labels, dtype=np.int64)
    # Visualizer skips labels >= K; negative labels would index class names from the end.
    labels = np.where(labels < 0, len(class_names), labels)
    metadata = Metadata(stuff_classes=list(class_names), stuff_colors=[list(c) for c in colors])
    visualizer = Visualizer(image_rgb, metadata=metadata, scale=1.0)
    return visualizer.draw_sem_seg(labels, alpha=alpha).get_image()


def save_side_by_side(
    image: np.ndarray,
    prediction_overlay: np.ndarray,
    gt_overlay: np.ndarray | None = None,
    *,
    path: str | Path,
) -> np.ndarray:
    """Write image | prediction | (ground truth) as one PNG/JPEG at `path`; returns the mosaic."""
    panels = [image, prediction_overlay] + ([gt_overlay] if gt_overlay is not None else [])
    heights = {p.shape[0] for p in panels}
    if len(heights) != 1:
        raise ValueError(f"panels must share their height, got {sorted(heights)}")
    mosaic = np.concatenate([np.asarray(p, dtype=np.uint8) for p in panels], axis=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mosaic).save(path)
    return mosaic
