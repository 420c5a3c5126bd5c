"""One intra-op thread for the TCL tests (`one_intra_op_thread`, tests/conftest.py). The golden
fixtures were made with 2 threads; 1 thread moves PAMR outputs by <= 1e-6 (golden README)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_intra_op_thread: None) -> None:
    """One intra-op thread for every TCL test module."""
