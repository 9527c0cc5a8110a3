"""Optimizer updates: one flat loop over the whole parameter buffer.

All parameters of a network live in one flat array (every ``W_l``, ``b_l`` a view into it) and
the gradients in a twin array of the same layout, so an update is a single ``prange`` loop in
which each thread owns a contiguous slice.
"""
from numba import prange

from .._config import jit_pair


def sgd_update(params, grads, lr):
    """Plain gradient descent: ``params <- params - lr * grads``.

    params (P,), grads (P,), lr: a scalar of the arrays' dtype.
    """
    for k in prange(params.shape[0]):
        params[k] -= lr * grads[k]


sgd_update_serial, sgd_update = jit_pair(sgd_update)
