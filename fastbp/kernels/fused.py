"""Per-sample SGD (batch size 1) for a whole network, fused: the seed algorithm's fast path.

With one sample per step the work per layer is small and every step touches every weight, so
the cost is memory traffic over the weights, not arithmetic. The straightforward order sweeps
each ``W_l`` three times per sample (forward, delta propagation, update). Here the update of
sample ``t`` is *deferred* into the forward pass of sample ``t + 1``: in one sweep over a row,

    W_ij <- W_ij - lr * delta_i(t) * a_j(t)        (sample t's update)
    z_i  <- z_i + W_ij * a_j(t + 1)                (sample t+1's forward, with the new W)

so the first layer (the widest) is read and written once per sample, and the others once more
for delta propagation. The arithmetic is exactly the per-sample algorithm of the spec: the
forward pass of ``t + 1`` sees every update of ``t``, and delta propagation of ``t + 1`` uses
``W_l`` before ``t + 1``'s own update (which is still pending). Pending updates are flushed at
the end of the sample range.

The first layer goes further: its input, the data, is known in advance, so one sweep over
``W_0`` serves two samples. The sweep applies the pending updates of the previous two samples and
computes ``W_0 x_t`` and ``W_0 x_{t+1}``; once sample ``t``'s delta ``d_t`` is known, sample
``t + 1`` gets the pre-activation it would have had after ``t``'s update,

    (W_0 - lr d_t x_t^T) x_{t+1} + b_0 - lr d_t = W_0 x_{t+1} + b_0 - lr d_t (x_t . x_{t+1} + 1),

at the cost of one dot product. The widest layer is then read and written once per *two*
samples (the sweep is bound by the cache bandwidth, not by the arithmetic). This is the same
per-sample algorithm (every forward pass sees every earlier update); only the rounding differs,
as with any reordering of the sums.

Workspaces (``S = sum_l n_out_l``, layer ``l``'s slot at ``sum_{k<l} n_out_k``):
``acts (2, S)``: activations of two consecutive samples (ping-pong); ``deltas (S,)``: the last
sample's deltas, which are also the pending updates (for the first layer, the previous sample's
too, in a small buffer of the driver's own).
"""
import numpy as np
from numba import prange

from .._config import jit, jit_pair
from .activations import IDENTITY, activate_row, activation_grad
from .losses import MSE, loss_sum
from .layout import ACT, N_OUT, layer_params


def forward_pending_update(out, a_in, weight, bias, dprev, aprev, lr, act):
    """``W -= lr dprev aprev^T``, ``b -= lr dprev`` (the previous sample's step), then
    ``out = f(W a_in + b)``, in one sweep over ``W``. Threads own whole rows.

    out (n_out,), a_in (n_in,), weight (n_out, n_in), bias (n_out,), dprev (n_out,) the pending
    delta, aprev (n_in,) the pending input, lr of the arrays' dtype, act: activation code.
    """
    n_out, n_in = weight.shape
    for i in prange(n_out):
        c = lr * dprev[i]
        w = weight[i]
        s = type(lr)(0.0)
        for j in range(n_in):
            v = w[j] - c * aprev[j]
            w[j] = v
            s += v * a_in[j]
        bias[i] -= c
        out[i] = s + bias[i]
    activate_row(out, act)


forward_pending_update_serial, forward_pending_update = jit_pair(forward_pending_update)


def forward2_pending_update(out1, raw2, x1, x2, weight, bias, da, xa, db, xb, lr, act):
    """Two pending steps and two samples' sums in one sweep over ``W``:
    ``W -= lr (da xa^T + db xb^T)``, ``b -= lr (da + db)``, then ``out1 = f(W x1 + b)`` and
    ``raw2 = W x2`` (no bias, no activation: the driver corrects it first). Threads own whole
    rows.

    out1, raw2, bias, da, db (n_out,); x1, x2, xa, xb (n_in,); weight (n_out, n_in); lr of the
    arrays' dtype; act: activation code of ``out1``.
    """
    n_out, n_in = weight.shape
    for i in prange(n_out):
        ca = lr * da[i]
        cb = lr * db[i]
        w = weight[i]
        s1 = type(lr)(0.0)
        s2 = s1
        for j in range(n_in):
            v = w[j] - ca * xa[j] - cb * xb[j]
            w[j] = v
            s1 += v * x1[j]
            s2 += v * x2[j]
        bias[i] -= ca + cb
        out1[i] = s1 + bias[i]
        raw2[i] = s2
    activate_row(out1, act)


