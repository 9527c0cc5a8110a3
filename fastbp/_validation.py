"""Input checks for the public API. Everything is checked here, in Python, before a kernel runs:
numba does not bounds-check, so a wrong shape inside a kernel would corrupt memory.

Each error names the argument, what was expected and what came.
"""
import numbers

import numpy as np

from ._config import jit


@jit()
def _first_nonfinite(flat):
    """Index of the first NaN or infinity in a 1-D array, or -1 (no temporary array)."""
    for k in range(flat.shape[0]):
        if not np.isfinite(flat[k]):
            return k
    return -1

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype):
    """'float32' / 'float64' / np.float32 / np.dtype(...) -> np.dtype."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return dt


def check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")
    return value


def check_int(name, value, low=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r} "
                        f"({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def check_positive_float(name, value, allow_zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number, got {value!r} "
                        f"({type(value).__name__})")
    value = float(value)
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite number {bound}, got {value}")
    return value


def check_layer_sizes(layer_sizes):
    try:
        sizes = list(layer_sizes)
    except TypeError:
        raise TypeError(f"layer_sizes must be a sequence of integers such as [64, 32, 10], "
                        f"got {layer_sizes!r}") from None
    if len(sizes) < 2:
        raise ValueError(f"layer_sizes needs at least 2 entries (inputs and outputs), got {sizes}")
    for k, s in enumerate(sizes):
        check_int(f"layer_sizes[{k}]", s, low=1)
    return [int(s) for s in sizes]


def as_float_array(name, X, dtype, ndims):
    """Convert ``X`` to a C-contiguous array of ``dtype`` with one of the dimension counts in
    ``ndims``, finite, non-empty. Never returns the caller's array when it would be written to:
    the result is only read by the kernels."""
    if isinstance(X, np.ndarray):
        arr = X
    else:
        try:
            arr = np.asarray(X)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array of numbers, got {type(X).__name__}: "
                            f"{exc}") from None
    kind = arr.dtype.kind
    if kind not in "biuf":
        what = "complex numbers" if kind == "c" else f"dtype {arr.dtype}"
        raise TypeError(f"{name} must hold real numbers (float or integer), got {what}")
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise ValueError(f"{name} must be {want}, got a {arr.ndim}-D array of shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); at least one sample is needed")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    k = _first_nonfinite(arr.reshape(-1))
    if k >= 0:
        raise ValueError(f"{name} contains NaN or infinity (first at index "
                         f"{tuple(int(i) for i in np.unravel_index(k, arr.shape))})")
    return arr


def check_X(X, n_features, dtype):
    """X (B, n) or (n,) -> (C-contiguous (B, n) array, was_1d)."""
    arr = as_float_array("X", X, dtype, (1, 2))
    single = arr.ndim == 1
    if single:
        arr = arr.reshape(1, -1)
    if arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features per sample, but the network's input "
                         f"layer has {n_features}")
    return arr, single
