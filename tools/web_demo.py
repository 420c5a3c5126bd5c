#!/usr/bin/env python
"""A web page to segment your images with your words (Gradio), offline.

  python tools/web_demo.py [--runs output/demo] [--port 7860] [--host 127.0.0.1]
  python tools/web_demo.py --config CONFIG --weights CHECKPOINT [key=value ...]

then open http://127.0.0.1:7860. Upload an image, type the classes (separated by commas, "|" between
synonyms of one class: "cat, dog|puppy, a red car"), choose a model and press "Segment": the page
shows the overlay (image | prediction | legend, as tools/demo.py draws it) and the share of the
image's pixels each class takes, largest first. "min score" leaves pixels whose best class score is
below it unlabeled (0: off; see tools/demo.py --min-score).

Models: every trained stage under --runs (default output/demo, where `make demo` writes; searched
recursively) leaves a `run.json` (ovseg_d2.engine.run_record: name, config, overrides, checkpoint or
null for training-free, dataset); each is one choice. `--config FILE --weights FILE [key=value ...]`
adds any config and checkpoint (real models; `--weights none`: the weights the config builds; no
--weights: its train.init_checkpoint) as the first choice. Models are built when first used and kept
(the last few). When --runs holds a toy world (`toy_world/`) and DETECTRON2_DATASETS is unset, the toy
datasets resolve to it.

Mistakes (no classes, a class named twice, an upload that is not an image, a missing checkpoint, a
broken config) are shown in the page; the server log keeps the traceback of unexpected errors.
tools/web_demo_screenshot.py drives the page in headless Chromium (the README's screenshot).
"""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

# Offline: no usage analytics, no version check, no hub look-ups (set before gradio is imported).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

import ovseg_d2.data  # noqa: E402,F401  (registers the datasets)
from ovseg_d2.checkpoint import NO_WEIGHTS  # noqa: E402
from ovseg_d2.data.toy import DEFAULT_ROOT  # noqa: E402
from ovseg_d2.engine import OpenVocabPredictor, load_config  # noqa: E402
from ovseg_d2.engine.demo_output import segment_image  # noqa: E402
from ovseg_d2.engine.run_record import RUN_RECORD_FILE, RunRecord  # noqa: E402
from ovseg_d2.modeling import Vocabulary  # noqa: E402

AREA_HEADERS = ["class", "% of pixels"]
MODELS_KEPT = 4  # built models kept in memory; the least recently used one is dropped beyond that
logger = logging.getLogger("ovseg_d2.web_demo")


@dataclass(frozen=True)
class ModelChoice:
    """One model of the page: a LazyConfig, its overrides and its checkpoint (None: the config's
    train.init_checkpoint; NO_WEIGHTS: as the config builds it)."""

    label: str
    config: Path
    overrides: tuple[str, ...]
    weights: str | None
    dataset: str | None = None

    def describe(self) -> str:
        weights = "none (training-free / as built)" if self.weights == NO_WEIGHTS else self.weights
        lines = [f"**{self.label}**", f"config `{self.config}`", f"weights `{weights or 'train.init_checkpoint'}`"]
        lines += [f"overrides `{' '.join(self.overrides)}`"] if self.overrides else []
        lines += [f"evaluated on `{self.dataset}`"] if self.dataset else []
        return "  \n".join(lines)


def discover_runs(runs: Path) -> list[ModelChoice]:
    """A ModelChoice per `run.json` under `runs` (recursively, sorted by path); malformed records are
    logged and skipped so that one broken run does not hide the others."""
    choices = []
    for path in sorted(runs.rglob(RUN_RECORD_FILE)):
        try:
            record = RunRecord.read(path)
        except ValueError as err:
            logger.warning("skipping %s", err)
            continue
        choices.append(ModelChoice(
            label=f"{record.name} ({path.parent.relative_to(runs).as_posix()})",
            config=record.config,
            overrides=record.overrides,
            weights=NO_WEIGHTS if record.weights is None else str(record.weights),
            dataset=record.dataset,
        ))
    return choices


@functools.lru_cache(maxsize=MODELS_KEPT)
def load_predictor(config: Path, overrides: tuple[str, ...], weights: str | None) -> OpenVocabPredictor:
    """The model of a choice, built once (failures are not cached: a fixed file is picked up)."""
    if not config.is_file():
        raise FileNotFoundError(f"config {config} not found")
    if weights not in (None, NO_WEIGHTS) and not Path(weights).is_file():
        raise FileNotFoundError(f"checkpoint {weights} not found (moved or deleted? re-run its training)")
    cfg = load_config(str(config), list(overrides))
    return OpenVocabPredictor(cfg, weights)


