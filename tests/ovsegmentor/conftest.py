"""Shared fixtures of the OVSegmentor tests: the golden fixture files and tiny model builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "ovsegmentor"
TOKENIZER = GOLDEN / "tokenizer"

# The tiny official configuration of the fixtures (golden README "Tiny configuration").
TINY_IMAGE_ENCODER = dict(
    embed_dim=64, depth=4, num_heads=4, grouping_after=2, num_group_tokens=16, num_output_groups=4, drop_path_rate=0.0
)


def tiny_bert_config(cases: dict[str, Any] | None = None) -> dict[str, Any]:
    """The fixture's BertConfig as a `build_hf_text_model` spec."""
    config = dict(torch.load(GOLDEN / "cases.pt", weights_only=True)["meta"]["bert_config"] if cases is None
                  else cases["meta"]["bert_config"])
    config.pop("output_hidden_states")
    return {"model_type": "bert", **config}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_intra_op_thread: None) -> None:
    """One intra-op thread (tests/conftest.py), as the fixtures were made."""


@pytest.fixture(scope="session")
def cases() -> dict[str, Any]:
    return torch.load(GOLDEN / "cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def official_checkpoint() -> dict[str, Any]:
    return torch.load(GOLDEN / "official_tiny.pth", weights_only=True)


def tiny_ovsegmentor(stage: int, **overrides: Any):
    """The fixture's tiny configuration as our model: stage 0 (inference), 1 or 2."""
    from ovseg_d2.projects.ovsegmentor import OVSegmentor

    kwargs = dict(
        train_class_names=["object"], image_encoder=TINY_IMAGE_ENCODER, text_model=tiny_bert_config(),
        tokenizer=str(TOKENIZER), output_dim=32, projector_inner_dim=128,
        entity_loss_weight=1.0 if stage >= 1 else 0.0, mask_loss_weight=0.1 if stage == 2 else 0.0,
        freeze_text=stage == 2,
    )
    return OVSegmentor(**{**kwargs, **overrides})
