"""The small problem of the MPI tests, shared by tests/test_mpi.py and tests/mpi_worker.py."""
import numpy as np

import fastbp

OPTIMIZERS = {"sgd": "sgd", "momentum": {"name": "sgd", "momentum": 0.9}, "adam": "adam",
              "adamw": "adamw"}


def data(n=50, seed=0):
    """``(X (n, 7), labels (n,) in 0..2, sample weights (n,))``."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 7)), rng.integers(0, 3, n), rng.random(n) + 0.5


def net():
    return fastbp.MLP([7, 6, 3], activation="tanh", loss="cross_entropy", dtype="float64",
                      seed=1)
