import pytest
import torch

from ovseg_d2.clip import build_clip, get_tokenizer

TINY = "tiny-vit-p16-w64"


@pytest.fixture(scope="session")
def tiny_clip():
    """The CAT-Seg golden tiny CLIP with random weights; tests must not modify it (use `fresh_tiny`)."""
    torch.manual_seed(0)
    return build_clip(TINY).eval()


@pytest.fixture
def fresh_tiny():
    torch.manual_seed(1)
    return build_clip(TINY).eval()


@pytest.fixture(scope="session")
def tokenizer():
    return get_tokenizer(TINY)
