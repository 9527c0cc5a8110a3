"""Cold start: ``import fastbp`` and the first training epoch, in a new interpreter.

What a user waits for before the first epoch ends: the imports (numba, fastbp), loading the
compiled kernels from numba's on-disk cache (``cache="warm"``) or compiling them from scratch
(``cache="cold"``: ``NUMBA_CACHE_DIR`` points at a new empty directory), and one epoch of the
README's digits-sized network on 256 samples.

asv's ``timeraw_*`` benchmarks return code that asv runs in a fresh interpreter (the one of the
benchmark environment), timing the statement and not its setup.
"""
import shutil
import subprocess
import sys
import tempfile
import textwrap

from .common import DTYPES, FAST, Benchmark

FIRST_EPOCH = textwrap.dedent("""
    import numpy as np
    import fastbp
    rng = np.random.default_rng(0)
    X = rng.random((256, 64), dtype=np.{dtype})
    y = rng.integers(0, 10, size=256)
    net = fastbp.MLP([64, 64, 10], activation="sigmoid", loss="mse", dtype="{dtype}", seed=0)
    net.fit(X, y, epochs=1, batch_size=16, lr=0.5)
""")

# Untimed, in the new interpreter before the statement: a fresh cache directory per sample.
COLD_CACHE = textwrap.dedent("""
    import os, tempfile
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="cold-", dir={base!r})
""")


class ColdStart(Benchmark):
    param_names = ["cache", "dtype"]
    params = [["warm", "cold"], DTYPES]
    # Every sample is a new process, and a cold one compiles every kernel: no warm-up runs,
    # and fewer samples than the other benchmarks.
    warmup_time = 0
    timeout = 600 if FAST else 1800
    if not FAST:
        repeat = (2, 5, 120.0)
        rounds = 1

    def setup(self, cache, dtype):
        self.base = tempfile.mkdtemp(prefix="fastbp-asv-")
        if cache == "warm":
            # Fill the cache this environment uses, so the timed runs only load from it.
            subprocess.run([sys.executable, "-c", FIRST_EPOCH.format(dtype=dtype)], check=True,
                           timeout=self.timeout)

    def teardown(self, cache, dtype):
        super().teardown()
        if getattr(self, "base", None):
            shutil.rmtree(self.base, ignore_errors=True)

    def timeraw_import_and_first_epoch(self, cache, dtype):
        statement = FIRST_EPOCH.format(dtype=dtype)
        if cache == "cold":
            return statement, COLD_CACHE.format(base=self.base)
        return statement
