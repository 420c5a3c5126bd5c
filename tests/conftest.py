"""Fixtures shared by every test folder: the datasets the end-to-end `tools/train_net.py` runs read
(each generated once per session, for all methods) and the one-thread setting of the method folders.

Shared helpers are modules of this folder imported as `tests.<module>` (`from tests.e2e import ...`):
pytest (`--import-mode=importlib`, rootdir = the repository) imports this file as `tests.conftest`,
which makes `tests` a namespace package, and `python -m pytest` from the repository root also has
it on sys.path. No test folder adds itself to sys.path for them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def toy_datasets_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$DETECTRON2_DATASETS holding a tiny toy world at the default `toy_world` sub-folder, for the
    training runs of CAT-Seg (both versions), Cascade-CLIP, TCL and OVSegmentor. Read-only, except
    that OVSegmentor's test adds its cross-image lists (a folder nothing else reads)."""
    from ovseg_d2.data.toy import ToyWorldConfig, generate_toy_world

    root = tmp_path_factory.mktemp("toy_datasets")
    generate_toy_world(root / "toy_world", ToyWorldConfig(num_train=16, num_val=8, num_retrieval=30),
                       progress=False)
    return root


@pytest.fixture(scope="session")
def benchmark_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$DETECTRON2_DATASETS holding raw VOC 2012 (SegmentationClassAug), ADE20K, PASCAL-Context,
    COCO-Stuff and Cityscapes miniatures (24x32 images; the writers of tests/data/test_prepare.py),
    prepared by the real `datasets/prepare_*.py` scripts into the layouts the `ovseg_*`
    registrations read: every benchmark of the `--eval-only` runs. Read-only."""
    from tests.data import test_prepare as raw

    root = tmp_path_factory.mktemp("benchmarks")
    raw.make_voc(root, aug=True)
    raw.make_ade150(root)
    raw.make_pc59(root)
    raw.make_coco_stuff(root)
    raw.make_cityscapes(root)
    for script in ("prepare_voc", "prepare_ade20k_150", "prepare_pascal_context_59", "prepare_coco_stuff",
                   "prepare_cityscapes"):
        assert raw.run(script, root)["written"] > 0, script
    return root


@pytest.fixture(scope="module")
def one_intra_op_thread() -> Iterator[None]:
    """torch's intra-op threads set to 1 for a test module (`OVSEG_TEST_THREADS` overrides), then
    restored. A method folder's conftest.py requests it from a module-scoped autouse fixture (and
    says there what one thread does to its golden fixtures): the tests run many small ops, and on a
    shared 2-core machine every OpenMP barrier waits for a descheduled second thread (a tiny CLIP
    forward: 5 ms with 1 thread, 1 s with 2)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OVSEG_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(threads)
