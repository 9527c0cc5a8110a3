"""Whole-network passes: they only slice buffers and call the layer kernels in order.

The network is described by a ``layout`` table (see :mod:`fastbp.kernels.layout`). Workspaces are flat buffers that these functions
slice per batch, so a training epoch allocates nothing.
"""
import numpy as np
from numba import get_num_threads

from .._config import jit
from .dense import (dense_backward, dense_backward_serial, dense_forward, dense_forward_serial,
                    dense_grad, dense_grad_serial)
from .fused import sgd_per_sample
from .layout import (ACT, B_OFF, N_IN, N_OUT, W_OFF, layer_params, layer_rows, make_layout,
                     workspace_size)
from .losses import loss_sum, output_delta

# Below this many multiply-adds a layer kernel runs on the calling thread: waking the thread
# pool costs more than the work. Every driver below takes this threshold as its ``min_par``
# argument (``parallel_threshold()`` gives the value for the current thread count; numba's
# thread count is not read inside the kernels, which keeps them cacheable).
PARALLEL_MIN_WORK = 1 << 15
SERIAL_ONLY = np.iinfo(np.int64).max


# A mini-batch layer kernel needs BATCH_FACTOR times that much work: its threads split the
# layer into 4-row blocks, and a narrow layer has too few of them to pay for the pool (on
# 784-128-10 with batch 32 the 128->10 layer, 41k multiply-adds in 3 row blocks, is faster on
# the calling thread: 86 against 91 us per step, measured with 2 threads).
BATCH_FACTOR = 4


@jit()
def batch_threaded(B, weight, min_par):
    """Whether a mini-batch layer kernel on ``B`` samples and ``weight`` shares its work."""
    return B * weight.shape[0] * weight.shape[1] // BATCH_FACTOR >= min_par


def parallel_threshold():
    """``min_par`` for the drivers: ``PARALLEL_MIN_WORK``, or never when numba has 1 thread."""
    return PARALLEL_MIN_WORK if get_num_threads() > 1 else SERIAL_ONLY


@jit()
def layer_forward(out, a, params, layout, l, min_par):
    """One layer's forward pass, on the calling thread or shared, by the size of the work."""
    w, b = layer_params(params, layout, l)
    if batch_threaded(a.shape[0], w, min_par):
        dense_forward(out, a, w, b, layout[l, ACT])
    else:
        dense_forward_serial(out, a, w, b, layout[l, ACT])


@jit()
def forward_batch(acts, x, params, layout, min_par):
    """Forward pass of a batch; every ``a_l`` is kept in ``acts`` for the backward pass.

    acts (>= B * sum_l n_out_l,) workspace, x (B, n_0) -> view of a_L (B, n_L).
    """
    B = x.shape[0]
    a = layer_rows(acts, layout, 0, B)
    layer_forward(a, x, params, layout, 0, min_par)
    for l in range(1, layout.shape[0]):
        out = layer_rows(acts, layout, l, B)
        layer_forward(out, a, params, layout, l, min_par)
        a = out
    return a


@jit()
def layer_backward(grads, d_prev, d, a_prev, params, layout, l, scale, min_par):
    """One layer's backward pass: its gradients from ``d`` = delta_l and ``a_prev`` = a_{l-1},
    and, unless ``l == 0``, ``d_prev`` = delta_{l-1} (computed with W_l before any update)."""
    dw, db = layer_params(grads, layout, l)
    w, _ = layer_params(params, layout, l)
    threads = batch_threaded(a_prev.shape[0], w, min_par)
    if threads:
        dense_grad(dw, db, d, a_prev, scale)
    else:
        dense_grad_serial(dw, db, d, a_prev, scale)
    if l > 0:
        if threads:
            dense_backward(d_prev, d, w, a_prev, layout[l - 1, ACT])
        else:
            dense_backward_serial(d_prev, d, w, a_prev, layout[l - 1, ACT])


@jit()
def backward_batch(grads, deltas, acts, x, y, params, layout, loss, min_par):
    """Backward pass of a batch after ``forward_batch``: gradients of the mean loss into ``grads``.

    grads (P,) twin of params, deltas workspace like acts, acts as left by forward_batch,
    x (B, n_0), y (B, n_L) targets, params (P,), layout (L, 5), loss: loss code.
    """
    B = x.shape[0]
    L = layout.shape[0]
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    backward_from_delta(grads, deltas, acts, x, params, layout,
                        params.dtype.type(1.0) / params.dtype.type(B), min_par)


