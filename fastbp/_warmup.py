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
