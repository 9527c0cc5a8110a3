"""Activation functions, chosen by an integer code so that one compiled kernel serves them all.

Each derivative is written in terms of the activation's *output* ``a`` (the backward pass keeps
only the activations, never ``z``): sigmoid ``a (1 - a)``, tanh ``1 - a^2``, relu ``a > 0``,
identity ``1``. Softmax is only used on the output layer, paired with cross-entropy, where the
output delta is ``a - y`` and its Jacobian is never needed.
"""
import numpy as np

from .._config import jit

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4

ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "tanh": TANH, "relu": RELU,
               "softmax": SOFTMAX}
ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


@jit()
def activate(z, act):
    """``f(z)`` for one scalar (float32 or float64; constants take its type) ``z`` and an element-wise activation code (not softmax)."""
    one = type(z)(1.0)
    if act == SIGMOID:
        return one / (one + np.exp(-z))
    elif act == TANH:
        return np.tanh(z)
    elif act == RELU:
        return z if z > 0 else type(z)(0.0)
    return z


@jit()
def activation_grad(a, act):
    """``f'(z)`` from the output ``a = f(z)``, for an element-wise activation code."""
    one = type(a)(1.0)
    if act == SIGMOID:
        return a * (one - a)
    elif act == TANH:
        return one - a * a
    elif act == RELU:
        return one if a > 0 else type(a)(0.0)
    return one


@jit()
def softmax_row(a):
    """In place: ``a <- exp(a - max(a)) / sum(exp(a - max(a)))`` for one row ``a (m,)``."""
    m = a.shape[0]
    mx = a[0]
    for k in range(1, m):
        if a[k] > mx:
            mx = a[k]
    s = a.dtype.type(0.0)
    for k in range(m):
        e = np.exp(a[k] - mx)
        a[k] = e
        s += e
    inv = a.dtype.type(1.0) / s
    for k in range(m):
        a[k] *= inv
