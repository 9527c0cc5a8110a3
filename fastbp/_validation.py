"""Input checks for the public API. Everything is checked here, in Python, before a kernel runs:
numba does not bounds-check, so a wrong shape inside a kernel would corrupt memory.

Each error names the argument, what was expected and what came. Arrays are converted to what
the kernels take (C-contiguous, aligned, writable memory of the model's dtype, native byte
order), copying when needed: the kernels only read them, and a caller's array is never written.
``check_memory`` refuses, with a ``MemoryError`` naming the sizes, an allocation that cannot fit,
before it is made. See docs/robustness.md.
"""
import numbers
import os

import numpy as np

from ._config import jit


# The finiteness scan looks at blocks of this many elements at a time, in a loop the compiler
# vectorizes (``x * 0`` is 0 for a finite ``x`` and NaN for NaN or infinity; the fast-math flags
# fastbp compiles with exclude ``nnan``/``ninf``, so this is not folded away); only a block that
# fails is searched element by element. A training set is checked on every ``fit``: this runs
# at memory speed (about 3x the element-by-element loop on a 100 MB array).
SCAN_BLOCK = 1 << 13


@jit()
def _block_nonfinite(flat, blk):
    """True when block ``blk`` of ``flat`` (1-D) holds a NaN or an infinity."""
    part = flat[blk * SCAN_BLOCK:(blk + 1) * SCAN_BLOCK]
    s = flat.dtype.type(0.0)
    for k in range(part.shape[0]):
        s += part[k] * flat.dtype.type(0.0)
    return s != 0


@jit()
def _first_nonfinite_from(flat, blk):
    """Index of the first NaN or infinity of ``flat`` at or after block ``blk``, or -1."""
    n_blk = (flat.shape[0] + SCAN_BLOCK - 1) // SCAN_BLOCK
    for b in range(blk, n_blk):
        if _block_nonfinite(flat, b):
            for k in range(b * SCAN_BLOCK, min((b + 1) * SCAN_BLOCK, flat.shape[0])):
                if not np.isfinite(flat[k]):
                    return k
    return -1


@jit()
def _first_nonfinite(flat):
    """Index of the first NaN or infinity in a 1-D float array, or -1 (no temporary array)."""
    return _first_nonfinite_from(flat, 0)

FLOAT_DTYPES = {"float32": np.float32, "float64": np.float64}


def check_dtype(dtype):
    """'float32' / 'float64' / np.float32 / np.dtype(...) -> np.dtype (native byte order)."""
    try:
        dt = None if dtype is None else np.dtype(dtype)  # np.dtype(None) would be float64
    except (TypeError, ValueError):
        dt = None
    if dt is None or dt.name not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return np.dtype(FLOAT_DTYPES[dt.name])


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
    bound = ">= 0" if allow_zero else "> 0"
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64's range
        raise ValueError(f"{name} must be a finite number {bound}, got {value}") from None
    if not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
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


def as_float_array(name, X, dtype, ndims, check_shape=None):
    """Convert ``X`` to a C-contiguous array of ``dtype`` with one of the dimension counts in
    ``ndims``, finite, non-empty. The kernels only read the result; it is the caller's array
    itself only when that is already C-contiguous, aligned and writable memory of ``dtype``,
    else a copy (read-only arrays are copied so that the kernels see one array type).
    ``check_shape(arr)``, if given, checks the shape before anything is copied."""
    dtype = np.dtype(dtype)
    if isinstance(X, np.ma.MaskedArray) and np.ma.is_masked(X):
        raise ValueError(f"{name} has masked entries; fill them first ({name}.filled(value))")
    if isinstance(X, np.ndarray):
        arr = X.view(np.ndarray)  # a subclass (memmap, matrix, masked) as a plain view
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
    if check_shape is not None:
        check_shape(arr)
    usable = (arr.dtype == dtype and arr.flags.c_contiguous and arr.flags.aligned
              and arr.flags.writeable)
    if not usable:
        check_memory(arr.size * dtype.itemsize,
                     f"converting {name} (shape {arr.shape}, {arr.dtype}) to {dtype.name}")
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.empty(arr.shape, dtype=dtype)
            out[...] = arr  # a copy: never a view of the caller's memory
        arr_in, arr = arr, out
    else:
        arr_in = arr
    k = _first_nonfinite(arr.reshape(-1))
    if k >= 0:
        where = tuple(int(i) for i in np.unravel_index(k, arr.shape))
        original = arr_in[where]
        if arr_in.dtype.kind == "f" and np.isfinite(original) or arr_in.dtype.kind in "biu":
            raise ValueError(f"{name} holds {original} at index {where}, beyond the range of "
                             f"the model's dtype {dtype.name}")
        raise ValueError(f"{name} contains NaN or infinity (first at index {where})")
    return arr