def segment(
    choice: ModelChoice, image_path: str | None, vocabulary_text: str, min_score: float, image_name: str | None = None
) -> tuple[np.ndarray, list[list[object]]]:
    """The page's action: (overlay, area table rows [class, % of pixels]) for an uploaded image file
    (`image_name`: its name on the user's side) and the typed classes; `min_score` 0 is off. Raises
    ValueError (bad input) or FileNotFoundError (config, checkpoint) with the message to show."""
    if not image_path:
        raise ValueError("no image: upload one first")
    vocabulary = Vocabulary.from_text(vocabulary_text)
    predictor = load_predictor(choice.config, choice.overrides, choice.weights)
    try:
        result = segment_image(predictor, image_path, vocabulary, min_score if min_score > 0 else None)
    except OSError as err:  # the details (a temporary path, Pillow's words) go to the server log only
        logger.warning("unreadable upload %s: %s", image_name, err)
        reason = type(err.__cause__ or err).__name__
        raise ValueError(f"{image_name or Path(image_path).name}: cannot be read as an image ({reason})") from err
    return result.overlay(), [[name, round(area, 2)] for name, area in result.area_table()]


def build_page(choices: Sequence[ModelChoice]) -> gr.Blocks:
    """The page: inputs (image, classes, model, min score) on the left, overlay and areas on the right."""
    by_label = {c.label: c for c in choices}

    def on_segment(upload: dict | None, vocabulary_text: str, label: str, min_score: float):
        """`upload`: the image component's raw payload (see `preprocess=False` below)."""
        try:
            if label not in by_label:
                raise ValueError(f"unknown model {label!r}; choose one of {list(by_label)}")
            path, name = (upload["path"], upload.get("orig_name")) if upload else (None, None)
            return segment(by_label[label], path, vocabulary_text, float(min_score), name)
        except (ValueError, KeyError, OSError) as err:  # the user's input: its message is the answer
            raise gr.Error(str(err).strip("'\""), duration=None) from err
        except Exception as err:  # a bug or a broken model: the message in the page, the traceback in the log
            logger.exception("segmentation failed")
            raise gr.Error(f"{type(err).__name__}: {err} (traceback in the server log)", duration=None) from err

    with gr.Blocks(title="ovseg-d2 web demo") as page:
        gr.Markdown(
            "## ovseg-d2: segment your image with your words\n"
            'Classes are separated by commas, synonyms of one class by `|` (e.g. `cat, dog|puppy, a red car`).'
        )
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(label="image", sources=["upload", "clipboard"], elem_id="image")
                vocabulary = gr.Textbox(label="classes", placeholder="cat, dog|puppy, a red car", elem_id="classes")
                model = gr.Dropdown(
                    choices=list(by_label), value=choices[0].label, label="model", elem_id="model"
                )
                info = gr.Markdown(choices[0].describe(), elem_id="model-info")
                min_score = gr.Slider(0.0, 1.0, value=0.0, step=0.01, label="min score (0: off)", elem_id="min-score")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=3):
                overlay = gr.Image(label="overlay", type="numpy", format="png", interactive=False, elem_id="overlay")
                areas = gr.Dataframe(headers=AREA_HEADERS, label="area per class", interactive=False, elem_id="areas")
        model.change(lambda label: by_label[label].describe(), model, info)
        inputs = [image, vocabulary, model, min_score]
        # Unpreprocessed inputs: Gradio would open the upload itself and answer a non-image with its
        # own internal message; segment() reads it and names the file instead.
        run.click(on_segment, inputs, [overlay, areas], preprocess=False)
        vocabulary.submit(on_segment, inputs, [overlay, areas], preprocess=False)
    return page


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="output/demo", help="folder searched recursively for run.json records")
    parser.add_argument("--config", default=None, help="a LazyConfig to offer first (with --weights)")
    parser.add_argument("--weights", default=None, help=f'its checkpoint ("{NO_WEIGHTS}": as the config builds it)')
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860, help="port to serve on")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value (with --config)")
    args = parser.parse_args(argv)
    if args.opts and args.config is None:
        parser.error(f"config overrides {args.opts} need --config")
    if args.config is not None and not Path(args.config).is_file():
        parser.error(f"--config {args.config}: no such file")
    return args


def model_choices(args: argparse.Namespace) -> list[ModelChoice]:
    """The command line's model (if any) first, then the runs under --runs."""
    runs = Path(args.runs).resolve()
    choices = discover_runs(runs) if runs.is_dir() else []
    if args.config is not None:
        config = Path(args.config).resolve()
        choices.insert(0, ModelChoice(f"{config.name} (command line)", config, tuple(args.opts), args.weights))
    return choices


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s %(name)s %(levelname)s] %(message)s")
    runs = Path(args.runs).resolve()
    if (runs / DEFAULT_ROOT).is_dir():
        os.environ.setdefault("DETECTRON2_DATASETS", str(runs))
    choices = model_choices(args)
    if not choices:
        print(f"no model: no {RUN_RECORD_FILE} under {runs} (run `make demo` first) and no --config", file=sys.stderr)
        return 2
    logger.info("models: %s", ", ".join(c.label for c in choices))
    # System fonts only: the default theme would fetch Google fonts, which an offline machine cannot.
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    build_page(choices).launch(
        server_name=args.host, server_port=args.port, theme=theme, show_error=True, ssr_mode=False, footer_links=[]
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
