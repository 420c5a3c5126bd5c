"""The official training augmentation: rotation with reflected image borders and ignored label corners."""
from __future__ import annotations

import numpy as np
from detectron2.data import transforms as T

from ovseg_d2.projects.sazs.data import RandomReflectRotation, ReflectRotationTransform, build_sazs_train_augmentations


def _image_and_labels(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(1, 256, (h, w, 3), dtype=np.uint8), rng.integers(0, 5, (h, w)).astype(np.uint8)


def test_quarter_turn_of_a_square_is_numpy_rot90() -> None:
    image, labels = _image_and_labels(9, 9)
    transform = ReflectRotationTransform(9, 9, 90.0)
    np.testing.assert_array_equal(transform.apply_image(image), np.rot90(image))
    np.testing.assert_array_equal(transform.apply_segmentation(labels), np.rot90(labels))


def test_small_rotation_reflects_the_image_and_ignores_label_corners() -> None:
    image, labels = _image_and_labels(32, 48)
    transform = ReflectRotationTransform(32, 48, 10.0)
    rotated, rotated_labels = transform.apply_image(image), transform.apply_segmentation(labels)
    assert rotated.shape == image.shape and rotated_labels.shape == labels.shape
    assert rotated_labels.dtype == labels.dtype
    # Corners come from outside the image: labels there are ignore, the image is never black.
    assert rotated_labels[0, 0] == 255 and rotated_labels[-1, -1] == 255
    assert (rotated.reshape(-1, 3).max(axis=1) > 0).all()
    # The centre stays in place.
    assert rotated_labels[16, 24] != 255
    # Detectron2's own RotationTransform would fill the corners with zeros (the reason for this class).
    zero_filled = T.RotationTransform(32, 48, 10.0, expand=False).apply_segmentation(labels)
    assert zero_filled[0, 0] == 0


def test_angles_are_integers_within_the_range_and_zero_disables() -> None:
    image, _ = _image_and_labels(16, 16)
    np.random.seed(0)
    angles = set()
    for _ in range(200):
        t = RandomReflectRotation(10).get_transform(image)
        angle = np.degrees(np.arctan2(-t.matrix[0, 1], t.matrix[0, 0]))
        angles.add(round(float(angle), 6))
    assert angles == {float(a) for a in range(-10, 11)}
    assert not any(isinstance(a, RandomReflectRotation) for a in build_sazs_train_augmentations(max_rotation=0))
    assert isinstance(build_sazs_train_augmentations()[0], RandomReflectRotation)
