"""fastbp's kernels are ordinary numba dispatchers: a user's own ``@numba.njit`` code can call
them. Here a user writes one SGD step of a 2-layer network out of the layer kernels, in both
dtypes and with the threaded and the serial kernels, and the result matches the naive oracle."""
import numba
import numpy as np
import pytest

import naive
from fastbp import kernels as K


@numba.njit(cache=False)
def user_step_threaded(W1, b1, W2, b2, X, Y, lr, a1, a2, d1, d2, dW1, db1, dW2, db2):
    """One SGD step on the batch (X, Y), sigmoid hidden, softmax + cross-entropy output; returns
    the batch loss before the step."""
    B = X.shape[0]
    scale = X.dtype.type(1.0) / X.dtype.type(B)
    K.dense_forward(a1, X, W1, b1, K.SIGMOID)
    K.dense_forward(a2, a1, W2, b2, K.SOFTMAX)
    loss = K.loss_sum(a2, Y, K.CROSS_ENTROPY) / B
    K.output_delta(d2, a2, Y, K.CROSS_ENTROPY, K.SOFTMAX)
    K.dense_grad(dW2, db2, d2, a1, scale)
    K.dense_backward(d1, d2, W2, a1, K.SIGMOID)
    K.dense_grad(dW1, db1, d1, X, scale)
    K.sgd_update(W1.ravel(), dW1.ravel(), lr)
    K.sgd_update(b1, db1, lr)
    K.sgd_update(W2.ravel(), dW2.ravel(), lr)
    K.sgd_update(b2, db2, lr)
    return loss


@numba.njit(cache=False)
def user_step_serial(W1, b1, W2, b2, X, Y, lr, a1, a2, d1, d2, dW1, db1, dW2, db2):
    """The same step from the ``_serial`` kernels."""
    B = X.shape[0]
    scale = X.dtype.type(1.0) / X.dtype.type(B)
    K.dense_forward_serial(a1, X, W1, b1, K.SIGMOID)
    K.dense_forward_serial(a2, a1, W2, b2, K.SOFTMAX)
    loss = K.loss_sum(a2, Y, K.CROSS_ENTROPY) / B
    K.output_delta(d2, a2, Y, K.CROSS_ENTROPY, K.SOFTMAX)
    K.dense_grad_serial(dW2, db2, d2, a1, scale)
    K.dense_backward_serial(d1, d2, W2, a1, K.SIGMOID)
    K.dense_grad_serial(dW1, db1, d1, X, scale)
    K.sgd_update_serial(W1.ravel(), dW1.ravel(), lr)
    K.sgd_update_serial(b1, db1, lr)
    K.sgd_update_serial(W2.ravel(), dW2.ravel(), lr)
    K.sgd_update_serial(b2, db2, lr)
    return loss


@pytest.mark.parametrize("step", [user_step_threaded, user_step_serial],
                         ids=["threaded", "serial"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_user_njit_training_step_matches_naive(step, dtype):
    rng = np.random.default_rng(12)
    B, n, h, m = 9, 300, 17, 5  # 300 inputs: the 256-column chunks are crossed
    X = rng.uniform(-1, 1, (B, n)).astype(dtype)
    Y = np.eye(m, dtype=dtype)[rng.integers(0, m, B)]
    W1 = rng.uniform(-0.1, 0.1, (h, n)).astype(dtype)
    b1 = rng.uniform(-0.1, 0.1, h).astype(dtype)
    W2 = rng.uniform(-0.5, 0.5, (m, h)).astype(dtype)
    b2 = rng.uniform(-0.1, 0.1, m).astype(dtype)
    start = [v.copy() for v in (W1, b1, W2, b2)]
    work = [np.empty(s, dtype) for s in [(B, h), (B, m), (B, h), (B, m), (h, n), h, (m, h), m]]
    lr = dtype(0.7)

    loss = step(W1, b1, W2, b2, X, Y, lr, *work)

    acts = ["sigmoid", "softmax"]
    ref_loss = naive.network_loss([start[0], start[2]], [start[1], start[3]], acts,
                                  "cross_entropy", X, Y)
    (rW1, rW2), (rb1, rb2) = naive.sgd_epoch([start[0], start[2]], [start[1], start[3]], acts,
                                             "cross_entropy", X, Y, float(lr), B)
    ref_a1 = naive.dense_forward(X, start[0], start[1], "sigmoid")
    if dtype == np.float64:
        tol = dict(rtol=1e-12, atol=1e-14)
    else:
        tol = dict(rtol=1e-4, atol=2e-6)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12 if dtype == np.float64 else 1e-5)
    np.testing.assert_allclose(work[0], ref_a1, **tol)
    for got, ref in ((W1, rW1), (b1, rb1), (W2, rW2), (b2, rb2)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **tol)
    for got, before in zip((W1, b1, W2, b2), start):  # the step did move every parameter
        assert not np.array_equal(got, before)


def test_user_njit_function_gets_the_kernels_own_results():
    """Called from njit code or from Python, a kernel computes the same bits."""
    rng = np.random.default_rng(13)
    X = rng.normal(size=(5, 270))
    W = rng.normal(size=(6, 270))
    b = rng.normal(size=6)

    @numba.njit(cache=False)
    def user_forward(out, X, W, b):
        K.dense_forward(out, X, W, b, K.TANH)
        return out.sum()

    from_njit, from_python = np.empty((5, 6)), np.empty((5, 6))
    total = user_forward(from_njit, X, W, b)
    K.dense_forward(from_python, X, W, b, K.TANH)
    np.testing.assert_array_equal(from_njit, from_python)
    np.testing.assert_allclose(from_njit, naive.dense_forward(X, W, b, "tanh"), rtol=1e-12,
                               atol=1e-14)
    np.testing.assert_allclose(total, from_python.sum(), rtol=1e-14)


@pytest.mark.parametrize("act", ["sigmoid", "softmax", "relu"])
def test_user_njit_code_may_pass_column_views(act):
    """A column slice of a larger array is typed as non-contiguous ('A' layout) in numba: the
    forward kernels still compile for it, write only inside the view, and get the naive result
    (element-wise activations take a flat view of a C-contiguous output, and rows otherwise)."""
    from fastbp.kernels import ACTIVATIONS
    rng = np.random.default_rng(14)
    X = rng.normal(size=(33, 40))
    W = rng.normal(size=(37, 40)) * 0.3
    b = rng.normal(size=37)

    @numba.njit(cache=False)
    def user_forward(big, X, W, b, code):
        K.dense_forward(big[:, 1:38], X, W, b, code)
        K.dense_forward_serial(big[:, 40:77], X, W, b, code)

    big = np.zeros((33, 78))
    user_forward(big, X, W, b, ACTIVATIONS[act])
    ref = naive.dense_forward(X, W, b, act)
    np.testing.assert_allclose(big[:, 1:38], ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(big[:, 40:77], ref, rtol=1e-12, atol=1e-14)
    assert not big[:, [0, 38, 39, 77]].any()
