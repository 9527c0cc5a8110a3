"""``fastbp.warmup()``: compile the kernels ahead of time."""
import time

import numpy as np

from . import _validation as V


def warmup(dtypes=("float32", "float64")):
    """Compile every training and inference entry point for the given dtypes, so that the first
    real call does not pay for compilation. With the on-disk cache on (the default, see
    ``FASTBP_CACHE``) this also fills the cache for later processes. Returns the seconds spent.

    The kernels are compiled once per dtype: layer sizes, activations and losses are run-time
    arguments, so one warm-up covers every network of that dtype.
    """
    from .model import MLP

    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    t0 = time.perf_counter()
    for dtype in dtypes:
        dt = V.check_dtype(dtype)
        X = np.linspace(0, 1, 12, dtype=dt).reshape(4, 3)
        y = np.array([0, 1, 0, 1])
        net = MLP([3, 2, 2], loss="cross_entropy", dtype=dt, seed=0)
        for batch_size in (1, 2):
            net.fit(X, y, epochs=1, batch_size=batch_size, lr=0.1)
        net.forward(X)
        net.loss(X, y)
        net.gradients(X, y)
    return time.perf_counter() - t0


def warmup_all():
    """Compile every kernel signature that fastbp's Python API uses, for both dtypes, in this
    process (see :mod:`fastbp._cache`): each training path, inference, losses, gradients,
    optimizer steps, Hogwild and the checked kernel wrappers."""
    import contextlib
    import io

    from . import kernels
    from .kernels import checked
    from .kernels.fused import sgd_hogwild
    from .kernels.network import SERIAL_ONLY
    from .model import MLP
    from .optim import SGD, Adam

    for dtype in ("float32", "float64"):
        dt = np.dtype(dtype)
        X = np.linspace(0, 1, 15, dtype=dt).reshape(5, 3)
        y = np.array([0, 1, 0, 1, 1])
        w = np.ones(5)
        net = MLP([3, 2, 2], loss="cross_entropy", dtype=dt, seed=0)
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            for batch_size in (1, 2):
                net.fit(X, y, epochs=1, batch_size=batch_size, lr=0.1)
                net.fit(X, y, epochs=1, batch_size=batch_size, lr=0.1, progress=True)
                net.fit(X, y, epochs=1, batch_size=batch_size, optimizer="adam",
                        validation_data=(X, y), sample_weight=w)
                net.fit(X, y, epochs=1, batch_size=batch_size, optimizer="adam",
                        progress=True)
                net.partial_fit(X, y, batch_size=batch_size)
        net.fit(X, y, epochs=1, batch_size=1, lr=0.1, hogwild=True)
        net.forward(X)
        net.predict_proba(X)
        net.score(X, y)
        net.loss(X, y)
        net.gradients(X, y)
        params = np.zeros(4, dtype=dt)
        for opt in (SGD(momentum=0.9), Adam()):
            opt.step(params, np.ones(4, dtype=dt))
        S = kernels.network.workspace_size(net._layout)
        order = np.arange(5, dtype=np.int64)
        Y1 = np.eye(2, dtype=dt)[y]
        sgd_hogwild(net.params, X, Y1, order, dt.type(0.1), net._layout, net._loss_code,
                    np.zeros((2, 2, S), dt), np.zeros((2, S), dt))
        kernels.fused.sgd_per_sample(net.params, X, Y1, order, 0, 5, dt.type(0.1), net._layout,
                                     net._loss_code, np.zeros((2, S), dt), np.zeros(S, dt),
                                     SERIAL_ONLY)
        W, b = net.weights[0].copy(), net.biases[0].copy()
        out, d = np.empty((5, 2), dt), np.ones((5, 2), dt)
        checked.dense_forward(out, X, W, b, kernels.SIGMOID)
        checked.dense_backward(np.empty_like(X), d, W, X, kernels.SIGMOID)
        for accumulate in (False, True):
            checked.dense_grad(np.empty_like(W), np.empty_like(b), d, X, 0.5, accumulate)
        checked.output_delta(np.empty_like(out), out, Y1, kernels.MSE, kernels.SIGMOID)
        checked.loss_sum(out, Y1, kernels.MSE)
        checked.sgd_update(np.zeros(3, dt), np.ones(3, dt), 0.1)
