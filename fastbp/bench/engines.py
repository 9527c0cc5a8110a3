"""The training engines the benchmark compares: fastbp and its peers, on the same problem.

Every engine trains the seed network of a :mod:`workload <fastbp.bench.workloads>` the same way:
sigmoid on every layer, loss ``1/2 ||a - y||^2`` per sample averaged over the batch, plain SGD
with the workload's learning rate, batches taken in order (no shuffling; a ragged last batch is
a smaller step), from the same :func:`initial_weights` on the same :func:`make_data`.

>>> epoch = make_epoch("numpy", "test-tiny")    # setup and compilation happen here
>>> epoch()                                     # one epoch; returns when the work is done
>>> [W.shape for W, b in epoch.get_weights()]   # the trained weights, float64
[(5, 6), (3, 5)]

Engines:

* ``fastbp``: ``fastbp.MLP(...).fit(X, Y, epochs=1, batch_size=b, lr=lr, shuffle=False)``.
* ``numpy``: forward and backward written out with ``@`` matrix products (NumPy's BLAS).
* ``torch``: ``nn.Sequential(Linear, Sigmoid, ...)`` and ``optim.SGD``, a Python loop over
  slices of the data tensor, the usual ``zero_grad / forward / backward / step``.
* ``jax``: one jitted SGD step (``jax.grad`` of the loss) called in a Python loop; the data
  lives on the device and the step slices its batch out of it (``lax.dynamic_slice``), so a
  step is one dispatch with no host-to-device copy.
* ``jax-scan``: the whole epoch compiled as one ``lax.scan`` over the batches (the strongest
  JAX form: no Python between steps).

Importing this module imports only NumPy; an engine's library is imported by
:func:`make_epoch`. Thread counts of NumPy's BLAS, numba and XLA are read from the environment
when those libraries are first imported (see :mod:`fastbp.bench.worker`); PyTorch's is set here.
"""
import importlib.util

import numpy as np

from .workloads import get_workload, initial_weights, make_data

ENGINES = ("fastbp", "numpy", "torch", "jax", "jax-scan")

# Modules each engine needs, checked without importing them.
_REQUIRES = {
    "fastbp": ("fastbp", "numba"),
    "numpy": ("numpy",),
    "torch": ("torch",),
    "jax": ("jax", "jaxlib"),
    "jax-scan": ("jax", "jaxlib"),
}


def _check_engine(engine):
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; known: {', '.join(ENGINES)}")


def available(engine):
    """True when ``engine``'s library is installed (found, not imported)."""
    _check_engine(engine)
    return all(importlib.util.find_spec(m) is not None for m in _REQUIRES[engine])


def available_engines():
    return tuple(e for e in ENGINES if available(e))


class EpochRunner:
    """One engine's model and data for one workload. Calling it runs one epoch of SGD and
    returns when the work is done; ``get_weights()`` gives the current parameters as
    ``[(W_l (n_out, n_in), b_l (n_out,)), ...]`` in float64 NumPy arrays."""

    engine = None

    def __init__(self, workload, dtype, X, Y):
        self.workload = workload
        self.dtype = np.dtype(dtype)
        self.n_samples = X.shape[0]

    def __call__(self):
        raise NotImplementedError

    def get_weights(self):
        raise NotImplementedError

    def __repr__(self):
        return (f"<{self.engine} epoch of {self.workload.name}: {self.n_samples} samples, "
                f"batch {self.workload.batch}, {self.dtype.name}>")


def _batch_starts(n_samples, batch):
    return range(0, n_samples, batch)


# ---- fastbp ----------------------------------------------------------------------------------
class _FastbpEpoch(EpochRunner):
    engine = "fastbp"

    def __init__(self, workload, dtype, X, Y, params, seed, threads):
        super().__init__(workload, dtype, X, Y)
        import numba

        import fastbp
        if threads is not None:  # numba's pool was sized at import (NUMBA_NUM_THREADS)
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        w = workload
        self.net = self._make_net(fastbp, params, seed)
        self.X, self.Y = X, Y
        # Load (or compile) the kernels on a throwaway copy: a full batch and, where the
        # epoch ends on one, a ragged batch, so the first timed epoch compiles nothing.
        n = min(self.n_samples, w.batch + self.n_samples % w.batch)
        self._make_net(fastbp, params, seed).fit(X[:n], Y[:n], epochs=1, batch_size=w.batch,
                                                 lr=w.lr, shuffle=False)

    def _make_net(self, fastbp, params, seed):
        net = fastbp.MLP(list(self.workload.layers), activation="sigmoid", loss="mse",
                         dtype=self.dtype.name, seed=seed)
        for l, (W, b) in enumerate(params):
            net.weights[l] = W
            net.biases[l] = b
        return net

    def __call__(self):
        w = self.workload
        self.net.fit(self.X, self.Y, epochs=1, batch_size=w.batch, lr=w.lr, shuffle=False)

    def get_weights(self):
        return [(np.array(W, dtype=np.float64), np.array(b, dtype=np.float64))
                for W, b in zip(self.net.weights, self.net.biases)]