forward2_pending_update_serial, forward2_pending_update = jit_pair(forward2_pending_update)


@jit()
def apply_pending_update(weight, bias, dprev, aprev, lr):
    """Flush: ``W -= lr dprev aprev^T``, ``b -= lr dprev``."""
    n_out, n_in = weight.shape
    for i in range(n_out):
        c = lr * dprev[i]
        w = weight[i]
        for j in range(n_in):
            w[j] -= c * aprev[j]
        bias[i] -= c


@jit()
def propagate_delta(dinp, dout, weight, a_in, act):
    """``dinp = (W^T dout) * f'(a_in)`` for one sample: dinp (n_in,), dout (n_out,),
    weight (n_out, n_in), a_in (n_in,)."""
    n_out, n_in = weight.shape
    for j in range(n_in):
        dinp[j] = 0
    for i in range(n_out):
        d = dout[i]
        w = weight[i]
        for j in range(n_in):
            dinp[j] += d * w[j]
    if act != IDENTITY:
        for j in range(n_in):
            dinp[j] *= activation_grad(a_in[j], act)


@jit()
def slot(buf, layout, l):
    """Layer ``l``'s slot (n_out_l,) in a per-sample buffer (S,)."""
    off = 0
    for k in range(l):
        off += layout[k, N_OUT]
    return buf[off:off + layout[l, N_OUT]]


@jit()
def finish_sample(params, layout, cur, old, deltas, y, lr, loss, min_par):
    """One sample's forward pass above the first layer (whose output must be in ``cur``'s slot
    0), each layer applying the previous sample's pending step on the way; its loss (returned,
    before its own update) and its deltas down to the first layer's slot of ``deltas``, which
    become the pending steps. ``old``: the previous sample's activations."""
    L = layout.shape[0]
    m = y.shape[0]
    a_in = slot(cur, layout, 0)
    a_prev_in = slot(old, layout, 0)
    for l in range(1, L):
        w, b = layer_params(params, layout, l)
        out = slot(cur, layout, l)
        if w.shape[0] * w.shape[1] >= min_par:
            forward_pending_update(out, a_in, w, b, slot(deltas, layout, l), a_prev_in, lr,
                                   layout[l, ACT])
        else:
            forward_pending_update_serial(out, a_in, w, b, slot(deltas, layout, l), a_prev_in,
                                          lr, layout[l, ACT])
        a_in = out
        a_prev_in = slot(old, layout, l)
    # loss, output delta, delta propagation (the updates stay pending)
    out = slot(cur, layout, L - 1)
    d = slot(deltas, layout, L - 1)
    act = layout[L - 1, ACT]
    if loss == MSE:  # loss and delta in one pass (the loss as loss_sum computes it)
        s = 0.0
        for k in range(m):
            e = np.float64(out[k]) - np.float64(y[k])
            s += 0.5 * e * e
            d[k] = (out[k] - y[k]) * activation_grad(out[k], act)
    else:
        s = loss_sum(out.reshape((1, m)), y.reshape((1, m)), loss)
        for k in range(m):
            d[k] = out[k] - y[k]
    for l in range(L - 1, 0, -1):
        w, _ = layer_params(params, layout, l)
        d_prev = slot(deltas, layout, l - 1)
        propagate_delta(d_prev, d, w, slot(cur, layout, l - 1), layout[l - 1, ACT])
        d = d_prev
    return s


