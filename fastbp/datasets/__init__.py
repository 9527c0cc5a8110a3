"""Datasets bundled with fastbp.

``digits.csv.gz``: the UCI "Optical Recognition of Handwritten Digits" data set
(E. Alpaydin and C. Kaynak, 1998; UCI Machine Learning Repository), in the 8x8 version that
scikit-learn distributes: 1,797 images, 64 pixel values 0..16 in row-major order, then the class
label 0..9. License: CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/). See ``README``
in this folder.
"""
import gzip
from importlib import resources

import numpy as np

from .. import _validation as V


def load_digits(dtype="float32", scale=True):
    """The digits set as ``(X, y)``: X (1797, 64) float pixels, y (1797,) int64 labels 0..9.

    With ``scale`` (the default) pixels are divided by 16 into [0, 1].
    """
    dt = V.check_dtype(dtype)
    with resources.files(__name__).joinpath("digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, "rt") as fh:
            data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    X = data[:, :64].astype(dt)
    if scale:
        X /= dt.type(16)
    return np.ascontiguousarray(X), data[:, 64].copy()


def train_test_split(X, y, test_fraction=0.25, seed=0):
    """A fixed, seeded split: ``X_train, X_test, y_train, y_test``.

    Stratified when ``y`` holds class labels (1-D integers, booleans or strings): each class is
    split in the same proportion, so the test set has every class that has enough samples.
    Other targets (floats, 2-D arrays) are split as a whole. The same ``seed`` always gives the
    same split (NumPy's PCG64 generator).
    """
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"X and y must be arrays of samples, got shapes {X.shape} and "
                         f"{y.shape}")
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has {y.shape[0]}")
    test_fraction = V.check_positive_float("test_fraction", test_fraction)
    if not test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    seed = V.check_int("seed", seed, low=0)
    labels = y if y.ndim == 1 and y.dtype.kind in "biuUSO" else None
    train, test = split_indices(len(y), test_fraction, np.random.default_rng(seed), labels)
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"test_fraction={test_fraction} of {len(y)} samples leaves the "
                         f"{'train' if len(train) == 0 else 'test'} part empty")
    return X[train], X[test], y[train], y[test]


def split_indices(n, fraction, rng, labels=None):
    """``(kept, held_out)``: sorted indices into ``0 .. n-1``, ``round(fraction * size)`` of each
    class of ``labels`` (of all ``n`` without labels) held out, chosen by ``rng`` (a NumPy
    Generator)."""
    groups = [np.arange(n)] if labels is None else \
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
    held = []
    for idx in groups:
        rng.shuffle(idx)
        held.append(idx[:int(round(fraction * len(idx)))])
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(n), held), held


def load_digits_split(dtype="float32", test_fraction=0.25, seed=0):
    """``load_digits`` followed by the fixed split: ``X_train, X_test, y_train, y_test``."""
    X, y = load_digits(dtype)
    return train_test_split(X, y, test_fraction, seed)
