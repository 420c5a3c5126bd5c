"""One intra-op thread for the TCL tests (the shared 2-core machine; see tests/catseg/conftest.py).
The golden fixtures were made with 2 threads; 1 thread moves PAMR outputs by <= 1e-6 (golden README)."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("TCL_TEST_THREADS", "1")))
    yield
    torch.set_num_threads(threads)
