"""The layout of a network in fastbp's flat buffers.

A network is described by a ``layout`` table, int64 of shape (L, 5), one row per layer with the
columns ``N_IN, N_OUT, W_OFF, B_OFF, ACT``: the layer's sizes, the offsets of ``W_l`` (n_out, n_in,
row-major) and ``b_l`` (n_out,) in the flat parameter buffer, and the activation code.
Gradients use the same offsets in a twin buffer.
"""
import numpy as np

from .._config import jit

N_IN, N_OUT, W_OFF, B_OFF, ACT = range(5)


def make_layout(sizes, act_codes):
    """The layout table (L, 5) and the parameter count for layer ``sizes`` (n_0, ..., n_L)."""
    L = len(sizes) - 1
    layout = np.zeros((L, 5), dtype=np.int64)
    off = 0
    for l in range(L):
        n_in, n_out = sizes[l], sizes[l + 1]
        layout[l] = (n_in, n_out, off, off + n_in * n_out, act_codes[l])
        off += n_in * n_out + n_out
    return layout, off


@jit()
def layer_params(params, layout, l):
    """Views ``(W_l (n_out, n_in), b_l (n_out,))`` into the flat buffer ``params``."""
    n_in = layout[l, N_IN]
    n_out = layout[l, N_OUT]
    w = params[layout[l, W_OFF]:layout[l, W_OFF] + n_out * n_in].reshape((n_out, n_in))
    b = params[layout[l, B_OFF]:layout[l, B_OFF] + n_out]
    return w, b


@jit()
def workspace_size(layout):
    """Elements per sample of the activation (and delta) workspace: ``sum_l n_out_l``."""
    s = 0
    for l in range(layout.shape[0]):
        s += layout[l, N_OUT]
    return s


@jit()
def layer_rows(buf, layout, l, B):
    """View (B, n_out_l) of layer ``l``'s slot in an activation or delta workspace ``buf``."""
    off = 0
    for k in range(l):
        off += B * layout[k, N_OUT]
    n = layout[l, N_OUT]
    return buf[off:off + B * n].reshape((B, n))
