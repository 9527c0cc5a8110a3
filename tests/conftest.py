"""Shared fixtures and helpers for fastbp's test suite.

* ``rng``: a fresh, seeded NumPy generator per test.
* ``dtype``: parametrizes a test over float32 and float64.
* ``num_threads``: a context manager that runs a block with a given numba thread count and
  always restores the previous count (numba's count is per Python thread; tests must not leak it).
* An autouse guard fails any test that leaves numba's thread count changed.
"""
import contextlib
import os
import sys

import numba
import numpy as np
import pytest

# tests/naive.py (the oracles) is imported as ``naive`` by the test modules.
sys.path.insert(0, os.path.dirname(__file__))

DTYPES = (np.float32, np.float64)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return request.param


def max_threads():
    """How many threads numba may use in this process (``NUMBA_NUM_THREADS``)."""
    return numba.config.NUMBA_NUM_THREADS


@contextlib.contextmanager
def threads(n):
    """Run the block with ``numba.set_num_threads(n)``; the previous count is restored."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


@pytest.fixture
def num_threads():
    return threads


@pytest.fixture(autouse=True)
def _numba_threads_unchanged():
    before = numba.get_num_threads()
    yield
    after = numba.get_num_threads()
    if after != before:
        numba.set_num_threads(before)
        pytest.fail(f"the test changed numba's thread count from {before} to {after} "
                    "without restoring it")


def eps_of(dtype):
    return float(np.finfo(dtype).eps)


@pytest.fixture
def torch():
    """PyTorch (skipped where it is not installed), on one thread for the duration of a test."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(before)
