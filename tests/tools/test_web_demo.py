"""tools/web_demo.py: run.json discovery, the page's action (image + classes -> overlay + area table)
and its errors, and the page itself served on a free port and driven in headless Chromium.

The model is the dense baseline with a tiny randomly initialised CLIP (no trained run needed), listed
through a run.json written by the test, as `make demo` writes them."""
from __future__ import annotations

import importlib.util
import io
import json
import logging
import math
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright

from ovseg_d2.engine import OpenVocabPredictor
from ovseg_d2.engine.demo_output import DemoSegmentation
from ovseg_d2.modeling import Vocabulary

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/toy/dense_baseline.py"
TINY = ["model.clip_model=tiny-vit-p16-w64", "model.clip_resolution=[64,64]", "train.device=cpu"]
CLASSES = "cat, dog|puppy, a red car"
CLASS_NAMES = ["cat", "dog", "a red car"]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


web_demo = _load("web_demo")
browser = _load("web_demo_screenshot")


def _write_run(folder: Path, name: str, overrides: list[str] = TINY, weights: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "config": CONFIG, "overrides": overrides, "weights": weights, "dataset": "toy_val"}
    (folder / "run.json").write_text(json.dumps(record))
    return folder / "run.json"


def _image(path: Path, height: int = 48, width: int = 64) -> Path:
    """Four flat quadrants of distinct colours."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[: height // 2, : width // 2] = (220, 30, 30)
    pixels[: height // 2, width // 2:] = (30, 200, 30)
    pixels[height // 2:, : width // 2] = (30, 30, 220)
    pixels[height // 2:, width // 2:] = (230, 230, 40)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    _write_run(root / "baseline" / "seed0", "tiny baseline")
    _write_run(root / "other", "tiny baseline, training-free", TINY + ["model.head=none"])
    return root


def test_runs_are_discovered_recursively_and_a_broken_record_is_skipped_with_a_warning(
    runs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "runs"
    _write_run(root / "a" / "deep" / "run1", "first", weights="/ckpt/model_final.pth")
    (root / "b").mkdir()
    (root / "b" / "run.json").write_text(json.dumps({"name": "no config"}))
    with caplog.at_level(logging.WARNING, logger="ovseg_d2.web_demo"):
        choices = web_demo.discover_runs(root)
    assert [(c.label, c.config, c.overrides, c.weights) for c in choices] == [
        ("first (a/deep/run1)", REPO / CONFIG, tuple(TINY), "/ckpt/model_final.pth")
    ]
    assert str(root / "b" / "run.json") in caplog.text and "'config'" in caplog.text
    # A null checkpoint is a training-free model: built as the config builds it.
    assert [c.weights for c in web_demo.discover_runs(runs)] == ["none", "none"]


def test_segment_returns_the_overlay_and_every_class_area_largest_first(runs: Path, tmp_path: Path) -> None:
    image = _image(tmp_path / "photo.png")
    choice = web_demo.discover_runs(runs)[0]
    overlay, table = web_demo.segment(choice, str(image), CLASSES, 0.0)

    # The expected areas, from the raw scores of the same (cached, randomly initialised) model:
    # argmax per pixel; each prompt is its own class here.
    predictor = web_demo.load_predictor(choice.config, choice.overrides, choice.weights)
    assert isinstance(predictor, OpenVocabPredictor)
    assert web_demo.load_predictor(choice.config, choice.overrides, choice.weights) is predictor  # built once
    _, scores = predictor(image, Vocabulary.from_text(CLASSES))
    counts = np.bincount(scores.argmax(0).numpy().ravel(), minlength=3)
    expected = sorted(zip(CLASS_NAMES, 100 * counts / counts.sum(), strict=True), key=lambda row: -row[1])
    assert [name for name, _ in table] == [name for name, _ in expected]
    np.testing.assert_allclose([area for _, area in table], [area for _, area in expected], atol=0.01)

    # image | overlay | legend, upscaled 8x (short side 48 -> 384 px)
    source = np.asarray(Image.open(image).convert("RGB")).repeat(8, 0).repeat(8, 1)
    assert overlay.shape[0] >= 384 and overlay.shape[1] > 2 * 512
    np.testing.assert_array_equal(overlay[:384, :512], source)
    assert (overlay[:384, 516:1028] != source).any(axis=-1).mean() > 0.5  # the prediction is drawn over it


def test_min_score_above_every_score_leaves_the_image_unlabeled(runs: Path, tmp_path: Path) -> None:
    """The dense baseline's scores are a softmax over the vocabulary: none reaches 1."""
    image = _image(tmp_path / "photo.png")
    _, table = web_demo.segment(web_demo.discover_runs(runs)[0], str(image), CLASSES, 1.0)
    assert table == [["cat", 0.0], ["dog", 0.0], ["a red car", 0.0], ["unlabeled", 100.0]]


def test_area_table_counts_pixels_and_lists_unlabeled_last() -> None:
    labels = np.array([[1, 1, 1, 0], [0, -1, 1, 2]])
    result = DemoSegmentation(np.zeros((2, 4, 3), np.uint8), labels, ("cat", "dog", "car", "bird"))
    assert result.area_table() == [("dog", 50.0), ("cat", 25.0), ("car", 12.5), ("bird", 0.0), ("unlabeled", 12.5)]


