"""CPU settings for the CAT-Seg tests (restored after each module).

- One intra-op thread (`one_intra_op_thread`, tests/conftest.py). The golden fixtures were made with
  2 threads; 1 thread changes float reductions by <= 3e-6 (golden README section 3), far inside the
  tolerances.
- glibc: keep freed memory in the heap. The aggregator allocates and frees 10-300 MB tensors per op;
  glibc serves them with fresh mmaps, so every op page-faults its output in again (about a third of
  the CPU time of golden case c). The defaults (128 KiB thresholds) are restored afterwards.
"""

from __future__ import annotations

import ctypes

import pytest

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@pytest.fixture(scope="module", autouse=True)
def _catseg_cpu_settings(one_intra_op_thread: None):
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    yield
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        libc.malloc_trim(0)
