"""tools/demo.py: overlays for images and a free-text vocabulary; unique output names, every readable
image processed when one is broken, `--min-score`."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ovseg_d2.modeling import Vocabulary

REPO = Path(__file__).resolve().parents[2]


def _load_demo():
    spec = importlib.util.spec_from_file_location("ovseg_demo", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_demo()


def _write(path: Path, size: tuple[int, int], seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def _run(inputs: list[Path], out: Path, overrides: list[str], *extra: str) -> int:
    return demo.main(
        ["--config-file", str(REPO / "configs/toy/dense_baseline.py"), "--input", *map(str, inputs),
         "--vocabulary", "cat, dog|puppy, a red car", "--output", str(out), "--weights", "none", *extra,
         *overrides]
    )


def test_same_named_images_in_different_folders_get_one_overlay_each(
    tmp_path: Path, tiny_baseline_overrides: list[str], capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    sources = [_write(images / "a" / "photo.jpg", (48, 64), 0), _write(images / "b" / "photo.png", (64, 40), 1),
               _write(images / "b" / "photo.jpg", (40, 40), 2)]
    out = tmp_path / "out"
    assert _run([images], out, tiny_baseline_overrides) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a/photo.jpg.png", "b/photo.jpg.png", "b/photo.png.png"]
    assert "wrote 3 overlays" in capsys.readouterr().out
    for source in sources:
        h, w = Image.open(source).size[::-1]
        mosaic = np.asarray(Image.open(out / source.relative_to(images).with_name(source.name + ".png")))
        scale = math.ceil(384 / min(h, w))  # small images are drawn with a short side >= 384 px
        assert mosaic.shape[0] >= h * scale and mosaic.shape[1] > 2 * w * scale  # image | overlay | legend
        side_h, side_w = h * scale, w * scale
        image_panel, overlay_panel = mosaic[:side_h, :side_w], mosaic[:side_h, side_w + 4: 2 * side_w + 4]
        source_image = np.asarray(Image.open(source).convert("RGB"))
        np.testing.assert_array_equal(image_panel, source_image.repeat(scale, 0).repeat(scale, 1))
        assert not np.array_equal(image_panel, overlay_panel)  # something was drawn


def test_a_truncated_image_is_reported_and_the_others_are_written(
    tmp_path: Path, tiny_baseline_overrides: list[str], capsys: pytest.CaptureFixture
) -> None:
    images = tmp_path / "images"
    _write(images / "1_good.png", (48, 48), 0)
    broken = _write(images / "2_broken.jpg", (48, 48), 1)
    broken.write_bytes(broken.read_bytes()[:300])
    _write(images / "3_good.png", (48, 48), 2)
    out = tmp_path / "out"
    assert _run([images], out, tiny_baseline_overrides) == 1
    assert sorted(p.name for p in out.glob("*.png")) == ["1_good.png.png", "3_good.png.png"]
    captured = capsys.readouterr()
    assert "wrote 2 overlays" in captured.out
    assert "1 of 3 images failed" in captured.err and str(broken) in captured.err


def test_a_folder_without_images_is_an_error(tmp_path: Path, tiny_baseline_overrides: list[str]) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image"):
        _run([tmp_path / "empty"], tmp_path / "out", tiny_baseline_overrides)


def test_min_score_leaves_low_scoring_pixels_unlabeled() -> None:
    """Prompts 0, 1 fold into class 0 and prompt 2 into class 1 (the evaluator's folding); the best
    scores are 0.9, 0.3, 0.6, 0.2 in the four pixels."""
    scores = torch.tensor([
        [[0.9, 0.1], [0.1, 0.2]],
        [[0.1, 0.3], [0.5, 0.1]],
        [[0.0, 0.2], [0.6, 0.1]],
    ])
    vocabulary = Vocabulary(entries=("cat", "kitty", "dog"), class_names=("cat", "dog"), prompt_to_class=(0, 0, 1))
    np.testing.assert_array_equal(demo.predict_labels(scores, vocabulary, None), [[0, 0], [1, 0]])
    np.testing.assert_array_equal(demo.predict_labels(scores, vocabulary, 0.5), [[0, -1], [1, -1]])


def test_min_score_above_every_score_leaves_the_image_undrawn(
    tmp_path: Path, tiny_baseline_overrides: list[str]
) -> None:
    """A one-class vocabulary paints every pixel; with `--min-score` above every (softmax) score no
    pixel is labeled: the overlay panel is the image itself."""
    source = _write(tmp_path / "images" / "photo.png", (48, 48), 0)
    out = tmp_path / "out"
    code = demo.main(
        ["--config-file", str(REPO / "configs/toy/dense_baseline.py"), "--input", str(source),
         "--vocabulary", "cat", "--output", str(out), "--weights", "none", "--min-score", "1.01",
         *tiny_baseline_overrides]
    )
    assert code == 0
    mosaic = np.asarray(Image.open(out / "photo.png.png"))
    side = 48 * 8  # upscaled to 384
    np.testing.assert_array_equal(mosaic[:side, side + 4: 2 * side + 4], mosaic[:side, :side])
