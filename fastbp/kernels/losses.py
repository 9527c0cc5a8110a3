"""Losses: the output delta ``dLoss/dz_L`` and the loss value, chosen by an integer code.

Per-sample losses (a batch's loss is their mean):

* ``MSE``: ``1/2 ||a - y||^2``; delta ``(a - y) * f'(a)`` for any output activation.
* ``BCE``: ``-sum_k [y_k log a_k + (1 - y_k) log(1 - a_k)]`` with a sigmoid output; delta ``a - y``.
* ``CROSS_ENTROPY``: ``-sum_k y_k log a_k`` with a softmax output; delta ``a - y``.
"""
import numpy as np

from .._config import jit
from .activations import activation_grad

MSE = 0
BCE = 1
CROSS_ENTROPY = 2

LOSSES = {"mse": MSE, "bce": BCE, "cross_entropy": CROSS_ENTROPY}
LOSS_NAMES = {code: name for name, code in LOSSES.items()}


@jit()
def output_delta(delta, out, target, loss, act):
    """delta = dLoss/dz_L for each sample (not divided by B).

    delta (B, m), out (B, m) = a_L, target (B, m) = y, loss: loss code, act: output activation
    code (used by MSE only; BCE and cross-entropy come paired with sigmoid and softmax).
    """
    B, m = out.shape
    for b in range(B):
        for k in range(m):
            r = out[b, k] - target[b, k]
            if loss == MSE:
                r *= activation_grad(out[b, k], act)
            delta[b, k] = r


@jit()
def loss_sum(out, target, loss):
    """Sum over the batch of the per-sample loss, accumulated in float64.

    out (B, m) = a_L, target (B, m) = y -> float. Probabilities are clipped to ``[eps, 1 - eps]``
    with eps the dtype's machine epsilon before taking logarithms, as scikit-learn does.
    """
    B, m = out.shape
    eps = np.finfo(out.dtype).eps
    total = 0.0
    for b in range(B):
        s = 0.0
        for k in range(m):
            a = np.float64(out[b, k])
            y = np.float64(target[b, k])
            if loss == MSE:
                s += 0.5 * (a - y) * (a - y)
            else:
                a = min(max(a, eps), 1.0 - eps)
                if loss == BCE:
                    s -= y * np.log(a) + (1.0 - y) * np.log(1.0 - a)
                else:
                    s -= y * np.log(a)
        total += s
    return total
