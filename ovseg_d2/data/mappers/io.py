"""Reading images and semantic-segmentation ground truth; every failure names its file."""
from __future__ import annotations

import numpy as np
from detectron2.data import detection_utils
from PIL import Image

# PIL modes that hold integer class ids: 8-bit grey/palette, 16-bit (PNG, TIFF; either byte order)
# and 32-bit ("I", which older Pillow versions use for 16-bit PNG).
_LABEL_MODES = frozenset({"L", "P", "I;16", "I;16L", "I;16B", "I"})


class UnreadableFileError(OSError):
    """An image or label file exists but cannot be decoded (truncated, corrupt, wrong format)."""


def _unreadable(kind: str, path: str, err: Exception) -> UnreadableFileError:
    return UnreadableFileError(f"Cannot read {kind} {path}: {type(err).__name__}: {err}")


def read_sem_seg(path: str) -> np.ndarray:
    """Load a label map as int64 (H, W), values unchanged.

    Detectron2's `DatasetMapper` reads GT in PIL mode "L", which truncates the 16-bit TIFFs of
    PC-459 / ADE-847 (ids and the 65535 ignore value) and would turn a palette PNG into grey
    levels; here the stored integers are returned as they are (palette PNGs give palette indices).
    A missing file raises FileNotFoundError, an undecodable one `UnreadableFileError`, both naming
    `path` (PIL's own "image file is truncated" does not).
    """
    try:
        with Image.open(path) as img:
            mode = img.mode
            # PIL decodes lazily: a truncated file fails here, not in Image.open.
            labels = np.asarray(img) if mode in _LABEL_MODES else None
    except FileNotFoundError:
        raise FileNotFoundError(f"Label map {path} does not exist") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, struct.error... for corrupt files
        raise _unreadable("label map", path, err) from err
    if labels is None:
        raise ValueError(f"{path}: mode {mode!r} is not a single-channel label map")
    return labels.astype(np.int64)


def read_image(path: str, format: str = "RGB") -> np.ndarray:
    """Detectron2's `read_image` (EXIF orientation, `format` conversion), with errors naming the
    file."""
    try:
        return detection_utils.read_image(path, format=format)
    except FileNotFoundError:
        raise FileNotFoundError(f"Image {path} does not exist") from None
    except Exception as err:  # see read_sem_seg
        raise _unreadable("image", path, err) from err


def check_label_size(
    label_shape: tuple[int, ...], image_shape: tuple[int, ...], label_file: str, image_file: str
) -> None:
    """A label map must cover its image pixel for pixel; the error names both files."""
    if tuple(label_shape[:2]) != tuple(image_shape[:2]):
        (lh, lw), (ih, iw) = label_shape[:2], image_shape[:2]
        raise ValueError(
            f"Label map {label_file} is {lh}x{lw} (HxW) but its image {image_file} is {ih}x{iw}"
        )
