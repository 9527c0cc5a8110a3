"""fastbp against its peers on the same workloads: one epoch of SGD on the seed network.

The workloads, their data, the starting weights and the engines are ``fastbp.bench``'s (the
same as ``python -m fastbp bench``): ``fastbp`` (``MLP.fit``), ``numpy`` (``@`` products,
NumPy's BLAS), ``torch`` (``nn.Sequential`` + ``optim.SGD``), ``jax`` (a jitted step in a Python
loop) and ``jax-scan`` (the whole epoch as one compiled ``lax.scan``). A peer that is not
installed is skipped (asv shows n/a), as is a thread count a library cannot be pinned to:

* numba (fastbp): ``numba.set_num_threads``, up to ``NUMBA_NUM_THREADS``;
* NumPy's BLAS: threadpoolctl (the benchmark is skipped without it);
* PyTorch: ``torch.set_num_threads``;
* XLA (JAX) reads its thread count once, when jax is imported: one thread
  (``XLA_FLAGS``, set before the import) or every core of the process, nothing in between.

Every engine is built, compiled and run once in ``setup``; the timed region is one epoch.
The fast profile runs one workload, shrunk to 256 samples per epoch.
"""
import dataclasses
import os
import sys
import time

import numpy as np

from .common import DTYPES, FAST, THREADS, Benchmark

try:
    from fastbp.bench import engines, workloads
    from fastbp.bench.worker import XLA_ONE_THREAD
except ModuleNotFoundError as exc:   # a fastbp from before fastbp.bench: skip the peers
    if exc.name != "fastbp.bench":
        raise
    engines = workloads = XLA_ONE_THREAD = None

ENGINES = ["fastbp", "numpy", "torch", "jax", "jax-scan"]
# the last three: big layers and big batches (issue 18, Speed II)
WORKLOADS = (["mnist-b32"] if FAST else
             ["seed-b1", "tiny-b1", "mnist-b32", "odd-b1", "odd-b17", "mnist-b256", "wide-b128",
              "deep-b256", "deep-b1024"])


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def _pin_xla_threads(threads):
    """Make jax, when ``make_epoch`` imports it, run on ``threads`` CPU threads, or skip."""
    if threads not in (1, _cores()):
        raise NotImplementedError(f"XLA runs on 1 thread or on all {_cores()} cores, "
                                  f"not {threads}")
    one = XLA_ONE_THREAD in os.environ.get("XLA_FLAGS", "")
    if "jax" in sys.modules:   # imported by an earlier setup() of this process
        if one != (threads == 1):
            raise NotImplementedError("jax was imported with another thread count")
        return
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if threads == 1 and not one:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    elif threads != 1 and one:
        raise NotImplementedError("XLA_FLAGS in the environment pins XLA to one thread")


class PeerEpoch(Benchmark):
    param_names = ["workload", "engine", "dtype", "threads"]
    params = [WORKLOADS, ENGINES, DTYPES, THREADS]

    def setup(self, workload, engine, dtype, threads):
        if engines is None:
            raise NotImplementedError("this fastbp has no fastbp.bench")
        if not engines.available(engine):
            raise NotImplementedError(f"{engine} is not installed")
        w = workloads.get_workload(workload)
        if FAST:
            w = dataclasses.replace(w, n_samples=max(2 * w.batch, 256 // w.batch * w.batch))
        if engine.startswith("jax"):
            _pin_xla_threads(threads)
        self.pin_threads(threads, blas=engine == "numpy", torch=engine == "torch")
        self.n_samples = w.n_samples
        self.epoch = engines.make_epoch(engine, w, dtype=dtype, seed=0)
        self.epoch()   # first-call costs (allocations, lazy initialization) stay out of timing

    def time_epoch(self, *params):
        self.epoch()

    def track_samples_per_second(self, *params):
        best = np.inf
        for _ in range(self.throughput_repeat):
            t0 = time.perf_counter()
            self.epoch()
            best = min(best, time.perf_counter() - t0)
        return self.n_samples / best

    track_samples_per_second.unit = "samples/s"
