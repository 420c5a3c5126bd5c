"""Overlays via Detectron2's Visualizer: shape, distinct colours, ignore labels left undrawn."""

from __future__ import annotations

import numpy as np
from detectron2.data import MetadataCatalog
from PIL import Image

from ovseg_d2.utils import class_colors, draw_sem_seg_overlay, save_side_by_side


def _scene():
    image = np.full((96, 128, 3), 127, dtype=np.uint8)
    labels = np.full((96, 128), 255, dtype=np.int64)  # right third: ignore
    labels[:, :40] = 0
    labels[:, 40:80] = 1
    return image, labels


def test_class_colors_distinct_and_deterministic():
    colors = class_colors(1000)
    assert len(set(colors)) == 1000 and (0, 0, 0) not in colors
    assert colors == class_colors(1000)
    assert class_colors(3) == colors[:3]


def test_overlay_shape_colours_and_ignore():
    image, labels = _scene()
    catalog_before = set(MetadataCatalog.list())
    overlay = draw_sem_seg_overlay(image, labels, ["sky", "road"])
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    # Sample away from mask edges and from the class-name text drawn at mask centres.
    class0, class1, ignored = overlay[5, 5], overlay[5, 45], overlay[5:90, 90:123]
    assert not np.array_equal(class0, image[5, 5]) and not np.array_equal(class1, image[5, 45])
    assert not np.array_equal(class0, class1)
    np.testing.assert_array_equal(ignored, image[5:90, 90:123])
    assert set(MetadataCatalog.list()) == catalog_before


def test_negative_labels_not_drawn_and_custom_colors():
    image, labels = _scene()
    labels[labels == 255] = -1
    overlay = draw_sem_seg_overlay(image, labels, ["a", "b"], colors=[(255, 0, 0), (0, 0, 255)])
    np.testing.assert_array_equal(overlay[5:90, 90:123], image[5:90, 90:123])
    assert overlay[5, 5, 0] > overlay[5, 5, 2] and overlay[5, 45, 2] > overlay[5, 45, 0]


def test_save_side_by_side(tmp_path):
    image, labels = _scene()
    overlay = draw_sem_seg_overlay(image, labels, ["sky", "road"])
    path = tmp_path / "vis" / "sample.png"
    mosaic = save_side_by_side(image, overlay, overlay, path=path)
    assert mosaic.shape == (96, 3 * 128, 3)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic)
    assert save_side_by_side(image, overlay, path=tmp_path / "two.png").shape == (96, 256, 3)
