"""The "catseg" official-checkpoint converter: key mapping, containers, dtype, error handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import CONVERTER_REGISTRY, convert_checkpoint, get_converter
from ovseg_d2.projects.catseg import CATSeg, convert_catseg_checkpoint, map_official_key

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "catseg"


@pytest.fixture(scope="module")
def official() -> dict:
    return torch.load(GOLDEN / "official_tiny.pth", weights_only=True)["model"]


def test_registered_under_method_name():
    assert "catseg" in CONVERTER_REGISTRY
    assert get_converter("catseg") is convert_catseg_checkpoint


def test_raw_and_wrapped_state_dicts_convert_identically(official):
    raw = convert_catseg_checkpoint(official)
    wrapped = convert_checkpoint("catseg", {"model": official, "iteration": 80000})
    assert raw.keys() == wrapped.keys()
    assert all(torch.equal(raw[k], wrapped[k]) for k in raw)


def test_path_input_and_strict_load(official, tmp_path):
    path = tmp_path / "model_final.pth"
    torch.save({"model": official}, path)
    converted = convert_checkpoint("catseg", str(path))
    model = CATSeg(train_class_names=["a", "b"], clip_model="tiny-vit-p16-w64")
    model.load_state_dict(converted, strict=True)
    q = official["sem_seg_head.predictor.clip_model.visual.transformer.resblocks.2.attn.q_proj_weight"]
    assert torch.equal(model.clip_image.visual.transformer.resblocks[2].attn.q_proj_weight, q)
    pad = official["sem_seg_head.predictor.transformer.layers.1.attention.padding_tokens"]
    assert torch.equal(model.aggregator.layers[1].classes.pad_token, pad.reshape(-1))


def test_key_mapping_examples():
    assert map_official_key("upsample2.bias") == "tap_upsample.1.bias"
    assert map_official_key("sem_seg_head.predictor.transformer.decoder2.conv.double_conv.4.weight") == (
        "aggregator.decoder.stages.1.norm2.weight"
    )
    assert map_official_key("sem_seg_head.predictor.transformer.head.bias") == "aggregator.decoder.predictor.bias"
    assert map_official_key("sem_seg_head.predictor.clip_model.ln_final.weight") == "clip_text.ln_final.weight"
    assert map_official_key("sem_seg_head.predictor.clip_model.logit_scale") is None


def test_unknown_keys_are_errors(official):
    with pytest.raises(KeyError):
        convert_catseg_checkpoint({**official, "sem_seg_head.predictor.transformer.extra.weight": torch.zeros(1)})
    with pytest.raises(KeyError):
        convert_catseg_checkpoint({**official, "backbone.res2.conv1.weight": torch.zeros(1)})


def test_detectron2_checkpointer_loads_official_checkpoint(official, tmp_path):
    """An unconverted official file given to detectron2's checkpointer is converted on load."""
    from detectron2.checkpoint import DetectionCheckpointer

    path = tmp_path / "model_base.pth"
    torch.save({"model": official, "iteration": 79999}, path)
    model = CATSeg(train_class_names=["a", "b"], clip_model="tiny-vit-p16-w64")
    incompatible = model.load_state_dict(official, strict=True)  # plain PyTorch too
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    model = CATSeg(train_class_names=["a", "b"], clip_model="tiny-vit-p16-w64")
    DetectionCheckpointer(model).load(str(path))
    expected = convert_catseg_checkpoint(official)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected.items())
