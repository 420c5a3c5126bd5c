"""Natural-language captions for toy scenes, in varied phrasing ("a red circle above a small blue star").

A caption names every object of its scene by colour + shape (optionally with a size word) and uses no
other colour or shape word, so it is a noisy but exact "web caption" of the image. Spatial words
come from the objects' geometry; the template choice comes from the scene's generator.
`AttributeSwap` makes hard negatives of a caption for contrastive pretraining (another shape word).
"""
from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .world import CLASSES, SHAPES

if TYPE_CHECKING:
    from .scene import ToyObject

_ONE = (
    "{0}",
    "a photo of {0}",
    "{0} on a {bg} background",
    "there is {0} in the picture",
    "an image showing {0}",
    "a picture of {0} on a {bg} background",
    "close-up of {0}",
    "{0} {where}",
)
_TWO = (
    "{0} {rel} {1}",
    "{0} and {1}",
    "a photo of {0} {rel} {1}",
    "there is {0} {rel} {1} on a {bg} background",
    "{0} next to {1}",
    "two shapes: {0} and {1}",
)
_THREE = (
    "{0}, {1} and {2}",
    "{0} {rel} {1}, and {2}",
    "three shapes on a {bg} background: {0}, {1} and {2}",
    "a photo of {0}, {1} and {2}",
)
_TEMPLATES = {1: _ONE, 2: _TWO, 3: _THREE}


def article(phrase: str) -> str:
    """Prefix the indefinite article: "a red circle", "an orange star"."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def object_phrase(obj: "ToyObject", with_size: bool) -> str:
    """ "small red circle" / "red circle" (no article)."""
    cls = CLASSES[obj.class_id]
    size = f"{obj.size} " if with_size and obj.size else ""
    return f"{size}{cls.colour} {cls.shape}"


def relation(a: "ToyObject", b: "ToyObject") -> str:
    """Where `a` is relative to `b`, along the dominant axis (image y grows downwards)."""
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    if abs(dy) > abs(dx):
        return "above" if dy < 0 else "below"
    return "to the left of" if dx < 0 else "to the right of"


def location(obj: "ToyObject", image_size: int) -> str:
    """ "in the top left corner", "at the bottom", "in the middle", ... from the object's centre."""
    col = min(int(3 * obj.centre[0] / image_size), 2)
    row = min(int(3 * obj.centre[1] / image_size), 2)
    vertical, horizontal = ("top", "", "bottom")[row], ("left", "", "right")[col]
    if vertical and horizontal:
        return f"in the {vertical} {horizontal} corner"
    if vertical or horizontal:
        return f"at the {vertical or horizontal}"
    return "in the middle"


def make_caption(
    rng: np.random.Generator, objects: Sequence["ToyObject"], background: str, image_size: int
) -> str:
    """One caption mentioning each of `objects` exactly once, in random order and phrasing."""
    if not objects:
        raise ValueError("a toy scene has at least one object")
    order = [objects[i] for i in rng.permutation(len(objects))]
    phrases = [article(object_phrase(o, with_size=bool(rng.random() < 0.5))) for o in order]
    templates = _TEMPLATES[len(order)]
    template = templates[rng.integers(len(templates))]
    rel = relation(order[0], order[1]) if len(order) > 1 else ""
    return template.format(*phrases, bg=background, rel=rel, where=location(order[0], image_size))


class AttributeSwap:
    """Hard negatives of a caption: `count` copies, each with one occurrence of a `words` word (a
    shape, by default) replaced by another word of `words` ("a red circle and a blue star" -> "a red
    square and a blue star"). Random choices come from `rng`, by default Python's `random`, which the
    trainer seeds. Used as `ContrastiveCLIP(text_negatives=AttributeSwap())`."""

    def __init__(self, words: Sequence[str] = SHAPES, count: int = 1, rng: random.Random | None = None) -> None:
        if len(set(words)) < 2 or count < 1:
            raise ValueError(f"need >= 2 distinct words and count >= 1, got words={list(words)}, count={count}")
        self.words, self.count = tuple(words), count
        self._random = rng if rng is not None else random
        self._pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.words)) + r")\b")

    def __call__(self, caption: str) -> list[str]:
        matches = list(self._pattern.finditer(caption))
        if not matches:
            raise ValueError(f"caption {caption!r} names none of {list(self.words)}: no hard negative to make")
        negatives = []
        for _ in range(self.count):
            m = self._random.choice(matches)
            other = self._random.choice([w for w in self.words if w != m.group()])
            negatives.append(caption[:m.start()] + other + caption[m.end():])
        return negatives
