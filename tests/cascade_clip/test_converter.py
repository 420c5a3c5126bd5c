"""The "cascade_clip" converter on the official tiny checkpoint (tests/fixtures/golden/cascade_clip)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ovseg_d2.checkpoint import ModelCheckpointer, get_converter
from ovseg_d2.projects.cascade_clip import convert_cascade_clip_checkpoint, map_official_key

from .conftest import GOLDEN, build_tiny, write_text_table

REPO = Path(__file__).resolve().parents[2]
# Fixture README: backbone 741,952 + decode_head 159,181 + text 188,000 tensor elements (the decode_head
# figure includes the 7-element loss buffer `empty_weight`).
OFFICIAL_TOTAL_PARAMS = 1_089_133


def test_registered_and_every_key_mapped_or_dropped(official_state):
    assert get_converter("cascade_clip") is convert_cascade_clip_checkpoint
    out = convert_cascade_clip_checkpoint(official_state)
    dropped = [k for k in official_state if map_official_key(k, 2)[0] is None]
    assert len(out) + len(dropped) == len(official_state) == 527
    assert all(v.dtype == torch.float32 for v in out.values())
    # What is dropped: unused self-attention, the last layer's unused tail, the loss buffer; nothing else.
    for key in dropped:
        assert re.search(r"(self_attn|norm1)\.|layers\.2\.(multihead_attn\.(v|proj)|linear|norm)|empty_weight", key), key


def test_parameter_accounting_matches_the_official_build(official_state, cases, tmp_path):
    """Our parameters + the official tensors we drop on purpose + the text encoder = the official count;
    trainable: ours + the dropped decoder parts = the official head + prompts (minus the loss buffer)."""
    model = build_tiny(cases, write_text_table(cases, tmp_path / "t.pth"))
    ours = sum(p.numel() for p in model.parameters())
    dropped = sum(
        v.numel() for k, v in official_state.items() if map_official_key(k, 2)[0] is None
    )
    text = sum(v.numel() for k, v in official_state.items() if k.startswith("text_encoder."))
    assert ours + dropped + text == OFFICIAL_TOTAL_PARAMS
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen_official = sum(
        v.numel() for k, v in official_state.items()
        if k.startswith("backbone.") and "prompt" not in k or k.startswith("text_encoder.")
    )
    assert trainable + dropped == OFFICIAL_TOTAL_PARAMS - frozen_official


def test_incomplete_and_unknown_checkpoints_are_errors(official_state):
    missing = dict(official_state)
    del missing["decode_head.cascade_decoders.1.layers.1.linear1.weight"]
    with pytest.raises(ValueError, match="cascade_decoders.1.layers.1"):
        convert_cascade_clip_checkpoint(missing)
    extra = dict(official_state, **{"decode_head.new_thing.weight": torch.zeros(1)})
    with pytest.raises(KeyError, match="new_thing"):
        convert_cascade_clip_checkpoint(extra)


def test_convert_checkpoint_cli_output_loads_strictly(cases, tmp_path):
    out = tmp_path / "converted.pth"
    subprocess.run(
        [sys.executable, str(REPO / "tools/convert_checkpoint.py"), "--method", "cascade_clip",
         "--input", str(GOLDEN / "official_tiny.pth"), "--output", str(out)],
        check=True, cwd=REPO, capture_output=True,
    )
    model = build_tiny(cases, write_text_table(cases, tmp_path / "t.pth"))
    before = model.head.nga_weights[1].detach().clone()
    ModelCheckpointer(model, strict=True).load(str(out))
    torch.testing.assert_close(model.head.nga_weights[1].detach(), cases["case_a_inference_512"]["nga_weights_s2"])
    assert not torch.equal(before, model.head.nga_weights[1].detach())