@jit()
def sgd_per_sample(params, X, Y, order, start, stop, lr, layout, loss, acts, deltas, min_par,
                   total):
    """Per-sample SGD over ``X[order[start:stop]]``; returns ``total`` (float64) plus the
    per-sample losses, each measured before its own update, added one by one: an epoch run in
    pieces, each given the last one's total, sums exactly as one call.

    params (P,) flat parameters (updated in place), X (N, n_0), Y (N, n_L), order (N,) int64,
    lr of params' dtype, layout (L, 5), loss code, acts (2, S) and deltas (S,) workspaces;
    a layer with at least ``min_par`` weights shares its sweeps among the threads. Samples are
    taken two at a time through the first layer (see the module notes).
    """
    w0, b0 = layer_params(params, layout, 0)
    n0 = w0.shape[0]
    deltas[:] = 0
    acts[:] = 0
    # the first layer's older pending delta, sample t+1's raw sums, a scratch row
    own = np.zeros((3, n0), dtype=params.dtype)
    pend_a = own[0]
    raw2 = own[1]
    pend_b = slot(deltas, layout, 0)  # the newer pending delta of the first layer
    xa = X[order[start]]
    xb = xa
    par0 = w0.shape[0] * w0.shape[1] >= min_par
    act0 = layout[0, ACT]
    t = start
    while t < stop:
        x1 = X[order[t]]
        pair = t + 1 < stop
        x2 = X[order[t + 1]] if pair else x1
        cur = acts[(t - start) % 2]
        old = acts[(t - start + 1) % 2]
        out1 = slot(cur, layout, 0)
        # the first layer: both pending steps applied, the sums of both samples taken
        if par0:
            forward2_pending_update(out1, raw2, x1, x2, w0, b0, pend_a, xa, pend_b, xb, lr, act0)
        else:
            forward2_pending_update_serial(out1, raw2, x1, x2, w0, b0, pend_a, xa, pend_b, xb,
                                           lr, act0)
        total += finish_sample(params, layout, cur, old, deltas, Y[order[t]], lr, loss, min_par)
        for i in range(n0):  # sample t's first-layer delta (a slice assignment costs 3x more)
            pend_a[i] = pend_b[i]
        xa = x1
        if pair:
            # sample t+1's first layer, as after sample t's step (pending in W_0 and b_0)
            dot = type(lr)(0.0)
            for j in range(x1.shape[0]):
                dot += x1[j] * x2[j]
            out2 = slot(old, layout, 0)
            for i in range(n0):
                c = lr * pend_a[i]
                out2[i] = raw2[i] + (b0[i] - c) - c * dot
            activate_row(out2, act0)
            total += finish_sample(params, layout, old, cur, deltas, Y[order[t + 1]], lr, loss,
                                   min_par)
            xb = x2
            t += 2
        else:
            pend_b[:] = 0
            xb = x1
            t += 1
    # flush: the first layer's two pending steps, by the sweep itself (its sums unused), so
    # that samples trained in several calls split at even offsets give bitwise the weights of
    # one call; then the last sample's step of the other layers
    if par0:
        forward2_pending_update(own[2], raw2, xa, xa, w0, b0, pend_a, xa, pend_b, xb, lr, act0)
    else:
        forward2_pending_update_serial(own[2], raw2, xa, xa, w0, b0, pend_a, xa, pend_b, xb, lr,
                                       act0)
    last = acts[(stop - 1 - start) % 2]
    for l in range(1, layout.shape[0]):
        w, b = layer_params(params, layout, l)
        apply_pending_update(w, b, slot(deltas, layout, l), slot(last, layout, l - 1), lr)
    return total


@jit(parallel=True)
def sgd_hogwild(params, X, Y, order, lr, layout, loss, acts, deltas):
    """Lock-free parallel per-sample SGD ("Hogwild!", Niu et al. 2011): thread ``k`` of ``T``
    runs ``sgd_per_sample`` on the k-th contiguous shard of ``order``, all on the same shared
    ``params``, without locks. Updates of different threads may overwrite each other; results
    depend on timing and are not reproducible. acts (T, 2, S), deltas (T, S); returns the sum of
    the per-sample losses.
    """
    T = acts.shape[0]
    N = order.shape[0]
    totals = np.zeros(T)
    for k in prange(T):
        start = (N * k) // T
        stop = (N * (k + 1)) // T
        if stop > start:
            totals[k] = sgd_per_sample(params, X, Y, order, start, stop, lr, layout, loss,
                                       acts[k], deltas[k], np.iinfo(np.int64).max, 0.0)
    return totals.sum()
