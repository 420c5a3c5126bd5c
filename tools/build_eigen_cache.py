#!/usr/bin/env python
"""Compute the spectral eigenvectors (Deep Spectral Methods) of every image of registered datasets and
store them in an `ovseg_d2.data.spectral.EigenSegmentCache` folder (one `<image stem>.npz` per image).
Images already in the cache are skipped, so an interrupted run continues where it stopped.

  python tools/build_eigen_cache.py --dataset ovseg_pascal5i_fold0_val --output eigs/pascal \
      --model vit_base_patch8_224.dino --weights dino_vitbase8_pretrain.pth --num-eigenvectors 5

Features: keys of the last attention block of the timm ViT `--model` (a self-supervised one: DINO), on
the image normalised with ImageNet statistics and cropped top-left to multiples of the patch size.
`--weights none` keeps the random initialisation (tests only). `--model-kwargs` (JSON) is passed to
`timm.create_model` (e.g. a tiny ViT for tests). `--clip-model` uses a CLIP image tower instead (OpenAI
statistics), e.g. the toy world's tiny CLIP:

  python tools/build_eigen_cache.py --dataset toy_val --output output/toy/sazs_eigs \
      --clip-model configs/toy/tiny_clip.json --weights tiny_clip.pt
"""
from __future__ import annotations

import argparse
import json
import sys

import timm
import torch
from detectron2.data import DatasetCatalog
from tqdm import tqdm

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.checkpoint import load_checkpoint_file
from ovseg_d2.clip import IMAGENET_MEAN, IMAGENET_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, CLIPVisionTower, TimmViTTower, build_clip
from ovseg_d2.data.mappers import read_image
from ovseg_d2.data.spectral import EigenSegmentCache, ViTKeyFeatures, image_eigenvectors


def build_extractor(model: str, weights: str, model_kwargs: dict) -> ViTKeyFeatures:
    vit = timm.create_model(model, pretrained=False, num_classes=0, **model_kwargs)
    if weights != "none":
        state = load_checkpoint_file(weights)
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
        missing, unexpected = vit.load_state_dict(state, strict=False)
        if missing:
            raise KeyError(f"{weights} does not fit timm {model}: missing {missing[:4]} ({len(missing)} keys)")
    return ViTKeyFeatures(TimmViTTower(vit.eval(), pos_interpolation="bicubic"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", nargs="+", required=True, help="registered dataset name(s)")
    parser.add_argument("--output", required=True, help="cache folder")
    parser.add_argument("--model", default="vit_small_patch16_224.dino", help="timm ViT name")
    parser.add_argument("--weights", required=True, help="timm/DINO checkpoint of --model, or 'none'")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments of timm.create_model")
    parser.add_argument("--clip-model", default=None, help="use this CLIP's image tower (open_clip config) instead")
    parser.add_argument("--num-eigenvectors", type=int, default=5)
    args = parser.parse_args(argv)

    if args.clip_model:
        clip = build_clip(args.clip_model, None if args.weights == "none" else args.weights).eval()
        extractor, stats = ViTKeyFeatures(CLIPVisionTower(clip.visual)), (OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    else:
        extractor = build_extractor(args.model, args.weights, json.loads(args.model_kwargs))
        stats = (IMAGENET_MEAN, IMAGENET_STD)
    cache = EigenSegmentCache(args.output, args.num_eigenvectors)
    files = list(dict.fromkeys(r["file_name"] for name in args.dataset for r in DatasetCatalog.get(name)))
    todo = [f for f in files if not cache.has(f)]
    print(f"{len(files)} images, {len(files) - len(todo)} already cached in {args.output}")
    mean, std = (torch.tensor(s).view(3, 1, 1) for s in stats)
    for file_name in tqdm(todo, desc="eigenvectors", unit="img"):
        image = torch.from_numpy(read_image(file_name, "RGB").copy()).permute(2, 0, 1).float()
        values, vectors = image_eigenvectors(extractor, (image - mean) / std, args.num_eigenvectors)
        cache.save(file_name, values, vectors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
