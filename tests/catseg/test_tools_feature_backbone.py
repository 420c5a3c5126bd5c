"""tools/analyze_model.py, tools/benchmark.py and tools/demo.py with the pre-CVPR (feature-backbone) configs,
shrunk to a tiny CLIP and a tiny R50-shaped backbone (stem 16, base 8) through command-line overrides, and
resized to 384 (the official config: one 384 crop + the global view; the mmseg one: one crop)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg_d2.engine import build_model, load_config

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.clip_model=tiny-vit-p16-w64-l3",
    "model.feature_backbone.depth=50",
    "model.feature_backbone.stem_channels=16",
    "model.feature_backbone.base_channels=8",
    "train.device=cpu",
]
OFFICIAL = str(REPO / "configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff.py")
MMSEG = str(REPO / "configs/catseg/catseg_fb_r101_vitb16_384_coco_stuff_mmseg.py")
OFFICIAL_384 = TINY + ["model.sliding_resize=[384,384]"]
MMSEG_384 = TINY + ["dataloader.test.mapper.augmentations.0.scale=[384,384]"]


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"ovseg_tool_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analyze_model_counts_the_feature_backbone_model(capsys):
    assert _tool("analyze_model").main(
        ["--config-file", OFFICIAL, "--height", "64", "--width", "80", "--num-classes", "3", *OFFICIAL_384]
    ) == 0
    table = capsys.readouterr().out
    model = build_model(load_config(OFFICIAL, OFFICIAL_384))
    backbone = sum(p.numel() for p in model.feature_backbone.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert re.search(rf"\| parameters\s+\| {total:,} \|", table)
    assert re.search(rf"\| trainable parameters\s+\| {trainable:,} \|", table)
    assert backbone > 0 and trainable < total  # the text tower is frozen, the backbone trains
    # two 384 views: the backbone, cost embedding and decoder convolutions dominate the CLIP linears
    flops = dict(re.findall(r"\|\s+(\S+)\s+\|\s+([\d.]+)\s+\|", table))
    assert float(flops["conv"]) > float(flops["linear"]) > 0


def test_benchmark_runs_the_mmseg_pipeline(capsys):
    assert _tool("benchmark").main(
        ["--config-file", MMSEG, "--height", "384", "--width", "384", "--num-classes", "3", "--warmup", "0",
         "--runs", "2", "--threads", "1", *MMSEG_384]
    ) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out[captured.out.index("{") :])
    setting = (report["config"], report["device"], report["image"], report["num_classes"])
    assert setting == (MMSEG, "cpu x1", [384, 384], 3)
    assert report["peak_memory_mb"] > 0
    # each forward's time is shown as it ends; with no warm-up the timed run includes the text encoding
    runs = re.findall(r"^run (\d)/2: (\d+\.\d+) s( \(with the vocabulary's text encoding\))?$", captured.err, re.M)
    assert [(i, bool(note)) for i, _, note in runs] == [("1", True), ("2", False)]
    assert report["seconds_per_image"] == pytest.approx(np.mean([float(s) for _, s, _ in runs]), abs=0.01)


def test_demo_writes_an_overlay(tmp_path: Path, capsys):
    image = tmp_path / "photo.png"
    y, x = np.mgrid[0:60, 0:80]
    Image.fromarray(np.stack([x * 3, y * 4, (x + y) * 2], -1).astype(np.uint8)).save(image)
    code = _tool("demo").main(
        ["--config-file", OFFICIAL, "--weights", "none", "--input", str(image), "--vocabulary", "sky, grass|lawn",
         "--output", str(tmp_path / "out"), *OFFICIAL_384]
    )
    assert code == 0 and (tmp_path / "out" / "photo.png.png").is_file()
    found = re.search(r"photo\.png: (.*) -> ", capsys.readouterr().out).group(1).split(", ")
    assert found and set(found) <= {"sky", "grass"}  # the vocabulary's names, synonyms merged

