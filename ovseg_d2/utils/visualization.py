"""Segmentation overlays for demos: masks through Detectron2's Visualizer, labels and a legend in a
font with broad Unicode coverage.

Open-vocabulary demos draw arbitrary user vocabularies; registering a metadata entry per vocabulary
would hit the catalog's write-once keys (SAN and others work around it with `MetadataCatalog.remove`).
A throwaway `Metadata` object avoids that entirely.

Text (in-image labels, the legend) is drawn with Pillow, character by character from the first font
of `font_chain()` that has the glyph: Noto Sans, Noto Sans CJK, Symbola (emoji, monochrome) where
installed (Debian: `fonts-noto-core fonts-noto-cjk fonts-symbola`, see tools/install_env.sh), then
matplotlib's bundled DejaVu Sans. Missing fonts and class names no font covers are warned about.
Images smaller than `MIN_DISPLAY_SIDE` (the 96 px toy world) are drawn upscaled (nearest neighbour),
so that labels and the legend stay legible.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Sequence

import matplotlib
import numpy as np
from detectron2.data.catalog import Metadata
from detectron2.utils.visualizer import Visualizer
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font
from PIL import Image, ImageDraw, ImageFont

logger = logging.getLogger(__name__)

Color = tuple[int, int, int]

MIN_DISPLAY_SIDE = 384
# Font files in fallback order, by file name (Debian packages fonts-noto-core, fonts-noto-cjk,
# fonts-symbola); DejaVu Sans, shipped with matplotlib, always ends the chain.
PREFERRED_FONT_FILES = ("NotoSans-Regular.ttf", "NotoSansCJK-Regular.ttc", "Symbola_hint.ttf", "Symbola.ttf")
FALLBACK_FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
UNLABELED = "unlabeled"
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_GAP = 4  # white pixels between panels


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


@functools.lru_cache(maxsize=None)
def font_chain() -> tuple[Path, ...]:
    """The installed fonts text is drawn with, in fallback order (see the module docstring)."""
    installed = {Path(p).name: Path(p) for p in sorted(font_manager.findSystemFonts())}
    found = [installed[name] for name in PREFERRED_FONT_FILES if name in installed]
    if not found:
        logger.warning(
            "No Noto font found (%s): class names are drawn with DejaVu Sans, CJK and emoji as boxes. "
            "Debian/Ubuntu: apt-get install fonts-noto-core fonts-noto-cjk fonts-symbola",
            ", ".join(PREFERRED_FONT_FILES),
        )
    return (*found, FALLBACK_FONT)


@functools.lru_cache(maxsize=None)
def _has_glyph(font_file: Path, char: str) -> bool:
    return _ft2font(font_file).get_char_index(ord(char)) != 0


@functools.lru_cache(maxsize=None)
def _ft2font(font_file: Path) -> FT2Font:
    return FT2Font(str(font_file))


@functools.lru_cache(maxsize=None)
def _pil_font(font_file: Path, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_file), size)


@functools.lru_cache(maxsize=None)
def _warn_uncovered(text: str) -> None:
    logger.warning("No installed font covers every character of %r: some are drawn as boxes", text)


def _runs(text: str, size: int) -> list[tuple[str, ImageFont.FreeTypeFont]]:
    """`text` split into runs of characters drawn with the same font of the chain."""
    chain = font_chain()
    runs: list[tuple[str, ImageFont.FreeTypeFont]] = []
    for char in text:
        font_file = next((f for f in chain if char.isspace() or _has_glyph(f, char)), None)
        if font_file is None:
            _warn_uncovered(text)
            font_file = chain[0]
        font = _pil_font(font_file, size)
        if runs and runs[-1][1] is font:
            runs[-1] = (runs[-1][0] + char, font)
        else:
            runs.append((char, font))
    return runs


def text_size(text: str, size: int) -> tuple[int, int]:
    """(width, height) in pixels of `text` drawn at font `size` by `draw_text`."""
    width = sum(font.getlength(run) for run, font in _runs(text, size))
    return math.ceil(width), math.ceil(size * 1.3)


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, size: int, fill: Color) -> None:
    """Draws `text` with its top-left corner at `xy`, each character from the first font having it."""
    x, y = xy
    for run, font in _runs(text, size):
        draw.text((x, y), run, font=font, fill=fill)
        x += font.getlength(run)


def display_scale(height: int, width: int) -> int:
    """The integer factor that brings an image's short side to at least `MIN_DISPLAY_SIDE`."""
    return max(1, math.ceil(MIN_DISPLAY_SIDE / min(height, width)))


