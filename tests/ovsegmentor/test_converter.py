"""The "ovsegmentor" converter: CLI, strict loading into each stage's model, dropped and missing keys."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import ModelCheckpointer, convert_checkpoint, get_converter
from ovseg_d2.projects.ovsegmentor import convert_ovsegmentor_checkpoint

from .conftest import GOLDEN, tiny_ovsegmentor

REPO = Path(__file__).resolve().parents[2]


def _convert_cli(argv: list[str]) -> int:
    spec = importlib.util.spec_from_file_location("_convert_checkpoint_cli", REPO / "tools" / "convert_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def test_cli_output_loads_strictly_into_the_stage2_model(tmp_path: Path, official_checkpoint) -> None:
    out = tmp_path / "ovsegmentor_tiny.pth"
    assert _convert_cli(["--method", "ovsegmentor", "--input", str(GOLDEN / "official_tiny.pth"), "--output", str(out)]) == 0
    model = tiny_ovsegmentor(2)
    ModelCheckpointer(model, strict=True).load(str(out))  # raises on any missing / unexpected key
    official = official_checkpoint["model"]
    block = official["img_encoder.layers.1.blocks.0.attn.qkv.weight"]  # stage-1 block 0 = our block 2
    assert torch.equal(model.image_encoder.visual.blocks[2].attn.qkv.weight, block)
    assert torch.equal(model.image_encoder.visual.pos_embed[0], official["img_encoder.pos_embed"])
    conv = official["bridge_projector.linear_out.weight"]
    assert torch.equal(model.entity_projector.fc2.weight, conv[..., 0])
    assert bool(model.momentum_synced)  # the released momentum encoder is kept, not re-copied


def test_stage1_checkpoint_converts_for_the_stage1_model(official_checkpoint, caplog) -> None:
    stage1 = {k: v for k, v in official_checkpoint["model"].items()
              if not k.startswith(("img_encoder_momentum.", "logit_scale_mask"))}
    with caplog.at_level(logging.INFO):
        converted = convert_checkpoint("ovsegmentor", {"model": stage1})
    tiny_ovsegmentor(1).load_state_dict(converted, strict=True)
    assert "momentum_synced" not in converted
    assert "dropped 2 (BERT pooler, unused)" in caplog.text
    assert "entity-head assignment module, never called" in caplog.text


def test_missing_official_key_is_named(official_checkpoint) -> None:
    broken = dict(official_checkpoint["model"])
    del broken["img_encoder.layers.0.downsample.assign.k_proj.bias"]
    with pytest.raises(ValueError, match="assign.k_proj.bias"):
        get_converter("ovsegmentor")(broken)


def test_unknown_key_is_an_error(official_checkpoint) -> None:
    extra = {**official_checkpoint["model"], "img_encoder.layers.2.blocks.0.norm1.weight": torch.ones(64)}
    with pytest.raises(KeyError, match="layers.2"):
        convert_ovsegmentor_checkpoint(extra)
