"""Sampling and rendering of one toy scene: a textured background with one to a few coloured shapes.

Everything random comes from the `numpy.random.Generator` passed in, so a scene is a pure function
of its generator's seed (the generator seeds it per image, which makes generation resumable and
order-independent). Masks are rasterised without anti-aliasing so the label map is exactly the set
of pixels painted with the object's colour.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import cv2
import numpy as np

from .captions import make_caption
from .world import CLASSES, COLOURS, IGNORE_LABEL

BACKGROUNDS: tuple[str, ...] = ("plain", "striped", "checkered", "noisy")
RADIUS_RANGE = (0.11, 0.27)  # fraction of the image side
SMALL_BELOW, LARGE_ABOVE = 0.15, 0.22  # radius fractions that earn a size word in captions
MAX_TILT = math.radians(15)  # shapes stay upright (a tilted square is not a "diamond"), +-15 degrees
MIN_VISIBLE = 0.6  # an object stays at least this visible after later objects overlap it
NUM_OBJECTS_P = (0.45, 0.35, 0.2)  # P(1), P(2), P(3) objects per scene
_PLACEMENT_TRIES = 12
_SUBPIXEL = 4  # cv2 fixed-point bits: polygons are placed with 1/16 px precision


@dataclass
class ToyObject:
    """One painted object; `visible_area` is what remains after later objects overlap it."""

    class_id: int
    centre: tuple[float, float]
    radius: float
    angle: float
    size: str | None
    area: int = 0
    visible_area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)

    def to_record(self) -> dict[str, Any]:
        cls = CLASSES[self.class_id]
        return {
            "class_id": self.class_id,
            "name": cls.name,
            "colour": cls.colour,
            "shape": cls.shape,
            "size": self.size,
            "centre": [round(self.centre[0], 2), round(self.centre[1], 2)],
            "radius": round(self.radius, 2),
            "bbox": list(self.bbox),
            "area": self.area,
            "visible_area": self.visible_area,
        }


@dataclass
class Scene:
    image: np.ndarray  # (S, S, 3) uint8 RGB
    label: np.ndarray  # (S, S) uint8, class ids 0..29, background 255
    objects: list[ToyObject] = field(default_factory=list)
    background: str = "plain"
    caption: str = ""


def shape_polygon(shape: str, centre: tuple[float, float], radius: float, angle: float) -> np.ndarray:
    """Outline of `shape` as float (N, 2) xy points; radii are scaled so shapes have similar areas."""
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        r = np.full_like(t, radius)
    elif shape == "square":
        t = np.arange(4) * math.pi / 2 + math.pi / 4
        r = np.full_like(t, radius * 1.15)
    elif shape == "triangle":
        t = np.arange(3) * 2 * math.pi / 3 - math.pi / 2
        r = np.full_like(t, radius * 1.35)
    elif shape == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius * 1.3, radius * 0.55)
    elif shape == "cross":
        a, w = radius * 1.1, radius * 0.4  # arm half-length, arm half-width
        xy = np.array([(w, a), (w, w), (a, w), (a, -w), (w, -w), (w, -a),
                       (-w, -a), (-w, -w), (-a, -w), (-a, w), (-w, w), (-w, a)])
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise ValueError(f"unknown shape {shape!r}")
    t = t + angle
    return np.stack([centre[0] + r * np.cos(t), centre[1] + r * np.sin(t)], axis=1)


def rasterise(shape: str, centre: tuple[float, float], radius: float, angle: float, size: int) -> np.ndarray:
    """Boolean (size, size) mask of the shape, clipped to the image."""
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(shape_polygon(shape, centre, radius, angle) * (1 << _SUBPIXEL)).astype(np.int32)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=_SUBPIXEL)
    return mask.astype(bool)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, str]:
    """A desaturated textured background (float RGB) and its pattern name."""
    kind = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    grey = rng.uniform(70, 200)
    tint = rng.normal(0, 12, size=3)  # low saturation: never mistaken for an object colour
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "striped":
        theta, period = rng.uniform(0, math.pi), rng.uniform(6, 18)
        pattern = 18 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    elif kind == "checkered":
        cell = int(rng.integers(6, 17))
        pattern = 14 * (((xx // cell + yy // cell) % 2) * 2 - 1)
    elif kind == "noisy":
        noise = rng.standard_normal((size, size), dtype=np.float32)
        pattern = cv2.GaussianBlur(noise, (0, 0), rng.uniform(1.0, 2.5))
        pattern = 20 * pattern / (pattern.std() + 1e-6)
    else:
        pattern = np.zeros((size, size), np.float32)
    return (grey + tint)[None, None, :] + pattern[..., None], kind


def _object_colour(rng: np.random.Generator, colour: str) -> np.ndarray:
    """The class colour with small hue/saturation/value jitter (OpenCV HSV units)."""
    hsv = cv2.cvtColor(np.array([[COLOURS[colour]]], np.uint8), cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-3, 3)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(0.85, 1.0), 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * rng.uniform(0.85, 1.05), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _object_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Multiplicative texture (around 1) painted inside an object: plain, stripes or dots."""
    kind = rng.integers(3)
    if kind == 0:
        return np.ones((size, size), np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 1:
        theta, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        return 1 + 0.12 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    period = rng.uniform(5, 9)
    return 1 - 0.12 * ((np.sin(2 * math.pi * xx / period) * np.sin(2 * math.pi * yy / period)) > 0.5)


def _size_word(radius_fraction: float) -> str | None:
    if radius_fraction < SMALL_BELOW:
        return "small"
    if radius_fraction > LARGE_ABOVE:
        return "large"
    return None


def _place(
    rng: np.random.Generator, class_id: int, size: int, owner: np.ndarray, objects: list[ToyObject]
) -> tuple[ToyObject, np.ndarray] | None:
    """Sample a pose for a new object on top of `objects` that leaves every earlier object at least
    MIN_VISIBLE visible; None if no such pose was found."""
    shape = CLASSES[class_id].shape
    for _ in range(_PLACEMENT_TRIES):
        frac = rng.uniform(*RADIUS_RANGE)
        radius = frac * size
        margin = 0.9 * radius
        centre = (rng.uniform(margin, size - margin), rng.uniform(margin, size - margin))
        obj = ToyObject(class_id, centre, radius, rng.uniform(-MAX_TILT, MAX_TILT), _size_word(frac))
        mask = rasterise(shape, obj.centre, obj.radius, obj.angle, size)
        if not mask.any():
            continue
        covered = np.bincount(owner[mask & (owner >= 0)], minlength=len(objects))
        if all(o.visible_area - covered[i] >= MIN_VISIBLE * o.area for i, o in enumerate(objects)):
            return obj, mask
    return None


def render_scene(
    rng: np.random.Generator, size: int, class_ids: Sequence[int] | None = None
) -> Scene:
    """Render a scene of `size` x `size` pixels.

    `class_ids` fixes the objects (painted in that order); by default 1-3 distinct classes are drawn.
    An object that cannot be placed visibly enough is dropped, so the caption and the label map
    always describe the same objects.
    """
    if class_ids is None:
        count = int(rng.choice(len(NUM_OBJECTS_P), p=NUM_OBJECTS_P)) + 1
        class_ids = [int(c) for c in rng.choice(len(CLASSES), size=count, replace=False)]
    image, background = _background(rng, size)
    owner = np.full((size, size), -1, np.int64)  # index of the object owning each pixel
    objects: list[ToyObject] = []
    for class_id in class_ids:
        placed = _place(rng, int(class_id), size, owner, objects)
        if placed is None:
            continue
        obj, mask = placed
        colour = _object_colour(rng, CLASSES[obj.class_id].colour)
        image[mask] = colour * _object_texture(rng, size)[mask][:, None]
        owner[mask] = len(objects)
        obj.area = int(mask.sum())
        objects.append(obj)
        for i, o in enumerate(objects):
            o.visible_area = int((owner == i).sum())
    for i, obj in enumerate(objects):
        ys, xs = np.nonzero(owner == i)
        obj.bbox = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    # Lighting: a global gain with a linear gradient across the image, then sensor noise.
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gain = rng.uniform(0.8, 1.15) * (1 + rng.uniform(0, 0.35) * (xx * math.cos(theta) + yy * math.sin(theta)))
    image = image * gain[..., None] + 3 * rng.standard_normal(image.shape, dtype=np.float32)
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)

    label = np.full((size, size), IGNORE_LABEL, np.uint8)
    for i, obj in enumerate(objects):
        label[owner == i] = obj.class_id
    caption = make_caption(rng, objects, background, size)
    return Scene(image=image, label=label, objects=objects, background=background, caption=caption)
