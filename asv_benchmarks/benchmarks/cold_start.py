"""Cold start: ``import fastbp`` and a first use of one kernel path, in a new interpreter.

What a user waits for before the first result: the imports (numba, fastbp), then loading the
path's compiled kernels from numba's on-disk cache (``cache="warm"``) or compiling them from
scratch (``cache="cold"``: ``NUMBA_CACHE_DIR`` points at a new empty folder; fastbp compiles
the path's kernel set in a child process, ``fastbp._cache``). One benchmark per path, so a
change that makes one path compile longer shows in that path's line alone:

* ``import``: ``import fastbp`` alone (compiles nothing);
* ``sgd-per-sample``: the README's job, an epoch of per-sample SGD (``batch_size=1``);
* ``sgd-batches``: an epoch of mini-batch SGD (batch 16);
* ``sgd-deferred``: an epoch of mini-batch SGD (batch 32) on a 784-128-10 network, whose first
  layer is shared between threads (the deferred region of ``kernels.network``; with one
  thread, numba's pool alone, this is ``sgd-batches`` again);
* ``train-segment``: an epoch with Adam;
* ``predict``: ``forward`` on a fresh model.

asv's ``timeraw_*`` benchmarks return code that asv runs in a fresh interpreter (the one of the
benchmark environment), timing the statement and not its setup.
"""
import shutil
import subprocess
import sys
import tempfile
import textwrap

from .common import DTYPES, FAST, Benchmark

PRELUDE = textwrap.dedent("""
    import numpy as np
    import fastbp
    rng = np.random.default_rng(0)
    X = rng.random((256, 64), dtype=np.{dtype})
    y = rng.integers(0, 10, size=256)
    net = fastbp.MLP([64, 64, 10], activation="sigmoid", loss="mse", dtype="{dtype}", seed=0)
""")

USES = {
    "import": "",
    "sgd-per-sample": "net.fit(X, y, epochs=1, batch_size=1, lr=0.5)",
    "sgd-batches": "net.fit(X, y, epochs=1, batch_size=16, lr=0.5)",
    "sgd-deferred": ("wide = fastbp.MLP([784, 128, 10], dtype='{dtype}', seed=0)\n"
                     "wide.fit(rng.random((256, 784), dtype=np.{dtype}), y, epochs=1, "
                     "batch_size=32, lr=0.5)"),
    "train-segment": "net.fit(X, y, epochs=1, batch_size=16, optimizer='adam', lr=0.01)",
    "predict": "net.forward(X)",
}


def statement(path, dtype):
    if path == "import":
        return "import fastbp\n"
    return PRELUDE.format(dtype=dtype) + USES[path].format(dtype=dtype) + "\n"


# Untimed, in the new interpreter before the statement: a fresh cache directory per sample.
COLD_CACHE = textwrap.dedent("""
    import os, tempfile
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-", dir={base!r})
""")


class ColdStart(Benchmark):
    param_names = ["cache", "path", "dtype"]
    # the fast profile (CI's smoke run) times two paths: each cold sample compiles for seconds
    params = [["warm", "cold"], ["import", "sgd-per-sample"] if FAST else list(USES), DTYPES]
    # Every sample is a new process, and a cold one compiles a kernel set: no warm-up runs,
    # and fewer samples than the other benchmarks.
    warmup_time = 0
    timeout = 600 if FAST else 1800
    if not FAST:
        repeat = (2, 5, 120.0)
        rounds = 1

    def setup(self, cache, path, dtype):
        self.base = tempfile.mkdtemp(prefix="fastbp-asv-")
        if cache == "warm":
            # Fill the cache this environment uses, so the timed runs only load from it.
            subprocess.run([sys.executable, "-c", statement(path, dtype)], check=True,
                           timeout=self.timeout)

    def teardown(self, cache, path, dtype):
        super().teardown()
        if getattr(self, "base", None):
            shutil.rmtree(self.base, ignore_errors=True)

    def timeraw_first_use(self, cache, path, dtype):
        if cache == "cold":
            return statement(path, dtype), COLD_CACHE.format(base=self.base)
        return statement(path, dtype)
