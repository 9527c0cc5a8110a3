"""Training with fastbp: a whole epoch through ``MLP.fit``, one SGD step, the peak memory of a
fit, and the throughput in samples per second.

The network is the seed network of backprop.md at a chosen size: sigmoid everywhere, squared
error, plain SGD, ``depth`` hidden layers of ``width`` units on ``width`` inputs, 10 outputs.
Every kernel the timed code calls is compiled (or loaded from numba's cache) in ``setup``.
"""
import time

import numpy as np

import fastbp

from .common import (BATCHES, DEPTHS, DTYPES, LR, THREADS, WIDTHS, Benchmark, epoch_samples,
                     layer_sizes, synthetic_data)


class Training(Benchmark):
    """``MLP.fit`` for one epoch of ``epoch_samples(sizes)`` samples, ``batch`` per step.

    ``time_step`` times one SGD step: ``fit`` on exactly one batch (one call's validation and
    allocation plus one step: what a caller that steps batch by batch pays per step).
    """
    param_names = ["width", "depth", "batch", "dtype", "threads"]
    params = [WIDTHS, DEPTHS, BATCHES, DTYPES, THREADS]

    def setup(self, width, depth, batch, dtype, threads):
        self.pin_threads(threads)
        sizes = layer_sizes(width, depth)
        self.n_samples = epoch_samples(sizes)
        self.batch = batch
        self.X, self.Y = synthetic_data(self.n_samples, sizes[0], sizes[-1], dtype)
        self.net = fastbp.MLP(sizes, activation="sigmoid", loss="mse", dtype=dtype, seed=0)
        self.X_step, self.Y_step = self.X[:batch], self.Y[:batch]
        # Compile (or load) the training kernels for this dtype outside the timed region.
        self.time_step()

    def _epoch(self):
        self.net.fit(self.X, self.Y, epochs=1, batch_size=self.batch, lr=LR, shuffle=True)

    def time_epoch(self, *params):
        self._epoch()

    def time_step(self, *params):
        self.net.fit(self.X_step, self.Y_step, epochs=1, batch_size=self.batch, lr=LR,
                     shuffle=False)

    def peakmem_fit(self, *params):
        self._epoch()

    def track_samples_per_second(self, *params):
        best = np.inf
        for _ in range(self.throughput_repeat):
            t0 = time.perf_counter()
            self._epoch()
            best = min(best, time.perf_counter() - t0)
        return self.n_samples / best

    track_samples_per_second.unit = "samples/s"
