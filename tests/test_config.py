"""show_config and the thread-count API."""
import io

import numba
import pytest

import fastbp
from fastbp import _info


def test_show_config_prints_versions_layer_threads_and_cache():
    buf = io.StringIO()
    fastbp.show_config(file=buf)
    text = buf.getvalue()
    for key in ("fastbp", "numba", "numpy", "threading_layer", "fastbp_threads", "cache",
                "fastmath"):
        assert any(line.split()[0] == key for line in text.splitlines()), key
    info = _info.config_dict()
    assert info["fastbp"] == fastbp.__version__
    assert info["numba"] == numba.__version__
    assert "nnan" not in info["fastmath"] and "ninf" not in info["fastmath"]
    assert info["fastbp_threads"] == fastbp.get_num_threads()


def test_threads_context_restores_and_set_num_threads_returns_previous():
    n = numba.config.NUMBA_NUM_THREADS
    before = fastbp.get_num_threads()
    with fastbp.threads(1):
        assert fastbp.get_num_threads() == 1
    assert fastbp.get_num_threads() == before
    previous = fastbp.set_num_threads(1)
    try:
        assert fastbp.get_num_threads() == 1
    finally:
        fastbp.set_num_threads(previous)
    assert fastbp.get_num_threads() == before
    with pytest.raises(ValueError, match="between 1 and"):
        fastbp.set_num_threads(n + 1)
    with pytest.raises(TypeError):
        fastbp.threads(1.5).__enter__()
