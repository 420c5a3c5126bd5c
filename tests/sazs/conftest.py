"""Shared fixtures of the SAZS tests: the golden files, the tiny models they describe, one thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden" / "sazs"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_intra_op_thread: None) -> None:
    """One intra-op thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def cases() -> dict:
    return torch.load(GOLDEN / "cases.pt", weights_only=True)


def tiny_vit_sazs(**kwargs):
    """The golden ViT configuration (embed 64, 4 heads, tap after block 11, 32-d embeddings) + text."""
    from ovseg_d2.projects.sazs import SAZS, DPTPixelEmbedder, build_text_tower

    embedder = DPTPixelEmbedder(embed_dim=64, num_heads=4, out_channels=32)
    return SAZS(pixel_embedder=embedder, text_tower=build_text_tower("tiny-sazs-text"), **kwargs)


def tiny_drn_sazs(**kwargs):
    from ovseg_d2.projects.sazs import SAZS, DRNPixelEmbedder, build_text_tower

    embedder = DRNPixelEmbedder(channels=(4, 8, 4, 8, 16, 32, 32, 32), out_channels=32, drop_rate=0.95)
    return SAZS(pixel_embedder=embedder, text_tower=build_text_tower("tiny-sazs-text"), **kwargs)


def converted(name: str) -> dict[str, torch.Tensor]:
    from ovseg_d2.checkpoint import convert_checkpoint

    return convert_checkpoint("sazs", GOLDEN / name, clip_weights=GOLDEN / "clip_tiny_text.pth")