# ---- NumPy -----------------------------------------------------------------------------------
class _NumpyEpoch(EpochRunner):
    engine = "numpy"

    def __init__(self, workload, dtype, X, Y, params):
        super().__init__(workload, dtype, X, Y)
        self.X, self.Y = X, Y
        self.params = [(W.astype(self.dtype), b.astype(self.dtype)) for W, b in params]

    def __call__(self):
        X, Y, params = self.X, self.Y, self.params
        lr = self.dtype.type(self.workload.lr)
        B = self.workload.batch
        for start in _batch_starts(self.n_samples, B):
            x = X[start:start + B]
            y = Y[start:start + B]
            acts = [x]                                  # a_0 = x, a_1, ..., a_L
            for W, b in params:
                acts.append(1 / (1 + np.exp(-(acts[-1] @ W.T + b))))
            a = acts[-1]
            delta = (a - y) * a * (1 - a)               # (B, n_L)
            scale = self.dtype.type(1) / self.dtype.type(x.shape[0])
            for l in range(len(params) - 1, -1, -1):
                W, b = params[l]
                a_prev = acts[l]
                dW = (delta.T @ a_prev) * scale         # (n_out, n_in)
                db = delta.sum(axis=0) * scale
                if l > 0:                               # with W_l before its update
                    delta = (delta @ W) * a_prev * (1 - a_prev)
                W -= lr * dW
                b -= lr * db

    def get_weights(self):
        return [(W.astype(np.float64), b.astype(np.float64)) for W, b in self.params]


# ---- PyTorch ---------------------------------------------------------------------------------
class _TorchEpoch(EpochRunner):
    engine = "torch"

    def __init__(self, workload, dtype, X, Y, params, threads):
        super().__init__(workload, dtype, X, Y)
        import torch
        if threads is not None:
            torch.set_num_threads(threads)
        self.torch = torch
        tdtype = {"float32": torch.float32, "float64": torch.float64}[self.dtype.name]
        modules = []
        with torch.no_grad():
            for W, b in params:
                lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdtype)
                lin.weight.copy_(torch.from_numpy(W))
                lin.bias.copy_(torch.from_numpy(b))
                modules += [lin, torch.nn.Sigmoid()]
        self.model = torch.nn.Sequential(*modules)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=workload.lr)
        self.X = torch.from_numpy(X)   # shares memory with the NumPy data
        self.Y = torch.from_numpy(Y)

    def __call__(self):
        X, Y, model, opt = self.X, self.Y, self.model, self.optimizer
        B = self.workload.batch
        for start in _batch_starts(self.n_samples, B):
            x = X[start:start + B]
            y = Y[start:start + B]
            opt.zero_grad()
            loss = 0.5 * ((model(x) - y) ** 2).sum(dim=1).mean()
            loss.backward()
            opt.step()

    def get_weights(self):
        lins = [m for m in self.model if isinstance(m, self.torch.nn.Linear)]
        return [(lin.weight.detach().numpy().astype(np.float64),
                 lin.bias.detach().numpy().astype(np.float64)) for lin in lins]


# ---- JAX -------------------------------------------------------------------------------------
def _jax_sgd_step(jax, lr):
    """The SGD step shared by both JAX engines: params (tuple of (W, b)), x (B, n), y (B, m)."""
    jnp = jax.numpy

    def loss(params, x, y):
        a = x
        for W, b in params:
            a = jax.nn.sigmoid(a @ W.T + b)
        return 0.5 * jnp.mean(jnp.sum((a - y) ** 2, axis=1))

    def step(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree.map(lambda p, g: p - lr * g, params, grads)

    return step


class _JaxEpochBase(EpochRunner):
    def __init__(self, workload, dtype, X, Y, params):
        super().__init__(workload, dtype, X, Y)
        import jax
        if self.dtype == np.float64:
            jax.config.update("jax_enable_x64", True)
        self.jax = jax
        self.params = tuple((jax.numpy.asarray(W, dtype=self.dtype),
                             jax.numpy.asarray(b, dtype=self.dtype)) for W, b in params)
        self.step = _jax_sgd_step(jax, workload.lr)
        B = workload.batch
        self.n_full = self.n_samples // B
        self.tail = self.n_samples - self.n_full * B

    def get_weights(self):
        return [(np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64))
                for W, b in self.params]

    def _copy_params(self):
        return self.jax.tree.map(lambda p: p.copy(), self.params)


