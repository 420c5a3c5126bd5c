"""The "catseg" official-checkpoint converter: key mapping, containers, dtype, error handling."""

from __future__ import annotations

import argparse
import importlib.util
import logging
from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import (
    CONVERTER_REGISTRY,
    ModelCheckpointer,
    UnsafeCheckpointError,
    convert_checkpoint,
    get_converter,
)
from ovseg_d2.projects.catseg import CATSeg, convert_catseg_checkpoint, map_official_key

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "fixtures" / "golden" / "catseg"


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


# ----------------------------------------------------------------------------- nothing silent


def _tool():
    spec = importlib.util.spec_from_file_location("_ovseg_convert_tool", REPO / "tools" / "convert_checkpoint.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_incomplete_official_checkpoint_fails_naming_the_missing_keys(official, tmp_path, capsys):
    # Observed: with 20 decoder keys removed, 279 of 299 tensors converted "successfully".
    removed = [k for k in official if k.startswith("sem_seg_head.predictor.transformer.decoder")]
    assert len(removed) == 20
    path = tmp_path / "model_base.pth"
    torch.save({"model": {k: v for k, v in official.items() if k not in removed}}, path)
    with pytest.raises(ValueError, match="20 of 299 expected keys missing") as error:
        convert_checkpoint("catseg", str(path))
    for family in ("transformer.decoder1.", "transformer.decoder2.", "transformer.decoder_guidance_projection."):
        assert family in str(error.value)
    output = tmp_path / "converted.pth"
    assert _tool().main(["--method", "catseg", "--input", str(path), "--output", str(output)]) == 1
    assert "transformer.decoder1." in capsys.readouterr().err and not output.exists()
    # A whole missing block in the middle of the CLIP tower is found too.
    hole = {k: v for k, v in official.items() if ".visual.transformer.resblocks.4." not in k}
    with pytest.raises(ValueError, match=r"visual\.transformer\.resblocks\.4\."):
        convert_catseg_checkpoint(hole)


def test_conversion_logs_one_line_with_what_was_dropped_and_why(official, tmp_path, caplog):
    # Observed: logit_scale and the attention-mask buffers were dropped without a word, also when an
    # unconverted official file was loaded through train.init_checkpoint.
    with caplog.at_level(logging.INFO, logger="ovseg_d2.projects.catseg"):
        convert_catseg_checkpoint(official)
    lines = [r.getMessage() for r in caplog.records if "official tensors" in r.getMessage()]
    assert lines == [
        "catseg: 302 official tensors -> 299 of ours; dropped 1 (unused by CAT-Seg): clip_model.logit_scale; "
        "dropped 2 (Swin shift-mask buffers, recomputed): transformer.layers.0.swin_block.block_2.attn_mask, "
        "transformer.layers.1.swin_block.block_2.attn_mask"
    ]
    caplog.clear()
    path = tmp_path / "model_base.pth"
    torch.save({"model": official, "iteration": 79999}, path)
    model = CATSeg(train_class_names=["a", "b"], clip_model="tiny-vit-p16-w64")
    with caplog.at_level(logging.INFO, logger="ovseg_d2.projects.catseg"):
        ModelCheckpointer(model, strict=True).load(str(path))  # the --eval-only loader: every key matched
    assert [r.getMessage() for r in caplog.records if "official tensors" in r.getMessage()] == lines


def test_checkpoints_with_pickled_objects_need_unsafe_pickle(official, tmp_path):
    # Observed: torch.load(weights_only=False), so converting a downloaded file could run code.
    path = tmp_path / "model_base.pth"
    torch.save({"model": official, "cfg": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(UnsafeCheckpointError, match="--unsafe-pickle"):
        convert_checkpoint("catseg", str(path))
    output = tmp_path / "converted.pth"
    assert _tool().main(["--method", "catseg", "--input", str(path), "--output", str(output)]) == 1
    assert not output.exists()
    assert _tool().main(["--method", "catseg", "--input", str(path), "--output", str(output), "--unsafe-pickle"]) == 0
    assert set(torch.load(output, weights_only=True)["model"]) == set(convert_catseg_checkpoint(official))


def test_official_preset_spelling_is_accepted():
    # Observed: CLIP_PRETRAINED "ViT-L/14@336px" (the official yaml) raised a KeyError.
    assert CATSeg.preset("ViT-L/14@336px") == CATSeg.preset("ViT-L/14@336")
    with pytest.raises(KeyError, match="ViT-L/14@336px"):
        CATSeg.preset("ViT-H/14")