@pytest.mark.parametrize(
    "classes, message",
    [(" ", "the vocabulary is empty"), ("cat|kitty, cat", "duplicate class names"), ("cat,, dog", "empty class")],
)
def test_bad_vocabularies_are_errors_with_their_reason(runs: Path, tmp_path: Path, classes: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        web_demo.segment(web_demo.discover_runs(runs)[0], str(_image(tmp_path / "p.png")), classes, 0.0)


def test_an_upload_that_is_not_an_image_is_named_in_the_error(runs: Path, tmp_path: Path) -> None:
    upload = tmp_path / "upload_0001"
    upload.write_text("not an image")
    with pytest.raises(ValueError, match=r"^notes\.txt: cannot be read as an image \(UnidentifiedImageError\)$"):
        web_demo.segment(web_demo.discover_runs(runs)[0], str(upload), "cat", 0.0, image_name="notes.txt")
    with pytest.raises(ValueError, match="no image"):
        web_demo.segment(web_demo.discover_runs(runs)[0], None, "cat", 0.0)


def test_missing_checkpoint_missing_config_and_bad_override_are_errors(tmp_path: Path) -> None:
    image = str(_image(tmp_path / "p.png"))
    missing = tmp_path / "gone" / "model_final.pth"
    choice = web_demo.ModelChoice("x", REPO / CONFIG, tuple(TINY), str(missing))
    with pytest.raises(FileNotFoundError, match=f"checkpoint {missing} not found"):
        web_demo.segment(choice, image, "cat", 0.0)
    choice = web_demo.ModelChoice("x", tmp_path / "nope.py", (), "none")
    with pytest.raises(FileNotFoundError, match="nope.py not found"):
        web_demo.segment(choice, image, "cat", 0.0)
    choice = web_demo.ModelChoice("x", REPO / CONFIG, (*TINY, "model.clip_modle=x"), "none")
    with pytest.raises(KeyError, match="clip_modle"):
        web_demo.segment(choice, image, "cat", 0.0)


def test_a_command_line_config_is_the_first_choice(runs: Path, tmp_path: Path) -> None:
    args = web_demo.parse_args(["--runs", str(runs), "--config", str(REPO / CONFIG), "--weights", "none", *TINY])
    choices = web_demo.model_choices(args)
    assert [c.label for c in choices] == [
        "dense_baseline.py (command line)", "tiny baseline (baseline/seed0)", "tiny baseline, training-free (other)"
    ]
    assert (choices[0].config, choices[0].overrides, choices[0].weights) == (REPO / CONFIG, tuple(TINY), "none")
    _, table = web_demo.segment(choices[0], str(_image(tmp_path / "p.png")), "cat, dog", 0.0)
    assert sorted(name for name, _ in table) == ["cat", "dog"]


def test_without_any_model_the_command_says_how_to_get_one(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert web_demo.main(["--runs", str(tmp_path)]) == 2
    assert "make demo" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        web_demo.main(["--runs", str(tmp_path), "model.head=none"])  # overrides need --config
    assert "need --config" in capsys.readouterr().err


def test_the_page_segments_an_uploaded_image_in_headless_chromium(runs: Path, tmp_path: Path) -> None:
    if browser.chromium_path() is None:
        if os.geteuid() == 0:
            pytest.fail("no Chromium although running as root: tools/install_env.sh installs it "
                        "(apt-get install chromium)", pytrace=False)
        pytest.skip("no Chromium (/usr/bin/chromium) and not root to install it: sudo apt-get install chromium")

    image = _image(tmp_path / "toy.png")
    model = "tiny baseline, training-free (other)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with browser.serve_web_demo(["--runs", str(runs)], tmp_path / "server.log", env) as url, sync_playwright() as p:
        chromium = browser.launch_chromium(p)
        page = chromium.new_page()
        browser.segment_in_page(page, url, image, CLASSES, model)
        overlay = page.wait_for_selector("#overlay img", timeout=browser.SEGMENT_TIMEOUT_MS)
        assert model in page.inner_text("#model-info")
        drawn = np.asarray(Image.open(io.BytesIO(page.request.get(overlay.get_attribute("src")).body())).convert("RGB"))
        source = np.asarray(Image.open(image)).repeat(8, 0).repeat(8, 1)  # short side 48 -> 384 px
        assert drawn.shape[0] >= 384 and drawn.shape[1] > 2 * 512
        np.testing.assert_array_equal(drawn[:384, :512], source)  # lossless: PNG, not Gradio's default WebP
        assert (drawn[:384, 516:1028] != source).any(axis=-1).mean() > 0.5
        page.wait_for_function("document.querySelector('#areas').innerText.includes('a red car')")
        rows = page.inner_text("#areas")
        assert all(name in rows for name in CLASS_NAMES) and "% of pixels" in rows
        areas = [float(x) for x in rows.split() if x.replace(".", "", 1).isdigit()]
        assert len(areas) == 3 and math.isclose(sum(areas), 100.0, abs_tol=0.05)

        browser.segment_in_page(page, url, image, "  ")
        page.wait_for_selector("text=the vocabulary is empty", timeout=30_000)
        notes = tmp_path / "notes.png"
        notes.write_text("not an image")
        browser.segment_in_page(page, url, notes, "cat")
        page.wait_for_selector("text=notes.png: cannot be read as an image", timeout=30_000)
        assert "Traceback" not in page.inner_text("body")
        chromium.close()
