"""Overlays: Visualizer masks, labels kept inside the frame, legend areas, Unicode fonts, upscaling."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from detectron2.data import MetadataCatalog
from PIL import Image, ImageDraw

from ovseg_d2.utils import class_colors, draw_legend, draw_sem_seg_overlay, render_segmentation, save_image
from ovseg_d2.utils import visualization
from ovseg_d2.utils.visualization import area_percentages, draw_text, font_chain, text_size


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
    # Sample away from mask edges and from the class-name boxes drawn at mask centres.
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


def test_label_at_the_image_edge_is_drawn_whole_inside_the_frame():
    """A class in the last 6 columns (the "ky" for "sky" case): its name box, drawn in the class's
    exact colour (the mask fill is blended), is as wide as the whole name and inside the image."""
    image = np.full((64, 96, 3), 127, dtype=np.uint8)
    labels = np.full((64, 96), -1)
    labels[:, 90:] = 0
    color = (200, 30, 30)
    overlay = draw_sem_seg_overlay(image, labels, ["sky"], colors=[color])
    ys, xs = np.nonzero(np.all(overlay == color, axis=-1))
    name_width = text_size("sky", visualization._font_size(64, 96))[0]
    assert xs.max() - xs.min() + 1 >= name_width
    assert xs.max() <= 95 and xs.min() < 90  # moved left, into the frame, not cut at the edge


def test_area_percentages_hand_computed():
    labels = np.array([[0, 0, 1, 255], [0, 2, -1, 1]])
    per_class, unlabeled = area_percentages(labels, 3)
    np.testing.assert_allclose(per_class, [37.5, 25.0, 12.5])
    assert unlabeled == 25.0


def test_legend_has_a_row_per_present_class_and_unlabeled():
    names = ["sky", "road", "tree"]
    two = np.array([[0, 0], [1, 1]])
    three = np.array([[0, 2], [1, 1]])
    with_unlabeled = np.array([[0, 255], [1, 1]])
    height = {k: draw_legend([m], ["area"], names).shape[0] for k, m in
              (("two", two), ("three", three), ("unlabeled", with_unlabeled))}
    row = height["three"] - height["two"]
    assert row > 0 and height["unlabeled"] == height["three"]  # "unlabeled" is one more row, like a class
    # A class present in only one of two maps (truth) is listed once.
    assert draw_legend([two, three], ["pred", "truth"], names).shape[0] == height["three"]


def test_small_images_are_drawn_upscaled_with_a_legend(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    labels = np.zeros((96, 96), dtype=np.int64)
    labels[48:] = 1
    mosaic = render_segmentation(image, [labels, labels], ["pred", "truth"], ["sky", "road"])
    scale = 384 // 96
    assert mosaic.shape[0] == 96 * scale
    np.testing.assert_array_equal(mosaic[:96 * scale, :96 * scale], image.repeat(scale, 0).repeat(scale, 1))
    legend_width = mosaic.shape[1] - 3 * (96 * scale + visualization._GAP)
    assert legend_width > 0
    path = save_image(mosaic, tmp_path / "vis" / "sample.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), mosaic)


def _drawn(text: str) -> np.ndarray:
    canvas = Image.new("RGB", (64, 32), (255, 255, 255))
    draw_text(ImageDraw.Draw(canvas), (2, 2), text, 20, (0, 0, 0))
    return np.asarray(canvas)


@pytest.mark.skipif(
    not any("CJK" in f.name for f in font_chain()), reason="Noto Sans CJK not installed (fonts-noto-cjk)"
)
def test_cjk_class_names_are_not_drawn_as_boxes():
    missing = _drawn("\U0010FFFF")  # no font has this code point: the "tofu" box
    assert _drawn("猫").min() < 128  # something was drawn
    assert not np.array_equal(_drawn("猫"), missing) and not np.array_equal(_drawn("猫"), _drawn("犬"))


def test_missing_noto_fonts_fall_back_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(visualization, "PREFERRED_FONT_FILES", ("NoSuchFont-Regular.ttf",))
    font_chain.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=visualization.__name__):
            assert font_chain() == (visualization.FALLBACK_FONT,)
        assert "fonts-noto-core" in caplog.text
        assert _drawn("sky").min() < 128  # still drawn, with DejaVu Sans
    finally:
        font_chain.cache_clear()
