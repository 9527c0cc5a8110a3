"""The general training driver: mini-batch epochs with any optimizer and sample weights.

Plain SGD without sample weights runs through :func:`fastbp.kernels.network.train_epoch` (with
its fused per-sample path); everything else (momentum, weight decay, Adam, sample weights) runs
here. ``train_segment`` walks the batches that start in ``[start, stop)`` of one epoch's sample
order, so an epoch can be run in pieces (for a progress bar) with the same result as in one
call: the running loss total and the step counter go in and come back out.

A batch is: gather rows into ``xbuf``/``ybuf``, forward pass, loss (before the update), output
delta, optional per-sample weighting of the delta rows, backward pass, optimizer update
(:func:`fastbp.kernels.optim.apply_update`).

Sample weights: with weights ``w_b``, a batch's loss and gradient are those of
``sum_b w_b loss_b / sum_b w_b`` (scikit-learn's convention); the delta rows are scaled by
``w_b`` and the gradient sums by ``1 / sum_b w_b``. A batch whose weights are all zero gets a
zero gradient (its optimizer step still happens: momentum and weight decay still act).
"""
import numpy as np

from .._config import jit
from .layout import ACT, layer_rows
from .losses import loss_sum, output_delta
from .network import backward_batch, backward_from_delta, forward_batch, gather_rows
from .optim import apply_update


@jit()
def scale_rows(d, w):
    """d (B, m) <- d * w[:, None]; w (B,) of d's dtype."""
    B, m = d.shape
    for b in range(B):
        for k in range(m):
            d[b, k] *= w[b]


@jit()
def weighted_backward_batch(grads, deltas, acts, x, y, w, params, layout, loss, min_par):
    """Backward pass of a batch after ``forward_batch``, for the weighted mean loss
    ``sum_b w_b loss_b / sum_b w_b``: gradients into ``grads``; returns ``sum_b w_b``.

    grads (P,), deltas and acts workspaces (>= B * sum_l n_out_l), x (B, n_0), y (B, n_L),
    w (B,) non-negative weights of params' dtype, params (P,), layout (L, 5), loss: loss code.
    """
    B = x.shape[0]
    L = layout.shape[0]
    wsum = 0.0
    for b in range(B):
        wsum += np.float64(w[b])
    if wsum > 0.0:
        scale = params.dtype.type(1.0 / wsum)
    else:
        scale = params.dtype.type(0.0)
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    scale_rows(d, w)
    backward_from_delta(grads, deltas, acts, x, params, layout, scale, min_par)
    return wsum


@jit()
def weighted_loss_sum(out, target, w, loss):
    """sum_b w_b * loss(out_b, target_b), in float64. out, target (B, m), w (B,)."""
    total = 0.0
    for b in range(out.shape[0]):
        total += np.float64(w[b]) * loss_sum(out[b:b + 1], target[b:b + 1], loss)
    return total


@jit()
def train_segment(params, grads, X, Y, sw, order, start, stop, batch_size, layout, loss, kind,
                  hp, s1, s2, step, total, xbuf, ybuf, wbuf, acts, deltas, min_par):
    """Run the batches of one epoch that start at ``start, start + batch_size, ... < stop``.

    params, grads (P,); X (N, n_0), Y (N, n_L); sw (N,) sample weights of params' dtype, or
    empty for unweighted; order (N,) int64 the epoch's sample order; start a multiple of
    batch_size; kind, hp, s1, s2: the optimizer (see ``optim.apply_update``); step: optimizer
    steps taken so far; total: the epoch's loss sum so far (float64, weighted by sw if given);
    workspaces xbuf (>= batch_size * n_0), ybuf (>= batch_size * n_L), wbuf (>= batch_size),
    acts, deltas (>= batch_size * sum_l n_out_l).
    Returns ``(total, step)`` updated; each batch's loss is measured before its update.
    """
    N, n0 = X.shape
    m = Y.shape[1]
    weighted = sw.shape[0] > 0
    for b0 in range(start, stop, batch_size):
        B = min(batch_size, N - b0)
        x = xbuf[:B * n0].reshape((B, n0))
        y = ybuf[:B * m].reshape((B, m))
        w = wbuf[:B]
        gather_rows(x, X, order, b0)
        gather_rows(y, Y, order, b0)
        if weighted:
            for r in range(B):
                w[r] = sw[order[b0 + r]]
        out = forward_batch(acts, x, params, layout, min_par)
        if weighted:
            total += weighted_loss_sum(out, y, w, loss)
            weighted_backward_batch(grads, deltas, acts, x, y, w, params, layout, loss, min_par)
        else:
            total += loss_sum(out, y, loss)
            backward_batch(grads, deltas, acts, x, y, params, layout, loss, min_par)
        step += 1
        apply_update(params, grads, kind, hp, s1, s2, step, min_par)
    return total, step


@jit()
def evaluate_loss(out, Y, sw, loss):
    """Loss sum of outputs ``out`` (N, m) against ``Y`` (N, m), weighted by ``sw`` (N,) when it
    is not empty; float64."""
    if sw.shape[0] > 0:
        return weighted_loss_sum(out, Y, sw, loss)
    return loss_sum(out, Y, loss)
