"""The kernel of data-parallel training (``MLP.fit(..., comm=...)``, :mod:`fastbp.training`).

Each rank computes the *sum* of its share's weighted gradients (not their mean), so that one
``Allreduce`` of the gradients and of the weight sums gives every rank the exact mean gradient
of the global batch, however unevenly the batch is split: ``g = sum_r sum_b w_b g_b / sum_r
sum_b w_b``. The optimizer step is then ``optim.apply_update``, the same on every rank.
"""
from .._config import jit
from .layout import ACT, layer_rows
from .losses import output_delta
from .network import backward_from_delta, forward_batch, gather_rows
from .train import scale_rows, weighted_loss_sum


@jit()
def share_gradient(params, grads, X, Y, sw, rows, layout, loss, xbuf, ybuf, wbuf, acts, deltas,
                   min_par):
    """Gradient sum of the rows ``rows`` of ``(X, Y)``: ``grads = sum_b w_b dL_b/dparams``;
    returns ``(sum_b w_b loss_b, sum_b w_b)`` in float64 (w_b = 1 without sample weights).

    params, grads (P,); X (N, n_0), Y (N, n_L); sw (N,) sample weights or empty; rows (B,) int64
    (B >= 1); workspaces xbuf (>= B * n_0), ybuf (>= B * n_L), wbuf (>= B), acts, deltas
    (>= B * sum_l n_out_l).
    """
    B = rows.shape[0]
    n0 = X.shape[1]
    m = Y.shape[1]
    L = layout.shape[0]
    x = xbuf[:B * n0].reshape((B, n0))
    y = ybuf[:B * m].reshape((B, m))
    w = wbuf[:B]
    gather_rows(x, X, rows, 0)
    gather_rows(y, Y, rows, 0)
    wsum = 0.0
    for b in range(B):
        if sw.shape[0] > 0:
            w[b] = sw[rows[b]]
        else:
            w[b] = 1
        wsum += w[b]
    out = forward_batch(acts, x, params, layout, min_par)
    total = weighted_loss_sum(out, y, w, loss)
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    scale_rows(d, w)
    backward_from_delta(grads, deltas, acts, x, params, layout, params.dtype.type(1), min_par)
    return total, wsum
