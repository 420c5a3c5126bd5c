#!/usr/bin/env python
"""Build OVSegmentor's cross-image lists from a JSON-lines meta file ({"filename", "caption"} lines).

  python tools/build_cross_image_lists.py --meta-file cc4m.jsonl --output-dir lists/

Writes class_label.json (image basename -> entity class index, the caption's first entity) and
sample_list.json (class index -> [[filename, caption], ...]), one line each as the official loader
reads them. Images whose caption names no entity of the vocabulary are left out (counted).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ovseg_d2.data.image_text.entities import write_cross_image_lists


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meta-file", type=Path, required=True, help="JSON-lines meta file")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder for the two JSON files")
    parser.add_argument("--vocabulary", default="cc4m_entities", help="entity vocabulary (bundled name or JSON file)")
    args = parser.parse_args(argv)
    if not args.meta_file.is_file():
        print(f"error: meta file {args.meta_file} not found", file=sys.stderr)
        return 1
    counts = write_cross_image_lists(args.meta_file, args.output_dir, args.vocabulary)
    print(f"wrote {args.output_dir}/class_label.json ({counts['images']} images) and "
          f"sample_list.json ({counts['classes']} classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
