"""Inference with fastbp: ``MLP.forward`` (softmax outputs) and ``MLP.predict`` (class labels)
on ``batch`` rows at a time. The kernels are compiled (or loaded) in ``setup``."""
import fastbp

from .common import (BATCHES, DEPTHS, DTYPES, THREADS, WIDTHS, Benchmark, layer_sizes,
                     synthetic_data)


class Inference(Benchmark):
    """A classifier with ``depth`` sigmoid hidden layers of ``width`` units and a softmax
    output over 10 classes, applied to ``batch`` rows."""
    param_names = ["width", "depth", "batch", "dtype", "threads"]
    params = [WIDTHS, DEPTHS, BATCHES, DTYPES, THREADS]

    def setup(self, width, depth, batch, dtype, threads):
        self.pin_threads(threads)
        sizes = layer_sizes(width, depth)
        self.X, _ = synthetic_data(batch, sizes[0], sizes[-1], dtype)
        self.net = fastbp.MLP(sizes, activation="sigmoid", loss="cross_entropy", dtype=dtype,
                              seed=0)
        self.net.predict(self.X)   # compiles forward and predict for this dtype

    def time_forward(self, *params):
        self.net.forward(self.X)

    def time_predict(self, *params):
        self.net.predict(self.X)
