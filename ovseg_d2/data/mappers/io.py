"""Reading semantic-segmentation ground truth exactly, whatever its bit depth."""
from __future__ import annotations

import numpy as np
from PIL import Image

# PIL modes that hold integer class ids: 8-bit grey/palette, 16-bit (PNG, TIFF; either byte order)
# and 32-bit ("I", which older Pillow versions use for 16-bit PNG).
_LABEL_MODES = frozenset({"L", "P", "I;16", "I;16L", "I;16B", "I"})


def read_sem_seg(path: str) -> np.ndarray:
    """Load a label map as int64 (H, W), values unchanged.

    Detectron2's `DatasetMapper` reads GT in PIL mode "L", which truncates the 16-bit TIFFs of
    PC-459 / ADE-847 (ids and the 65535 ignore value) and would turn a palette PNG into grey
    levels; here the stored integers are returned as they are (palette PNGs give palette indices).
    """
    with Image.open(path) as img:
        if img.mode not in _LABEL_MODES:
            raise ValueError(f"{path}: mode {img.mode!r} is not a single-channel label map")
        return np.asarray(img).astype(np.int64)
