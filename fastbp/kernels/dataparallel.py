"""The kernels of data-parallel training (``MLP.fit(..., comm=...)``, :mod:`fastbp.training`).

Each rank computes the *sum* of its share's weighted gradients (not their mean), so that
summing over the ranks (``Allreduce``) the gradients and the weight sums gives every rank the
exact mean gradient of the global batch, however unevenly the batch is split:
``g = sum_r sum_b w_b g_b / sum_r sum_b w_b``. The backward pass runs one layer per call,
from the top, so that a layer's gradient can be on its way to the other ranks while the
layers below are computed (``Iallreduce``, as PyTorch DDP's gradient buckets). The optimizer
step is then ``optim.apply_update``, the same on every rank.
"""
from .._config import jit
from .layout import ACT, N_IN, layer_rows
from .losses import output_delta
from .network import forward_batch, gather_rows, layer_backward
from .train import scale_rows, weighted_loss_sum


@jit()
def share_forward(params, X, Y, sw, rows, layout, loss, xbuf, ybuf, wbuf, acts, deltas,
                  min_par):
    """Forward pass of the rows ``rows`` of ``(X, Y)`` and their weighted output delta
    ``w_b dL_b/dz_L``; returns ``(sum_b w_b loss_b, sum_b w_b)`` in float64 (w_b = 1 without
    sample weights). Then :func:`share_backward_layer` for ``l = L-1, ..., 0``.

    params (P,); X (N, n_0), Y (N, n_L); sw (N,) sample weights or empty; rows (B,) int64
    (B >= 1); workspaces xbuf (>= B * n_0, keeps the inputs for layer 0), ybuf (>= B * n_L),
    wbuf (>= B), acts, deltas (>= B * sum_l n_out_l).
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
    return total, wsum


@jit()
def share_backward_layer(grads, deltas, acts, xbuf, params, layout, l, B, min_par):
    """Layer ``l``'s gradient sum into its slice of ``grads`` (W_l and b_l, contiguous) and,
    unless ``l == 0``, delta_{l-1}; after ``share_forward`` of ``B`` rows and the layers above.
    """
    if l > 0:
        a_prev = layer_rows(acts, layout, l - 1, B)
        d_prev = layer_rows(deltas, layout, l - 1, B)
    else:
        n0 = layout[0, N_IN]
        a_prev = xbuf[:B * n0].reshape((B, n0))
        d_prev = a_prev  # not written for l == 0
    layer_backward(grads, d_prev, layer_rows(deltas, layout, l, B), a_prev, params, layout, l,
                   params.dtype.type(1), min_par)
