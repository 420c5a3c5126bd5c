#!/usr/bin/env python
"""Segment images with a free-text vocabulary and write Detectron2 Visualizer overlays.

  python tools/demo.py --config-file configs/catseg/catseg_vitb16_384_coco_stuff.py \
      --weights catseg_vitb16.pth --input photos/ --vocabulary "cat, dog|puppy, a red car" \
      --output demo_out/

`--input` takes image files, folders (all .jpg/.jpeg/.png inside) or glob patterns. Classes in
`--vocabulary` are separated by commas; "|" separates synonyms of one class. Without
`--vocabulary`, the first test dataset's class names are used. Trailing `key=value` arguments
override the config (e.g. `train.device=cpu`).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.data.metadata import prompt_classes
from ovseg_d2.engine import OpenVocabPredictor, load_config, parse_vocabulary
from ovseg_d2.utils.visualization import draw_sem_seg_overlay, save_side_by_side

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


def collect_images(inputs: list[str]) -> list[Path]:
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
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help="checkpoint (default: train.init_checkpoint)")
    parser.add_argument("--input", nargs="+", required=True, help="image files, folders or globs")
    parser.add_argument("--vocabulary", default=None, help='e.g. "cat, dog|puppy, a red car"')
    parser.add_argument("--output", required=True, help="folder for the overlays")
    parser.add_argument("--alpha", type=float, default=0.6, help="overlay opacity")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides key=value")
    args = parser.parse_args(argv)

    cfg = load_config(args.config_file, args.opts)
    if args.vocabulary:
        vocabulary = parse_vocabulary(args.vocabulary)
    else:
        vocabulary = prompt_classes(cfg.dataloader.test_datasets[0])
    names = [v.split(", ")[0] for v in vocabulary]
    images = collect_images(args.input)
    predictor = OpenVocabPredictor(cfg, args.weights or cfg.train.init_checkpoint or None)
    output = Path(args.output)
    for path in tqdm(images, desc="demo", unit="img"):
        image, scores = predictor(path, vocabulary)
        labels = scores.argmax(0).numpy()
        overlay = draw_sem_seg_overlay(image, labels, names, alpha=args.alpha)
        target = output / f"{path.stem}_overlay.png"
        save_side_by_side(image, overlay, path=target)
        found = [names[i] for i in np.unique(labels)]
        tqdm.write(f"{path.name}: {', '.join(found)} -> {target}")
    print(f"wrote {len(images)} overlays to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