def check_X(X, n_features, dtype):
    """X (B, n) or (n,) -> (C-contiguous (B, n) array, was_1d)."""
    def features(arr):
        if arr.shape[-1] != n_features:
            raise ValueError(f"X has {arr.shape[-1]} features per sample, but the network's "
                             f"input layer has {n_features}")

    arr = as_float_array("X", X, dtype, (1, 2), features)
    single = arr.ndim == 1
    if single:
        arr = arr.reshape(1, -1)
    return arr, single


# ---- memory --------------------------------------------------------------------------------
# Requests up to this size are not checked (asking the OS costs more than it can save).
SMALL_BYTES = 1 << 26  # 64 MiB
# No single fastbp allocation may exceed this, whatever the OS reports (64 TiB): a sanity bound
# that also keeps every element count far below numba's int64 index range.
MAX_BYTES = 1 << 46


def _read_kib(path, keys):
    """``{key: bytes}`` for the ``key: N kB`` lines of a /proc-style file."""
    out = {}
    with open(path) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0]) * 1024
    return out


def _cgroup_room():
    """Bytes left under this process's cgroup v2 memory limit (its page cache counted as free),
    or None without a limit."""
    base = "/sys/fs/cgroup"
    with open(os.path.join(base, "memory.max")) as fh:
        limit = fh.read().strip()
    if limit == "max":
        return None
    with open(os.path.join(base, "memory.current")) as fh:
        used = int(fh.read())
    cache = 0
    with open(os.path.join(base, "memory.stat")) as fh:
        for line in fh:
            key, _, value = line.partition(" ")
            if key == "file":
                cache = int(value)
    return max(int(limit) - used + cache, 0)


def available_memory():
    """Bytes this process can still allocate, as well as the OS tells, or None if unknown:
    Linux's ``MemAvailable`` plus free swap (/proc/meminfo), bounded by a cgroup v2 limit; else
    ``sysconf`` available (or, failing that, physical) pages."""
    avail = None
    try:
        info = _read_kib("/proc/meminfo", ("MemAvailable", "SwapFree"))
        if "MemAvailable" in info:
            avail = info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        for pages in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            try:
                avail = os.sysconf(pages) * os.sysconf("SC_PAGE_SIZE")
                break
            except (AttributeError, ValueError, OSError):
                continue
        if avail is not None and avail <= 0:
            avail = None
    try:
        room = _cgroup_room()
    except (OSError, ValueError, IndexError):
        room = None
    if room is not None:
        avail = room if avail is None else min(avail, room)
    return avail


def format_bytes(n):
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def check_memory(n_bytes, what):
    """Raise ``MemoryError`` if ``n_bytes`` (a Python int: no overflow) cannot be allocated:
    more than ``MAX_BYTES``, or more than ``available_memory()``. ``what`` says what needs it,
    with its sizes. Call before allocating."""
    n_bytes = int(n_bytes)
    if n_bytes <= SMALL_BYTES:
        return
    if n_bytes > MAX_BYTES:
        raise MemoryError(f"{what} needs {format_bytes(n_bytes)} ({n_bytes:,} bytes), beyond "
                          f"fastbp's limit of {format_bytes(MAX_BYTES)} for one allocation")
    avail = available_memory()
    if avail is not None and n_bytes > avail:
        raise MemoryError(f"{what} needs {format_bytes(n_bytes)} ({n_bytes:,} bytes), more than "
                          f"the {format_bytes(avail)} of memory available")


def check_finite(name, arr):
    """ValueError if the float array ``arr`` holds NaN or infinity (no temporary array)."""
    k = _first_nonfinite(arr.reshape(-1))
    if k >= 0:
        where = tuple(int(i) for i in np.unravel_index(k, arr.shape))
        raise ValueError(f"{name} contains NaN or infinity (first at index {where})")
