"""What every benchmark shares: the profile and its parameter grids, the base class, thread
pinning, and the synthetic data.

The profile comes from the environment variable ``FASTBP_ASV_PROFILE``:

* ``regular`` (the default): the full grids and asv's statistics (several samples per process,
  two processes per benchmark). Use it for numbers: ``asv run``, ``asv continuous``.
* ``fast``: one or two points per axis, one sample, no warm-up. It proves that every benchmark
  imports and runs (CI runs ``asv run --quick`` with it); its numbers mean nothing.

Thread counts are benchmark parameters, never left to the defaults: ``Benchmark.pin_threads``
sets numba's pool (and NumPy's BLAS or PyTorch's when a peer uses them) to the parameter in
``setup`` and ``teardown`` restores it. The thread grid is 1,2 (fast) or 1,4 (regular);
``FASTBP_ASV_THREADS=1,2,8`` replaces it. Counts above ``NUMBA_NUM_THREADS`` (numba's pool
size, fixed when numba is imported) are skipped.
"""
import os

import numba
import numpy as np

PROFILES = ("fast", "regular")
PROFILE = os.environ.get("FASTBP_ASV_PROFILE", "regular").strip().lower()
if PROFILE not in PROFILES:
    raise ValueError(f"FASTBP_ASV_PROFILE must be one of {', '.join(PROFILES)}; got {PROFILE!r}")
FAST = PROFILE == "fast"

# Read from numba's configuration: numba.get_num_threads() would start the thread pool here,
# in asv's forkserver parent, and a forked OpenMP pool is not safe to use.
MAX_THREADS = int(numba.config.NUMBA_NUM_THREADS)


def _thread_grid():
    spec = os.environ.get("FASTBP_ASV_THREADS", "").strip()
    if spec:
        try:
            counts = sorted({int(s) for s in spec.split(",") if s.strip()})
        except ValueError:
            counts = []
        if not counts or counts[0] < 1:
            raise ValueError(f"FASTBP_ASV_THREADS must be positive integers separated by commas, "
                             f"such as 1,4; got {spec!r}")
        return counts
    return [1, 2] if FAST else [1, 4]


THREADS = _thread_grid()
DTYPES = ["float32"] if FAST else ["float32", "float64"]

# Network shape axes of the fastbp benchmarks: ``depth`` hidden layers of ``width`` units on
# ``width`` inputs, and 10 outputs (see ``layer_sizes``); ``batch`` samples per step or call.
WIDTHS = [32] if FAST else [32, 256, 1024]
DEPTHS = [1] if FAST else [1, 3]
BATCHES = [1, 256] if FAST else [1, 16, 256]
N_OUTPUTS = 10

LR = 0.01   # small enough that repeated timed epochs never saturate the sigmoids


class Benchmark:
    """Base class of every benchmark: asv's timing attributes for the profile, and thread
    pinning undone in ``teardown``.

    asv calls ``teardown`` even when ``setup`` raised ``NotImplementedError`` (a skip) part way,
    so ``teardown`` only undoes what was done.
    """
    timeout = 180 if FAST else 900      # seconds per benchmark process
    if FAST:
        repeat = 1
        number = 1
        min_run_count = 1
        warmup_time = 0
        rounds = 1                      # asv's "rounds" (called "processes" before asv 0.6)
        throughput_repeat = 1
    else:
        repeat = (3, 20, 20.0)          # at least 3 samples, at most 20, or 20 s per process
        warmup_time = 0.5
        rounds = 2                      # two separate processes per benchmark
        throughput_repeat = 3           # track_samples_per_second: best of this many epochs

    def pin_threads(self, n, blas=False, torch=False):
        """Run the benchmark on ``n`` threads: numba's pool, and NumPy's BLAS (``blas``, through
        threadpoolctl) and PyTorch's intra-op pool (``torch``) when the benchmark uses them.
        Raises NotImplementedError (asv: skip) when ``n`` threads cannot be had."""
        if n > MAX_THREADS:
            raise NotImplementedError(f"threads={n} > NUMBA_NUM_THREADS={MAX_THREADS}")
        undo = self.__dict__.setdefault("_undo", [])
        old = numba.get_num_threads()
        numba.set_num_threads(n)
        undo.append(lambda: numba.set_num_threads(old))
        if blas:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                raise NotImplementedError("threadpoolctl is not installed: NumPy's BLAS threads "
                                          "cannot be pinned") from None
            limiter = threadpool_limits(limits=n, user_api="blas")
            undo.append(limiter.restore_original_limits)
        if torch:
            import torch as _torch
            old_torch = _torch.get_num_threads()
            _torch.set_num_threads(n)
            undo.append(lambda: _torch.set_num_threads(old_torch))

    def teardown(self, *params):
        undo = self.__dict__.get("_undo", [])
        while undo:
            undo.pop()()


def layer_sizes(width, depth):
    """``[width] * (depth + 1) + [10]``: ``depth`` hidden layers of ``width`` units."""
    return [width] * (depth + 1) + [N_OUTPUTS]


def flops_per_sample(sizes):
    """About ``6 * sum(in * out)`` for a training step (backprop.md, "Cost")."""
    return 6 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def epoch_samples(sizes):
    """Samples per training epoch: a fixed amount of arithmetic (about 2e8 flops) so that an
    epoch takes a similar time for every network, between 256 and 8192 samples and a multiple
    of 256 (every batch size in the grids divides it). 512 in the fast profile."""
    if FAST:
        return 512
    n = int(2e8 / flops_per_sample(sizes)) // 256 * 256
    return min(max(n, 256), 8192)


def synthetic_data(n, n_in, n_out, dtype, seed=0):
    """``X (n, n_in)`` uniform in [0, 1) and ``Y (n, n_out)`` one-hot rows, of ``dtype``.

    Drawn directly in ``dtype``: a float64 temporary would raise the peak memory of the process
    that ``peakmem_*`` reports."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    X = rng.random((n, n_in), dtype=dt)
    Y = np.zeros((n, n_out), dtype=dt)
    Y[np.arange(n), rng.integers(0, n_out, size=n)] = 1
    return X, Y

