"""Each fastbp kernel alone, on buffers allocated (and compiled for) in ``setup``.

Dense layers are square, ``width`` inputs and ``width`` outputs with a sigmoid, ``batch`` rows.
The threaded kernels (``dense_forward``, ...) are timed at each thread count, their serial
twins (``dense_forward_serial``, ...) once per shape; ``deferred_sweep`` (the previous
batch's SGD steps on this layer and the next one, and this batch's forward pass, in one threaded
region) at each thread count.
"""
import inspect

import numpy as np

from fastbp import kernels as K

try:
    from fastbp.kernels.dense import deferred_sweep
except ImportError:  # commits before it (they had a one-layer ``dense_step_forward``)
    deferred_sweep = None

from .common import BATCHES, DTYPES, FAST, THREADS, WIDTHS, Benchmark

N_OUTPUTS = [10] if FAST else [10, 1000]
N_PARAMS = [10_000] if FAST else [10_000, 1_000_000]
LOSSES = ["mse", "cross_entropy"]


def _dense_buffers(width, batch, dtype, seed=0):
    """Inputs and outputs of one square dense layer: values in the ranges training sees."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    r = dt.type(np.sqrt(2.0 / (2 * width)))
    return {
        "inp": rng.random((batch, width), dtype=dt),              # a_{l-1}, sigmoid outputs
        "weight": (rng.random((width, width), dtype=dt) * 2 - 1) * r,
        "bias": np.zeros(width, dtype=dt),
        "out": np.empty((batch, width), dtype=dt),
        "dout": rng.random((batch, width), dtype=dt) - dt.type(0.5),  # delta_l
        "dinp": np.empty((batch, width), dtype=dt),
        "dweight": np.empty((width, width), dtype=dt),
        "dbias": np.empty(width, dtype=dt),
        "scale": dt.type(1.0 / batch),
        "step": dt.type(-1e-6 / batch),  # a small SGD step: the weights barely move per call
    }


class _DenseLayerBase(Benchmark):
    forward = backward = grad = None     # the kernels, set by the subclasses

    def _setup(self, width, batch, dtype):
        self.b = _dense_buffers(width, batch, dtype)
        # First calls compile (or load) the kernels for this dtype.
        self.time_forward()
        self.time_backward()
        self.time_grad()

    def time_forward(self, *params):
        b = self.b
        self.forward(b["out"], b["inp"], b["weight"], b["bias"], K.SIGMOID)

    def time_backward(self, *params):
        b = self.b
        self.backward(b["dinp"], b["dout"], b["weight"], b["inp"], K.SIGMOID)

    def time_grad(self, *params):
        b = self.b
        self.grad(b["dweight"], b["dbias"], b["dout"], b["inp"], b["scale"])


class DenseLayer(_DenseLayerBase):
    """``dense_forward``, ``dense_backward`` (delta propagation) and ``dense_grad`` (the
    B-summed outer products), threaded."""
    param_names = ["width", "batch", "dtype", "threads"]
    params = [WIDTHS, BATCHES, DTYPES, THREADS]
    forward = staticmethod(K.dense_forward)
    backward = staticmethod(K.dense_backward)
    grad = staticmethod(K.dense_grad)

    def setup(self, width, batch, dtype, threads):
        self.pin_threads(threads)
        self._setup(width, batch, dtype)


class BigLayer(_DenseLayerBase):
    """The threaded kernels at the big square layer of the deep workloads (1024 x 1024) and
    the batches that take the packed panels (``dense.use_panels``: 256 and 1024 samples)."""
    param_names = ["batch", "dtype", "threads"]
    params = [[256] if FAST else [256, 1024], DTYPES, THREADS]
    forward = staticmethod(K.dense_forward)
    backward = staticmethod(K.dense_backward)
    grad = staticmethod(K.dense_grad)

    def setup(self, batch, dtype, threads):
        self.pin_threads(threads)
        self._setup(1024, batch, dtype)


class DeferredSweep(Benchmark):
    """``deferred_sweep`` on a square layer followed by a layer of 10 units: delta propagation
    through the 10-unit layer, its step and this layer's, then the forward pass of a new batch,
    in ``threads`` tasks."""
    param_names = ["width", "batch", "dtype", "threads"]
    params = [WIDTHS, BATCHES, DTYPES, THREADS]

    def setup(self, width, batch, dtype, threads):
        if deferred_sweep is None:
            raise NotImplementedError("no deferred_sweep in this version")
        self.pin_threads(threads)
        self.threads = threads
        b = self.b = _dense_buffers(width, batch, dtype)
        rng = np.random.default_rng(1)
        dt = np.dtype(dtype)
        b["w_next"] = (rng.random((10, width), dtype=dt) - dt.type(0.5)) * dt.type(0.1)
        b["b_next"] = np.zeros(10, dtype=dt)
        b["d_next"] = rng.random((batch, 10), dtype=dt) - dt.type(0.5)
        b["a_prev"] = rng.random((batch, width), dtype=dt)
        if "rows" in inspect.signature(getattr(deferred_sweep, "py_func",
                                               deferred_sweep)).parameters:
            b["rows"] = np.arange(batch, dtype=np.int64)
        self.time_deferred_sweep()

    def time_deferred_sweep(self, *params):
        b = self.b
        if "rows" in b:  # the batches are rows of an array, read in place (from 2026-11-28)
            deferred_sweep(b["out"], b["dinp"], b["inp"], b["rows"], b["inp"], b["rows"],
                           b["a_prev"], b["d_next"], b["weight"], b["bias"], b["w_next"],
                           b["b_next"], b["step"], True, K.SIGMOID, self.threads)
        else:
            deferred_sweep(b["out"], b["dinp"], b["inp"], b["inp"], b["a_prev"], b["d_next"],
                           b["weight"], b["bias"], b["w_next"], b["b_next"], b["step"], True,
                           K.SIGMOID, self.threads)


class DenseLayerSerial(_DenseLayerBase):
    """The serial twins: the same loops on the calling thread (what the drivers use below
    ``PARALLEL_MIN_WORK``)."""
    param_names = ["width", "batch", "dtype"]
    params = [WIDTHS, BATCHES, DTYPES]
    forward = staticmethod(K.dense_forward_serial)
    backward = staticmethod(K.dense_backward_serial)
    grad = staticmethod(K.dense_grad_serial)

    def setup(self, width, batch, dtype):
        self.pin_threads(1)
        self._setup(width, batch, dtype)


class OutputLayer(Benchmark):
    """``output_delta`` and ``loss_sum`` for ``batch`` rows of ``n_outputs``: sigmoid outputs
    with squared error, or softmax outputs with cross-entropy."""
    param_names = ["n_outputs", "batch", "dtype", "loss"]
    params = [N_OUTPUTS, BATCHES, DTYPES, LOSSES]

    def setup(self, n_outputs, batch, dtype, loss):
        dt = np.dtype(dtype)
        rng = np.random.default_rng(0)
        out = rng.random((batch, n_outputs), dtype=dt) + dt.type(0.01)
        if loss == "cross_entropy":
            out /= out.sum(axis=1, keepdims=True)
            self.act = K.SOFTMAX
        else:
            self.act = K.SIGMOID
        self.out = out
        self.target = np.zeros_like(out)
        self.target[np.arange(batch), rng.integers(0, n_outputs, size=batch)] = 1
        self.delta = np.empty_like(out)
        self.loss = K.LOSSES[loss]
        self.time_output_delta()
        self.time_loss_sum()

    def time_output_delta(self, *params):
        K.output_delta(self.delta, self.out, self.target, self.loss, self.act)

    def time_loss_sum(self, *params):
        K.loss_sum(self.out, self.target, self.loss)


def _sgd_buffers(n_params, dtype):
    dt = np.dtype(dtype)
    rng = np.random.default_rng(0)
    return (rng.random(n_params, dtype=dt) - dt.type(0.5),
            rng.random(n_params, dtype=dt) - dt.type(0.5), dt.type(1e-3))


class SGDUpdate(Benchmark):
    """``sgd_update``: ``params -= lr * grads`` over the flat buffer, threaded."""
    param_names = ["n_params", "dtype", "threads"]
    params = [N_PARAMS, DTYPES, THREADS]

    def setup(self, n_params, dtype, threads):
        self.pin_threads(threads)
        self.args = _sgd_buffers(n_params, dtype)
        K.sgd_update(*self.args)

    def time_sgd_update(self, *params):
        K.sgd_update(*self.args)


class SGDUpdateSerial(Benchmark):
    """``sgd_update_serial``: the same loop on the calling thread."""
    param_names = ["n_params", "dtype"]
    params = [N_PARAMS, DTYPES]

    def setup(self, n_params, dtype):
        self.pin_threads(1)
        self.args = _sgd_buffers(n_params, dtype)
        K.sgd_update_serial(*self.args)

    def time_sgd_update(self, *params):
        K.sgd_update_serial(*self.args)