def upscale(image: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscaling of an (H, W, ...) array by an integer factor."""
    return image if scale == 1 else image.repeat(scale, axis=0).repeat(scale, axis=1)


def _font_size(height: int, width: int) -> int:
    return int(np.clip(min(height, width) / 28, 12, 32))


def _label_box(mask: np.ndarray, text_wh: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a text box centred on the mask pixel nearest the mask's median point, moved
    inside the frame (a label at the image edge is never cut)."""
    ys, xs = np.nonzero(mask)
    cy, cx = np.median(ys), np.median(xs)
    nearest = np.argmin((ys - cy) ** 2 + (xs - cx) ** 2)
    (h, w), (tw, th) = mask.shape, text_wh
    x = int(np.clip(xs[nearest] - tw // 2, 0, max(0, w - tw)))
    y = int(np.clip(ys[nearest] - th // 2, 0, max(0, h - th)))
    return x, y


def draw_sem_seg_overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    colors: Sequence[Color] | None = None,
    alpha: float = 0.6,
    scale: int = 1,
) -> np.ndarray:
    """`labels` (H, W) over `image_rgb` (H, W, 3 uint8), both upscaled by `scale`; returns
    (scale H, scale W, 3) uint8.

    Labels outside [0, len(class_names)) (unlabeled: ignore values such as 255/65535, or -1) are not
    drawn. Each class is named once, on its own box in its colour, kept inside the frame; a name whose
    box would overlap an earlier (larger) class's is left to the legend.
    """
    if image_rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and labels {labels.shape} differ in size")
    if colors is None:
        colors = class_colors(len(class_names))
    labels = upscale(np.asarray(labels, dtype=np.int64), scale)
    image_rgb = upscale(image_rgb, scale)
    metadata = Metadata(stuff_classes=list(class_names), stuff_colors=[list(c) for c in colors])
    visualizer = Visualizer(image_rgb, metadata=metadata, scale=1.0)
    present = [(int(c), int(n)) for c, n in zip(*np.unique(labels, return_counts=True)) if 0 <= c < len(class_names)]
    present.sort(key=lambda item: -item[1])
    for cls, _ in present:
        visualizer.draw_binary_mask(
            labels == cls, color=np.asarray(colors[cls]) / 255.0, alpha=alpha, area_threshold=0
        )
    canvas = Image.fromarray(visualizer.get_output().get_image())
    draw = ImageDraw.Draw(canvas)
    size = _font_size(*labels.shape)
    placed: list[tuple[int, int, int, int]] = []
    for cls, _ in present:
        tw, th = text_size(class_names[cls], size)
        tw += 4
        x, y = _label_box(labels == cls, (tw, th))
        box = (x, y, x + tw, y + th)
        if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in placed):
            continue
        placed.append(box)
        draw.rectangle(box, fill=tuple(colors[cls]))
        draw_text(draw, (x + 2, y), class_names[cls], size, _contrasting(colors[cls]))
    return np.asarray(canvas)


def _contrasting(color: Color) -> Color:
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    return (0, 0, 0) if luminance > 128 else (255, 255, 255)


def area_percentages(labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, float]:
    """(per-class % of the pixels of `labels`, % left unlabeled: values outside [0, num_classes))."""
    labels = np.asarray(labels, dtype=np.int64).ravel()
    valid = (labels >= 0) & (labels < num_classes)
    counts = np.bincount(labels[valid], minlength=num_classes)
    return 100.0 * counts / labels.size, 100.0 * (labels.size - valid.sum()) / labels.size


def _percent(value: float) -> str:
    """One decimal; a present class never reads as absent ("<0.1", not "0.0")."""
    return "<0.1" if 0 < value < 0.05 else f"{value:.1f}"


def draw_legend(
    label_maps: Sequence[np.ndarray],
    titles: Sequence[str],
    class_names: Sequence[str],
    colors: Sequence[Color] | None = None,
    font_size: int = 14,
) -> np.ndarray:
    """A white panel listing every class present in any of `label_maps` (colour swatch, name, and
    its area % in each map, one column per title), largest first, then "unlabeled" if any."""
    if len(label_maps) != len(titles):
        raise ValueError(f"{len(label_maps)} label maps but {len(titles)} titles")
    if colors is None:
        colors = class_colors(len(class_names))
    areas = [area_percentages(m, len(class_names)) for m in label_maps]
    classes = sorted(
        (c for c in range(len(class_names)) if any(a[0][c] > 0 for a in areas)),
        key=lambda c: -max(a[0][c] for a in areas),
    )
    rows: list[tuple[Color | None, str, list[str]]] = [(None, "class", [f"{t} %" for t in titles])]
    rows += [(colors[c], class_names[c], [_percent(a[0][c]) for a in areas]) for c in classes]
    if any(a[1] > 0 for a in areas):
        rows.append((_BACKGROUND, UNLABELED, [_percent(a[1]) for a in areas]))
    pad, swatch = font_size // 2, font_size
    line = text_size("Ag", font_size)[1] + pad // 2
    name_width = max(text_size(name, font_size)[0] for _, name, _ in rows)
    column_widths = [max(text_size(r[2][i], font_size)[0] for r in rows) for i in range(len(titles))]
    width = pad + swatch + pad + name_width + sum(pad * 2 + w for w in column_widths) + pad
    panel = Image.new("RGB", (width, pad * 2 + line * len(rows)), _BACKGROUND)
    draw = ImageDraw.Draw(panel)
    for row, (color, name, cells) in enumerate(rows):
        y = pad + row * line
        if color is not None:
            draw.rectangle((pad, y + 2, pad + swatch, y + 2 + swatch), fill=color, outline=_TEXT)
        draw_text(draw, (pad * 2 + swatch, y), name, font_size, _TEXT)
        x = pad * 2 + swatch + name_width
        for cell, cell_width in zip(cells, column_widths):
            x += pad * 2 + cell_width
            draw_text(draw, (x - text_size(cell, font_size)[0], y), cell, font_size, _TEXT)
    return np.asarray(panel)


def render_segmentation(
    image_rgb: np.ndarray,
    label_maps: Sequence[np.ndarray],
    titles: Sequence[str],
    class_names: Sequence[str],
    colors: Sequence[Color] | None = None,
    alpha: float = 0.6,
) -> np.ndarray:
    """image | one overlay per label map | legend (areas per map), upscaled to `display_scale`, with
    `_GAP` white columns after each image panel; padded with white below when the legend is taller
    than the image."""
    scale = display_scale(*image_rgb.shape[:2])
    panels = [upscale(image_rgb, scale)]
    panels += [draw_sem_seg_overlay(image_rgb, m, class_names, colors, alpha, scale) for m in label_maps]
    legend = draw_legend(label_maps, titles, class_names, colors, _font_size(*panels[0].shape[:2]))
    height = max(panels[0].shape[0], legend.shape[0])
    # White below short panels, and a white gap right of every panel, between them and the legend.
    padded = [np.pad(p, ((0, height - p.shape[0]), (0, _GAP), (0, 0)), constant_values=255) for p in panels]
    legend = np.pad(legend, ((0, height - legend.shape[0]), (0, 0), (0, 0)), constant_values=255)
    return np.concatenate([*padded, legend], axis=1)


def save_image(image: np.ndarray, path: str | Path) -> Path:
    """Writes an RGB uint8 array (PNG/JPEG by suffix), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path
