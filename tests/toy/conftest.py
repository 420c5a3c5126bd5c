"""A tiny toy world generated once per session and registered for the toy tests only."""
from __future__ import annotations

from pathlib import Path

import pytest

from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world, register_toy_world

TINY = ToyWorldConfig(num_train=24, num_val=8, num_retrieval=30, image_size=64, seed=3, shard_size=10)


@pytest.fixture(scope="session")
def toy_config() -> ToyWorldConfig:
    return TINY


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("toy_world")
    generate_toy_world(root, TINY, progress=False)
    return root


@pytest.fixture()
def registered_toy_root(toy_root: Path):
    """The tiny world registered under the `toy_*` names; the default registration is restored after."""
    register_toy_world(toy_root)
    yield toy_root
    register_toy_world()