@jit()
def backward_from_delta(grads, deltas, acts, x, params, layout, scale, min_par):
    """The layers' backward passes once the output delta is in its slot of ``deltas``:
    ``grads`` gets ``scale * sum_b`` of each layer's outer products."""
    B = x.shape[0]
    L = layout.shape[0]
    d = layer_rows(deltas, layout, L - 1, B)
    for l in range(L - 1, 0, -1):
        d_prev = layer_rows(deltas, layout, l - 1, B)
        layer_backward(grads, d_prev, d, layer_rows(acts, layout, l - 1, B), params, layout, l,
                       scale, min_par)
        d = d_prev
    layer_backward(grads, d, d, x, params, layout, 0, scale, min_par)


@jit()
def backward_sgd_batch(deltas, acts, x, y, params, layout, loss, lr, min_par):
    """Backward pass of a batch after ``forward_batch``, with the plain SGD step fused into the
    gradient kernel: ``W_l -= (lr / B) delta_l^T a_{l-1}`` layer by layer, each ``delta_{l-1}``
    computed before ``W_l`` changes. No gradient buffer is written.
    """
    B = x.shape[0]
    L = layout.shape[0]
    step = -lr / params.dtype.type(B)
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    for l in range(L - 1, -1, -1):
        w, b = layer_params(params, layout, l)
        threads = batch_threaded(B, w, min_par)
        if l > 0:
            a_prev = layer_rows(acts, layout, l - 1, B)
            d_prev = layer_rows(deltas, layout, l - 1, B)
            if threads:
                dense_backward(d_prev, d, w, a_prev, layout[l - 1, ACT])
                dense_grad(w, b, d, a_prev, step, True)
            else:
                dense_backward_serial(d_prev, d, w, a_prev, layout[l - 1, ACT])
                dense_grad_serial(w, b, d, a_prev, step, True)
            d = d_prev
        elif threads:
            dense_grad(w, b, d, x, step, True)
        else:
            dense_grad_serial(w, b, d, x, step, True)


@jit()
def predict_into(out, X, params, layout, acts, chunk, min_par):
    """out (N, n_L) <- network output for X (N, n_0), ``chunk`` rows at a time through ``acts``
    (>= chunk * sum_l n_out_l)."""
    N = X.shape[0]
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        a = forward_batch(acts, X[start:stop], params, layout, min_par)
        out[start:stop] = a


@jit()
def train_epoch(params, grads, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts,
                deltas, min_par):
    """One epoch of plain mini-batch SGD (``grads`` is not used: the step is fused into the
    gradient kernels); returns the mean training loss (each batch's
    loss measured before its update, as scikit-learn's ``loss_curve_``).

    params, grads (P,); X (N, n_0), Y (N, n_L); order (N,) int64 sample order; lr of params'
    dtype; workspaces xbuf (>= batch_size * n_0), ybuf (>= batch_size * n_L),
    acts (>= max(batch_size, 2) * sum_l n_out_l), deltas (>= batch_size * sum_l n_out_l).
    Batch size 1 takes the fused per-sample path (:mod:`fastbp.kernels.fused`).
    """
    N, n0 = X.shape
    m = Y.shape[1]
    if batch_size == 1:
        S = workspace_size(layout)
        return sgd_per_sample(params, X, Y, order, 0, N, lr, layout, loss,
                              acts[:2 * S].reshape((2, S)), deltas[:S], min_par) / N
    total = 0.0
    for start in range(0, N, batch_size):
        B = min(batch_size, N - start)
        first = order[start]
        run = True  # the batch is a run of consecutive samples: use it in place, no copy
        for r in range(1, B):
            if order[start + r] != first + r:
                run = False
                break
        if run:
            x = X[first:first + B]
            y = Y[first:first + B]
        else:
            x = xbuf[:B * n0].reshape((B, n0))
            y = ybuf[:B * m].reshape((B, m))
            for r in range(B):
                x[r] = X[order[start + r]]
                y[r] = Y[order[start + r]]
        out = forward_batch(acts, x, params, layout, min_par)
        total += loss_sum(out, y, loss)
        backward_sgd_batch(deltas, acts, x, y, params, layout, loss, lr, min_par)
    return total / N
