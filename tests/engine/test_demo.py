"""tools/demo.py writes Visualizer overlays for images and a free-text vocabulary."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg_d2.engine import parse_vocabulary

REPO = Path(__file__).resolve().parents[2]


def _load_demo():
    spec = importlib.util.spec_from_file_location("ovseg_demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_vocabulary() -> None:
    assert parse_vocabulary("cat, dog|puppy , a red car") == ["cat", "dog, puppy", "a red car"]
    with pytest.raises(ValueError, match="empty"):
        parse_vocabulary("cat,,dog")
    with pytest.raises(ValueError, match="duplicate"):
        parse_vocabulary("cat, cat")


def test_demo_writes_overlays(tmp_path: Path, tiny_baseline_overrides: list[str]) -> None:
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(48, 64), (64, 40)]):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    out = tmp_path / "out"
    demo = _load_demo()
    code = demo.main(
        ["--config-file", str(REPO / "configs/toy/dense_baseline.py"), "--input", str(images),
         "--vocabulary", "cat, dog|puppy, a red car", "--output", str(out),
         *tiny_baseline_overrides]
    )
    assert code == 0
    for i, (h, w) in enumerate([(48, 64), (64, 40)]):
        mosaic = np.asarray(Image.open(out / f"img{i}_overlay.png"))
        assert mosaic.shape == (h, 2 * w, 3)  # image | overlay
        assert not np.array_equal(mosaic[:, :w], mosaic[:, w:])  # something was drawn
