"""Activation functions, chosen by an integer code so that one compiled kernel serves them all.

Each derivative is written in terms of the activation's *output* ``a`` (the backward pass keeps
only the activations, never ``z``): sigmoid ``a (1 - a)``, tanh ``1 - a^2``, relu ``a > 0``,
identity ``1``. Softmax is only used on the output layer, paired with cross-entropy, where the
output delta is ``a - y`` and its Jacobian is never needed.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from .._config import FASTMATH, jit

IDENTITY = 0
SIGMOID = 1
TANH = 2
RELU = 3
SOFTMAX = 4

ACTIVATIONS = {"identity": IDENTITY, "sigmoid": SIGMOID, "tanh": TANH, "relu": RELU,
               "softmax": SOFTMAX}
ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE bit pattern is the low 32 bits of the integer ``bits``."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        v = args[0]
        if bits.bitwidth > 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())
    return types.float32(bits), codegen


def fast_exp(x):
    """``exp(x)`` that the compiler can vectorize (for use inside ``@njit`` code).

    float32: Cody-Waite range reduction ``x = n ln2 + g``, a degree-7 polynomial for ``e^g``,
    and ``2^n`` built from its bit pattern; relative error below 3.1e-7 (about 2.5 ulp) for
    ``x`` in [-87.33, 88.37]; 0 below (no denormals), infinity above (exp(88.72) is the
    largest float32: the top 0.4 overflow early), NaN for NaN.
    libm's scalar ``expf`` is a function call that stops a loop from vectorizing, and it
    dominated the cost of small sigmoid networks. float64: ``np.exp``, unchanged.
    """
    return np.exp(x)


@overload(fast_exp, jit_options={"fastmath": set(FASTMATH)})
def _fast_exp(x):
    if x != types.float32:
        return lambda x: np.exp(x)

    def impl(x):
        lo, hi = np.float32(-87.33), np.float32(88.37)
        c = min(max(x, lo), hi)
        n = np.floor(c * np.float32(1.4426950408889634) + np.float32(0.5))
        g = (c - n * np.float32(0.693145751953125)) - n * np.float32(1.428606765330187e-06)
        p = np.float32(1.0) + g * (np.float32(1.0) + g * (np.float32(0.5) + g * (
            np.float32(1.0 / 6) + g * (np.float32(1.0 / 24) + g * (np.float32(1.0 / 120) + g * (
                np.float32(1.0 / 720) + g * np.float32(1.0 / 5040)))))))
        # int32, not int64: AVX2 converts a vector of floats to int32 in one instruction, to
        # int64 one lane at a time (docs/performance.md, "Sigmoid at 256 bits")
        r = p * _float32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))
        r = np.float32(0.0) if x < lo else r  # underflow (flushed to zero)
        r = np.float32(np.inf) if x > hi else r  # overflow
        return x if x != x else r  # NaN
    return impl


@jit()
def activate(z, act):
    """``f(z)`` for one scalar (float32 or float64; constants take its type) ``z`` and an element-wise activation code (not softmax)."""
    one = type(z)(1.0)
    if act == SIGMOID:
        return one / (one + fast_exp(-z))
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
        # a (1 - a), written as a - a^2: one fused multiply-add, and a form the optimizer keeps
        # (numba's cached copy of a threaded kernel is optimized once more than the copy it
        # runs after compiling; ``a * (one - a)`` came out rounded differently the second time)
        return a - a * a
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
        e = fast_exp(a[k] - mx)
        a[k] = e
        s += e
    inv = a.dtype.type(1.0) / s
    for k in range(m):
        a[k] *= inv


@jit()
def activate_row(a, act):
    """In place: ``a <- f(a)`` for one row ``a (n,)``; softmax included. One loop per
    activation, so that the compiler vectorizes it."""
    n = a.shape[0]
    one = a.dtype.type(1.0)
    if act == SIGMOID:
        for k in range(n):
            a[k] = one / (one + fast_exp(-a[k]))
    elif act == TANH:
        for k in range(n):
            a[k] = np.tanh(a[k])
    elif act == RELU:
        zero = a.dtype.type(0.0)
        for k in range(n):
            a[k] = max(a[k], zero)
    elif act == SOFTMAX:
        softmax_row(a)


# Element-wise activations of a whole layer run over its flat output in pieces of this many
# elements (64 float32 vectors): a narrow layer's rows (10 units) would otherwise be all scalar
# remainder, and a threaded layer gets a few pieces per thread.
ACT_CHUNK = 1024


@jit()
def activation_parts(B, n, act):
    """How many parts ``activate_part`` splits a (B, n) layer output into for ``act``."""
    if act == SOFTMAX:
        return B
    return (B * n + ACT_CHUNK - 1) // ACT_CHUNK


def activate_part(out, act, t, n_parts):
    """In place: ``out <- f(out)`` on part ``t`` of ``n_parts`` (``activation_parts``) of a
    (B, n) layer output. Element-wise activations of a C-contiguous ``out`` take the flat
    elements ``[t ACT_CHUNK, (t + 1) ACT_CHUNK)``; softmax, or another layout, take the rows
    ``[B t / n_parts, B (t + 1) / n_parts)``."""


@jit()
def _activate_rows_part(out, act, t, n_parts):
    B = out.shape[0]
    for b in range(B * t // n_parts, B * (t + 1) // n_parts):
        activate_row(out[b], act)


@overload(activate_part, jit_options={"fastmath": set(FASTMATH)})
def _activate_part(out, act, t, n_parts):
    if out.layout != "C":  # decided when compiling: only a C array has a flat view
        return lambda out, act, t, n_parts: _activate_rows_part(out, act, t, n_parts)

    def impl(out, act, t, n_parts):
        if act == SOFTMAX:
            _activate_rows_part(out, act, t, n_parts)
        else:
            n = out.shape[0] * out.shape[1]
            activate_row(out.reshape(n)[t * ACT_CHUNK:min((t + 1) * ACT_CHUNK, n)], act)
    return impl
