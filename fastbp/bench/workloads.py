"""Named benchmark workloads, their fixed random data and the weights every engine starts from.

A workload is the seed network (sigmoid on every layer, per-sample loss ``1/2 ||a - y||^2``
averaged over the batch) trained by plain SGD without shuffling: ``layers``, ``batch`` size,
learning rate ``lr`` and ``n_samples`` per epoch. ``n_samples`` is chosen so that an epoch takes
a few tenths of a second for the fastest engine; every benchmark workload divides evenly into
batches (the engines still handle a ragged last batch, as ``MLP.fit`` does: a smaller step).

This module imports only NumPy: the benchmark's worker processes load it before the engine.
"""
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Workload:
    """One benchmark problem. ``layers`` = (n_inputs, hidden..., n_outputs)."""
    name: str
    layers: tuple
    batch: int
    lr: float = 0.01
    n_samples: int = 4096
    description: str = ""

    @property
    def n_batches(self):
        """SGD steps per epoch (the last one smaller when ``batch`` does not divide n_samples)."""
        return -(-self.n_samples // self.batch)

    @property
    def flops_per_sample(self):
        """About ``6 * sum(in * out)``: forward, delta propagation and outer products."""
        return 6 * sum(a * b for a, b in zip(self.layers[:-1], self.layers[1:]))


def _workloads(*items):
    return {w.name: w for w in items}


WORKLOADS = _workloads(
    # The three targets of the throughput issue.
    Workload("seed-b1", (784, 128, 10), 1, n_samples=8192,
             description="the seed network, per-sample SGD"),
    Workload("tiny-b1", (64, 32, 10), 1, n_samples=65536,
             description="a small network, per-sample SGD: call overhead dominates"),
    Workload("mnist-b32", (784, 128, 10), 32, n_samples=32768,
             description="MNIST-sized network, mini-batches of 32"),
    # Odd sizes (no multiple of a vector width anywhere) and a large batch.
    Workload("odd-b1", (777, 129, 11), 1, n_samples=8192,
             description="odd layer sizes, per-sample SGD"),
    Workload("odd-b17", (777, 129, 11), 17, n_samples=17 * 1536,
             description="odd layer sizes, odd batch"),
    Workload("mnist-b256", (784, 128, 10), 256, n_samples=32768,
             description="MNIST-sized network, large batches"),
    # Sweeps for the docs' plots (docs/bench): batch size on 784-128-10 (with seed-b1,
    # mnist-b32 and mnist-b256), and hidden width at batch 32 (with mnist-b32).
    Workload("mnist-b8", (784, 128, 10), 8, n_samples=16384,
             description="MNIST-sized network, mini-batches of 8"),
    Workload("w32-b32", (784, 32, 10), 32, n_samples=32768,
             description="narrow hidden layer (32), mini-batches of 32"),
    Workload("w512-b32", (784, 512, 10), 32, n_samples=8192,
             description="wide hidden layer (512), mini-batches of 32"),
    Workload("w1024-b32", (784, 1024, 10), 32, n_samples=4096,
             description="wider hidden layer (1024), mini-batches of 32"),
    # Big layers and big batches (the Speed II issue): far bigger than the caches.
    Workload("wide-b128", (784, 512, 10), 128, n_samples=8192,
             description="wide hidden layer (512), batches of 128"),
    Workload("deep-b256", (784, 1024, 1024, 10), 256, n_samples=2048,
             description="two hidden layers of 1024, batches of 256"),
    Workload("deep-b1024", (784, 1024, 1024, 10), 1024, n_samples=4096,
             description="two hidden layers of 1024, batches of 1024"),
    # Shapes no tile divides (the Speed II issue: within 0.8 of the big-layer ratios): odd
    # widths with an odd batch, a single output unit, a deep stack of narrow layers.
    Workload("odd-b65", (1000, 777, 33), 65, n_samples=65 * 64,
             description="odd widths (1000-777-33), odd batch of 65"),
    Workload("single-b128", (784, 128, 1), 128, n_samples=32768,
             description="a single output unit, batches of 128"),
    Workload("narrow-b64", (784, 64, 64, 64, 64, 64, 64, 10), 64, n_samples=32768,
             description="six narrow hidden layers (64), batches of 64"),
    # Small problems for the tests: not benchmarks. test-ragged ends on a batch of 1.
    Workload("test-tiny", (6, 5, 3), 2, lr=0.1, n_samples=16,
             description="test problem"),
    Workload("test-ragged", (7, 4, 3, 2), 3, lr=0.1, n_samples=16,
             description="test problem, three layers, ragged last batch"),
)

# What ``python -m fastbp bench`` runs without --workloads: the targets.
DEFAULT_WORKLOADS = ("seed-b1", "tiny-b1", "mnist-b32")


def get_workload(name):
    """The workload called ``name``; a ValueError lists the known ones otherwise."""
    if isinstance(name, Workload):
        return name
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def make_data(workload, dtype="float32", seed=0):
    """Fixed random training data ``(X (N, n_0), Y (N, n_L))`` of ``dtype``, C-contiguous.

    X uniform in [0, 1); Y one-hot rows of uniformly random labels, as float targets. The values
    are drawn directly in ``dtype`` (no float64 temporary, which would inflate the peak memory
    of every engine), so float32 and float64 data differ.
    """
    w = get_workload(workload)
    dt = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    X = rng.random((w.n_samples, w.layers[0]), dtype=dt)
    labels = rng.integers(0, w.layers[-1], size=w.n_samples)
    Y = np.zeros((w.n_samples, w.layers[-1]), dtype=dt)
    Y[np.arange(w.n_samples), labels] = 1
    return X, Y


def initial_weights(workload, seed=0):
    """Starting parameters ``[(W_l (n_out, n_in), b_l (n_out,)), ...]``, float64.

    W uniform in ``[-r, r]`` with ``r = sqrt(2 / (n_in + n_out))`` (fastbp's sigmoid
    initialization); b small and non-zero, so that a wrong bias gradient shows up in the tests.
    Engines round them to their dtype.
    """
    w = get_workload(workload)
    rng = np.random.default_rng([seed, 1])
    params = []
    for n_in, n_out in zip(w.layers[:-1], w.layers[1:]):
        r = np.sqrt(2.0 / (n_in + n_out))
        params.append((rng.uniform(-r, r, size=(n_out, n_in)),
                       rng.uniform(-0.1, 0.1, size=n_out)))
    return params
