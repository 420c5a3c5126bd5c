"""Shared fixtures of the Cascade-CLIP tests: the tiny official build (golden fixture) as our model.

One intra-op thread: the fixtures were generated with 2 threads; 1 thread moves the logits by at most
6.2e-6 (fixture README, "Determinism"), far inside the tolerances, and is much faster on a shared
2-core machine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ovseg_d2.modeling import PrecomputedTextClassifier
from ovseg_d2.projects.cascade_clip import CascadeCLIP

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "cascade_clip"
CLASS_NAMES = [f"class{i}" for i in range(8)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_intra_op_thread: None) -> None:
    """One intra-op thread (tests/conftest.py; see this module's docstring)."""


@pytest.fixture(scope="session")
def cases() -> dict:
    return torch.load(GOLDEN / "cases.pt", weights_only=True)


@pytest.fixture(scope="session")
def official_state() -> dict:
    return torch.load(GOLDEN / "official_tiny.pth", weights_only=True)["state_dict"]


def write_text_table(cases: dict, path: Path) -> Path:
    """The fixture's fp16 class embeddings as a `PrecomputedTextClassifier` file (cast to fp32)."""
    torch.save({"class_names": CLASS_NAMES, "embeddings": cases["text_embedding"].float()}, path)
    return path


def build_tiny(cases: dict, table: Path, *, transductive: bool = False, **overrides) -> CascadeCLIP:
    """Our model with the fixture's tiny configuration (not loaded)."""
    cfg = cases["config"]
    seen = cases["classes"]["seen"]
    train_names = CLASS_NAMES if transductive else [CLASS_NAMES[i] for i in seen]
    kwargs = dict(
        train_class_names=train_names,
        test_class_names=CLASS_NAMES,
        clip_model="tiny-cascade-clip",
        image_size=cfg["img_size"],
        num_prompt_tokens=cfg["num_tokens"],
        tap_blocks=cfg["out_indices"],
        decoder_layers=cfg["decoder_layers"],
        decoder_heads=cfg["decoder_heads"],
        text_classifier=PrecomputedTextClassifier(table),
        seen_bias=0.0 if transductive else cfg["seen_bias"],
        unseen_train_classes=cases["classes"]["unseen"] if transductive else None,
        double_class_embedding=True,
        freeze_tap_projections=True,
    )
    kwargs.update(overrides)
    return CascadeCLIP(**kwargs)


@pytest.fixture(scope="module")
def golden_model(cases, official_state, tmp_path_factory) -> CascadeCLIP:
    """The inductive tiny model with the official weights, loaded strictly through the converter."""
    model = build_tiny(cases, write_text_table(cases, tmp_path_factory.mktemp("text") / "text.pth"))
    model.load_state_dict(official_state, strict=True)
    return model.eval()
