"""The toy world generator: determinism, resumability, caption/label consistency, zero-shot split."""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from ovseg_d2.data.toy import (
    CLASS_NAMES,
    CLASSES,
    COLOURS,
    SEEN_CLASS_IDS,
    SHAPES,
    UNSEEN_CLASS_IDS,
    ToyWorldConfig,
    ToyWorldLayout,
    generate_toy_world,
    read_meta,
)

_PAIR = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(toy_root: Path, tmp_path: Path, toy_config: ToyWorldConfig) -> None:
    generate_toy_world(tmp_path / "again", toy_config, progress=False)
    assert _tree(tmp_path / "again") == _tree(toy_root)
    other = replace(toy_config, seed=toy_config.seed + 1, num_train=4, num_val=1, num_retrieval=1)
    generate_toy_world(tmp_path / "other", other, progress=False)
    first = "images/train/000000.jpg"
    assert (tmp_path / "other" / first).read_bytes() != (toy_root / first).read_bytes()


def test_resume_completes_identically_and_refuses_other_config(
    toy_root: Path, tmp_path: Path, toy_config: ToyWorldConfig
) -> None:
    root = tmp_path / "world"
    generate_toy_world(root, toy_config, progress=False)
    for rel in ("images/train/000003.jpg", "meta/train.jsonl", "shards/train-000001.tar"):
        (root / rel).unlink()
    generate_toy_world(root, toy_config, progress=False)
    assert _tree(root) == _tree(toy_root)
    with pytest.raises(ValueError, match="refusing to mix"):
        generate_toy_world(root, replace(toy_config, seed=99), progress=False)


@pytest.mark.parametrize("split", ["train", "val", "retrieval"])
def test_captions_and_labels_describe_exactly_the_objects(
    toy_root: Path, split: str, toy_config: ToyWorldConfig
) -> None:
    layout = ToyWorldLayout(toy_root)
    records = read_meta(layout, split)
    assert len(records) == toy_config.num_images(split)
    for rec in records:
        objects = rec["objects"]
        assert 1 <= len(objects) <= 3
        mentioned = Counter(" ".join(m) for m in _PAIR.findall(rec["caption"]))
        assert mentioned == Counter(o["name"] for o in objects), rec["caption"]
        # no colour or shape word outside those "colour shape" mentions
        rest = _PAIR.sub(" ", rec["caption"]).split()
        assert not set(rest) & (set(COLOURS) | set(SHAPES)), rec["caption"]

        label = cv2.imread(str(toy_root / rec["sem_seg_file_name"]), cv2.IMREAD_UNCHANGED)
        assert label.shape == (toy_config.image_size, toy_config.image_size) and label.dtype == np.uint8
        ids, counts = np.unique(label, return_counts=True)
        areas = dict(zip(ids.tolist(), counts.tolist()))
        assert set(areas) - {255} == {o["class_id"] for o in objects}
        for o in objects:
            assert areas[o["class_id"]] == o["visible_area"] >= 0.6 * o["area"]


def test_retrieval_split_is_single_object_and_balanced(toy_root: Path) -> None:
    records = read_meta(ToyWorldLayout(toy_root), "retrieval")
    classes = [r["objects"][0]["class_id"] for r in records]
    assert all(len(r["objects"]) == 1 for r in records)
    assert sorted(classes) == list(range(len(CLASS_NAMES)))  # 30 images, one per class


def test_zero_shot_split() -> None:
    assert len(CLASSES) == 30 and len(SEEN_CLASS_IDS) == 24 and len(UNSEEN_CLASS_IDS) == 6
    assert set(SEEN_CLASS_IDS).isdisjoint(UNSEEN_CLASS_IDS)
    seen = [CLASSES[i] for i in SEEN_CLASS_IDS]
    for i in UNSEEN_CLASS_IDS:
        assert any(c.colour == CLASSES[i].colour for c in seen)
        assert any(c.shape == CLASSES[i].shape for c in seen)