class _JaxLoopEpoch(_JaxEpochBase):
    engine = "jax"

    def __init__(self, workload, dtype, X, Y, params):
        super().__init__(workload, dtype, X, Y, params)
        jax = self.jax
        B = workload.batch
        step = self.step

        def step_at(params, X, Y, start):
            x = jax.lax.dynamic_slice_in_dim(X, start, B)
            y = jax.lax.dynamic_slice_in_dim(Y, start, B)
            return step(params, x, y)

        self.step_at = jax.jit(step_at, donate_argnums=0)
        self.step_tail = jax.jit(step, donate_argnums=0)
        self.X = jax.device_put(X)
        self.Y = jax.device_put(Y)
        if self.tail:
            self.X_tail = jax.device_put(X[self.n_full * B:])
            self.Y_tail = jax.device_put(Y[self.n_full * B:])
        # Compile both steps now, on copies (the steps donate their parameter buffers).
        jax.block_until_ready(self.step_at(self._copy_params(), self.X, self.Y, 0))
        if self.tail:
            jax.block_until_ready(self.step_tail(self._copy_params(), self.X_tail, self.Y_tail))

    def __call__(self):
        params, step_at, X, Y = self.params, self.step_at, self.X, self.Y
        B = self.workload.batch
        for i in range(self.n_full):
            params = step_at(params, X, Y, i * B)
        if self.tail:
            params = self.step_tail(params, self.X_tail, self.Y_tail)
        self.params = self.jax.block_until_ready(params)


class _JaxScanEpoch(_JaxEpochBase):
    engine = "jax-scan"

    def __init__(self, workload, dtype, X, Y, params):
        super().__init__(workload, dtype, X, Y, params)
        jax = self.jax
        B = workload.batch
        step, tail = self.step, self.tail
        n_full = self.n_full

        def epoch(params, Xb, Yb, X_tail, Y_tail):
            # Xb (n_full, B, n_0), Yb (n_full, B, n_L): one scan step per batch
            params, _ = jax.lax.scan(lambda p, xy: (step(p, *xy), None), params, (Xb, Yb))
            if tail:
                params = step(params, X_tail, Y_tail)
            return params

        self.Xb = jax.device_put(X[:n_full * B].reshape(n_full, B, -1))
        self.Yb = jax.device_put(Y[:n_full * B].reshape(n_full, B, -1))
        self.X_tail = jax.device_put(X[n_full * B:])   # (0, n) arrays when there is no tail
        self.Y_tail = jax.device_put(Y[n_full * B:])
        # Compiled ahead of time: no epoch runs here.
        self.epoch = jax.jit(epoch, donate_argnums=0).lower(
            self.params, self.Xb, self.Yb, self.X_tail, self.Y_tail).compile()

    def __call__(self):
        params = self.epoch(self.params, self.Xb, self.Yb, self.X_tail, self.Y_tail)
        self.params = self.jax.block_until_ready(params)


# ---- the factory -----------------------------------------------------------------------------
def make_epoch(engine, workload, dtype="float32", seed=0, data=None, threads=None):
    """A ready-to-run epoch of ``engine`` on ``workload`` (a name or a Workload).

    Returns an :class:`EpochRunner`: calling it runs one epoch of SGD on the workload's fixed
    data and blocks until the work is done; its ``get_weights()`` gives the trained parameters.
    Imports, model construction, data transfer and compilation all happen here.

    ``data``: ``(X, Y)`` to train on instead of ``make_data(workload, dtype, seed)`` (the
    benchmark worker generates it outside the engine's setup time). ``threads``: applied where
    a library can change its thread count after import (numba lowers its pool, PyTorch
    ``set_num_threads``); NumPy's BLAS and XLA read theirs from the environment at import.
    """
    _check_engine(engine)
    w = get_workload(workload)
    dtype = np.dtype(dtype)
    if dtype.name not in ("float32", "float64"):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}")
    X, Y = make_data(w, dtype, seed) if data is None else data
    X = np.ascontiguousarray(X, dtype=dtype)
    Y = np.ascontiguousarray(Y, dtype=dtype)
    if X.shape != (X.shape[0], w.layers[0]) or Y.shape != (X.shape[0], w.layers[-1]):
        raise ValueError(f"data for {w.name} must be X (N, {w.layers[0]}) and "
                         f"Y (N, {w.layers[-1]}), got {X.shape} and {Y.shape}")
    params = initial_weights(w, seed)
    if engine == "fastbp":
        return _FastbpEpoch(w, dtype, X, Y, params, seed, threads)
    if engine == "numpy":
        return _NumpyEpoch(w, dtype, X, Y, params)
    if engine == "torch":
        return _TorchEpoch(w, dtype, X, Y, params, threads)
    if engine == "jax":
        return _JaxLoopEpoch(w, dtype, X, Y, params)
    return _JaxScanEpoch(w, dtype, X, Y, params)


def versions(engine):
    """Versions (and thread settings) of the libraries ``engine`` uses; call after make_epoch."""
    import platform
    info = {"python": platform.python_version(), "numpy": np.__version__}
    if engine == "fastbp":
        import numba

        import fastbp
        info.update(fastbp=fastbp.__version__, numba=numba.__version__,
                    numba_threads=numba.get_num_threads())
        try:
            info["numba_threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            info["numba_threading_layer"] = None
    elif engine == "numpy":
        try:
            info["blas"] = np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]
        except (AttributeError, KeyError, TypeError):
            info["blas"] = None
    elif engine == "torch":
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    else:
        import jax
        import jaxlib
        info.update(jax=jax.__version__, jaxlib=jaxlib.__version__,
                    jax_backend=jax.default_backend())
    return info
