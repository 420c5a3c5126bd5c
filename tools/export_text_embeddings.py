#!/usr/bin/env python
"""Write the class text embeddings of a vocabulary, computed with our CLIP text tower, to a file for
`ovseg_d2.modeling.PrecomputedTextClassifier` (Cascade-CLIP's recipe: fixed embeddings per dataset).

  python tools/export_text_embeddings.py --clip-model ViT-B-16 --clip-weights ViT-B-16.pt \
      --vocabulary ovseg_pc59_val --templates imagenet80 --template-reduce normalize_then_mean \
      --output pc59_text.pth

`--vocabulary` is a registered dataset name (its prompts), a bundled vocabulary name or a JSON list.
The file holds {"class_names": prompt entries, "embeddings": (C, E) float32}.
"""

from __future__ import annotations

import argparse
import sys

from detectron2.data import DatasetCatalog

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.clip import CLIPTextTower, build_clip, get_templates, get_tokenizer
from ovseg_d2.data.vocab import load_vocabulary
from ovseg_d2.modeling import CLIPTextClassifier, Vocabulary, export_text_embeddings
from ovseg_d2.modeling.text_classifiers import SYNONYM_MODES, TEMPLATE_REDUCTIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip-model", required=True, help="open_clip config name or ours")
    parser.add_argument("--clip-weights", default=None, help="OpenAI .pt or open_clip checkpoint")
    parser.add_argument("--vocabulary", required=True, help="dataset name, vocabulary name or JSON file")
    parser.add_argument("--templates", default="simple", help="template set (ovseg_d2/clip/templates)")
    parser.add_argument("--synonyms", choices=SYNONYM_MODES, default="first")
    parser.add_argument("--template-reduce", choices=TEMPLATE_REDUCTIONS, default="normalize_then_mean")
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)

    if args.vocabulary in DatasetCatalog.list():
        vocabulary = Vocabulary.from_metadata(args.vocabulary)
    else:
        vocabulary = Vocabulary.from_entries(load_vocabulary(args.vocabulary), source=args.vocabulary)
    clip = build_clip(args.clip_model, args.clip_weights).eval().requires_grad_(False)
    classifier = CLIPTextClassifier(
        CLIPTextTower(clip, get_tokenizer(args.clip_model)),
        get_templates(args.templates),
        synonyms=args.synonyms,
        template_reduce=args.template_reduce,
    )
    export_text_embeddings(classifier, vocabulary, args.output)
    print(f"wrote {len(vocabulary)} class embeddings of {vocabulary.source} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
