"""tools/demo.py with configs/tcl/tcl_vitb16_demo.py (tiny CLIP, random weights): free-form queries used
verbatim, short side 224, PAMR at the input resolution, background by `--min-score`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from ovseg_d2.engine import OpenVocabPredictor, load_config
from ovseg_d2.inference.pamr import PAMR
from ovseg_d2.modeling import Vocabulary

REPO = Path(__file__).resolve().parents[2]
CONFIG = str(REPO / "configs/tcl/tcl_vitb16_demo.py")
TINY = ["model.clip_model=tiny-tcl", "train.device=cpu"]
QUERIES = "a photo of Michael Jackson., red banana, the lawn|grass"


def _image(path: Path) -> Path:
    y, x = np.mgrid[0:120, 0:160]
    pixels = np.stack([128 + 100 * np.sin(x / 9), 128 + 100 * np.cos(y / 7), 128 + 60 * np.sin((x + y) / 13)], -1)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def test_demo_queries_pamr_and_background(tmp_path: Path) -> None:
    image = _image(tmp_path / "photo.png")
    predictor = OpenVocabPredictor(load_config(CONFIG, TINY), "none")
    vocabulary = Vocabulary.from_text(QUERIES)
    _, scores = predictor(image, vocabulary)
    assert scores.shape == (3, 120, 160)
    # The queries are encoded verbatim (the "identity" template; a class's first synonym)
    assert predictor.model.text_classifier.templates == ("{}",)
    # PAMR ran at the model's input resolution (224 x 298 here): without it the scores differ
    plain = OpenVocabPredictor(load_config(CONFIG, TINY + ["model.inference.refine=null"]), "none")
    plain.model.load_state_dict(predictor.model.state_dict())
    _, unrefined = plain(image, vocabulary)
    assert (scores - unrefined).abs().max() > 1e-3
    assert isinstance(predictor.model.inference.refine, PAMR)

    spec = importlib.util.spec_from_file_location("ovseg_demo_tcl", REPO / "tools" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    labels = demo.predict_labels(scores, vocabulary, min_score=0.4)
    best = scores.max(0).values.numpy()
    np.testing.assert_array_equal(labels == -1, best < 0.4)  # background iff every query is below 0.4
    code = demo.main(["--config-file", CONFIG, "--weights", "none", "--input", str(image), "--vocabulary", QUERIES,
                      "--output", str(tmp_path / "out"), "--min-score", "0.4", *TINY])
    assert code == 0 and (tmp_path / "out" / "photo.png.png").is_file()
