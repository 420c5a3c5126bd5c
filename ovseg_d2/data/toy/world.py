"""The toy open-vocabulary world's vocabulary: 6 colours x 5 shapes = 30 composed classes.

A class is learnable from two visual attributes (hue and outline), and the zero-shot split holds out
6 compositions whose colour and shape each occur in seen classes, so an unseen class ("red circle")
can only be recognised by composing attributes learnt elsewhere ("red square", "blue circle") --
the toy analogue of the open-vocabulary premise.
"""
from __future__ import annotations

from typing import NamedTuple

# Saturated, well-separated hues; backgrounds are desaturated so an object's colour is never
# confused with the background (see scene.py).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (46, 170, 70),
    "blue": (40, 90, 220),
    "yellow": (240, 214, 40),
    "purple": (140, 60, 200),
    "orange": (248, 136, 24),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")


class ToyClass(NamedTuple):
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


# Colour-major order fixes the class ids: id = colour_index * len(SHAPES) + shape_index.
CLASSES: tuple[ToyClass, ...] = tuple(ToyClass(c, s) for c in COLOURS for s in SHAPES)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)

# One "diagonal" composition per colour (colour i with shape i mod 5): each held-out colour keeps 4
# seen shapes and each held-out shape keeps >= 4 seen colours.
UNSEEN_CLASS_IDS: tuple[int, ...] = tuple(
    i * len(SHAPES) + i % len(SHAPES) for i in range(len(COLOURS))
)
SEEN_CLASS_IDS: tuple[int, ...] = tuple(i for i in range(len(CLASSES)) if i not in UNSEEN_CLASS_IDS)
SEEN_CLASS_NAMES: tuple[str, ...] = tuple(CLASS_NAMES[i] for i in SEEN_CLASS_IDS)
UNSEEN_CLASS_NAMES: tuple[str, ...] = tuple(CLASS_NAMES[i] for i in UNSEEN_CLASS_IDS)

# Words that name a class attribute; captions use no other colour or shape words (tests rely on it).
ATTRIBUTE_WORDS: frozenset[str] = frozenset(COLOURS) | frozenset(SHAPES)

IGNORE_LABEL = 255


def seen_label_map() -> list[int]:
    """`label_map` of the seen training split: full class id -> seen id (0..23), unseen -> ignore."""
    label_map = [IGNORE_LABEL] * len(CLASSES)
    for seen_id, full_id in enumerate(SEEN_CLASS_IDS):
        label_map[full_id] = seen_id
    return label_map
