"""fastbp: multilayer perceptrons trained by backpropagation on the CPU, with explicit-loop
Numba kernels.

>>> import fastbp
>>> X_train, X_test, y_train, y_test = fastbp.datasets.load_digits_split()
>>> net = fastbp.MLP([64, 64, 10], activation="tanh", loss="cross_entropy", seed=0)
>>> net.fit(X_train, y_train, epochs=20, batch_size=16, lr=0.1)  # doctest: +SKIP
"""
from . import callbacks, datasets, kernels, optim
from ._info import show_config
from ._threads import get_num_threads, set_num_threads, threads
from ._warmup import warmup
from .io import load
from .model import MLP

__version__ = "0.1.0"

from . import _cache  # noqa: E402  (after every kernel module is imported)

_cache.install()  # compiles nothing: each kernel set is compiled on first use (fastbp._cache)

__all__ = ["MLP", "load", "callbacks", "datasets", "kernels", "optim", "warmup", "show_config",
           "set_num_threads", "get_num_threads", "threads", "__version__"]


def __getattr__(name):
    # fastbp.sklearn imports scikit-learn (an optional extra): only on first use.
    if name == "sklearn":
        import importlib
        return importlib.import_module(".sklearn", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
