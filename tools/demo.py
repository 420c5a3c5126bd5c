#!/usr/bin/env python
"""Segment images with a free-text vocabulary and write overlays (image | prediction | legend).

  python tools/demo.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py \
      --weights catseg_vitb16.pth --input photos/ --vocabulary "cat, dog|puppy, a red car" \
      --output demo_out/

`--input` takes image files, folders (all .jpg/.jpeg/.png inside) or glob patterns. Classes in
`--vocabulary` are separated by commas; "|" separates synonyms of one class; an empty vocabulary or a
name given twice ("cat|kitty, cat") is an error. Without `--vocabulary`, the first test dataset's
vocabulary is used (with the model's `vocabulary_overrides`). Trailing `key=value` arguments
override the config (e.g. `train.device=cpu`).

Each image gets OUTPUT/<its path relative to the images' common folder>.png (a/photo.jpg ->
OUTPUT/a/photo.jpg.png), so same-named images in different folders never overwrite each other. The
legend lists every class found with its colour and area %. Every class takes the pixels where it
scores best, so a one-class vocabulary paints the whole image: `--min-score S` leaves pixels whose
best score is below S unlabeled (drawn as the image, "unlabeled" in the legend). An unreadable image
is reported by name and skipped; the demo exits with status 1 after processing all the others.
Loading the weights is strict (see README); `--weights none` runs the model as the config builds it.
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from tqdm import tqdm

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.engine import OpenVocabPredictor, load_config
from ovseg_d2.engine.demo_output import predict_labels, segment_image  # noqa: F401  (tests: predict_labels)
from ovseg_d2.modeling import Vocabulary
from ovseg_d2.utils.visualization import save_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def collect_images(inputs: list[str]) -> list[Path]:
    """Every image named by `inputs` (files, folders searched recursively, glob patterns), once each."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths += sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            paths.append(path)
        else:
            matches = sorted(Path(p) for p in glob.glob(item))
            if not matches:
                raise FileNotFoundError(f"no image found for --input {item!r}")
            paths += matches
    if not paths:
        raise FileNotFoundError(f"no image ({', '.join(sorted(IMAGE_SUFFIXES))}) found in --input {inputs}")
    return list(dict.fromkeys(p.resolve() for p in paths))


def output_paths(images: list[Path], output: Path) -> list[Path]:
    """One overlay per image, at the image's path relative to the images' common folder with
    ".png" appended (a/photo.jpg -> OUTPUT/a/photo.jpg.png): unique for distinct inputs."""
    root = Path(os.path.commonpath([p.parent for p in images]))
    return [output / p.relative_to(root).with_name(p.name + ".png") for p in images]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument(
        "--weights", default=None, help='checkpoint (default: train.init_checkpoint); "none": no weights'
    )
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or globs")
    parser.add_argument("--vocabulary", default=None, help='e.g. "cat, dog|puppy, a red car"')
    parser.add_argument("--output", required=True, help="folder for the overlays")
    parser.add_argument("--alpha", type=float, default=0.6, help="overlay opacity")
    parser.add_argument(
        "--min-score", type=float, default=None,
        help="leave pixels whose best class score is below this unlabeled (the model's test scores: "
        "CAT-Seg sigmoid, the dense baseline softmax, in [0, 1])",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    # An empty --vocabulary is an error (Vocabulary.from_text), not a fallback to the dataset's classes.
    vocabulary = Vocabulary.from_text(args.vocabulary) if args.vocabulary is not None else None
    images = collect_images(args.input)
    targets = output_paths(images, Path(args.output))
    predictor = OpenVocabPredictor(cfg, args.weights)
    if vocabulary is None:
        vocabulary = predictor.model.vocabulary_for(cfg.dataloader.test_datasets[0])
    failures: list[str] = []
    written = 0
    for path, target in zip(tqdm(images, desc="demo", unit="img"), targets):
        try:
            result = segment_image(predictor, path, vocabulary, args.min_score)
        except OSError as err:  # unreadable image: report it, go on with the others
            failures.append(str(err) if str(path) in str(err) else f"{path}: {err}")
            tqdm.write(f"FAILED {failures[-1]}")
            continue
        save_image(result.overlay(args.alpha), target)
        written += 1
        found = [name for name, area in result.area_table() if area > 0]
        tqdm.write(f"{path}: {', '.join(found)} -> {target}")
    print(f"wrote {written} overlays to {args.output}")
    if failures:
        print(f"{len(failures)} of {len(images)} images failed:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
