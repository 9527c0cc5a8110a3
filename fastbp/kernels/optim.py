"""Optimizer updates: one flat loop over the whole parameter buffer.

All parameters of a network live in one flat array (every ``W_l``, ``b_l`` a view into it) and
the gradients in a twin array of the same layout, so an update is a single ``prange`` loop in
which each thread owns a contiguous slice; optimizer state (momentum, Adam's moments) lives in
more twin buffers. Every element is updated on its own, so the result does not depend on the
number of threads.

Each kernel exists twice (``_config.jit_pair``): ``name`` threaded, ``name_serial`` not.
Scalars are of the arrays' dtype (the caller casts them), so float32 stays float32.
``apply_update`` picks the kernel for an optimizer code and does the per-step scalar work
(Adam's bias corrections) in float64.
"""
import numpy as np
from numba import prange

from .._config import jit, jit_pair

# Optimizer codes for ``apply_update``.
SGD = 0
ADAM = 1

# Layout of the float64 hyperparameter vector ``hp`` taken by ``apply_update``.
HP_LR, HP_MOMENTUM, HP_NESTEROV, HP_WEIGHT_DECAY, HP_BETA1, HP_BETA2, HP_EPS, HP_DECOUPLED = \
    range(8)
HP_SIZE = 8


def sgd_update(params, grads, lr):
    """Plain gradient descent: ``params <- params - lr * grads``.

    params (P,), grads (P,), lr: a scalar of the arrays' dtype.
    """
    for k in prange(params.shape[0]):
        params[k] -= lr * grads[k]


def sgd_momentum_update(params, grads, velocity, lr, momentum, weight_decay, nesterov):
    """SGD with L2 weight decay and (Nesterov) momentum, as ``torch.optim.SGD`` (no dampening):

        g <- grad + weight_decay * p
        v <- momentum * v + g                          (only when momentum != 0)
        p <- p - lr * (g + momentum * v)   if nesterov
        p <- p - lr * v                    otherwise   (p - lr * g when momentum == 0)

    params, grads (P,); velocity (P,) the momentum buffer, starting at zero (unused, and may
    be empty, when momentum == 0); lr, momentum, weight_decay: scalars of the arrays' dtype;
    nesterov: bool.
    """
    for k in prange(params.shape[0]):
        p = params[k]
        g = grads[k] + weight_decay * p
        if momentum != 0:
            v = momentum * velocity[k] + g
            velocity[k] = v
            if nesterov:
                g = g + momentum * v
            else:
                g = v
        params[k] = p - lr * g


def adam_update(params, grads, m, v, beta1, one_minus_beta1, beta2, one_minus_beta2, step_size,
                inv_sqrt_bc2, eps, weight_decay, decay):
    """One Adam step (Kingma & Ba), with coupled L2 or decoupled (AdamW) weight decay:

        g <- grad + weight_decay * p          (L2; weight_decay = 0 for AdamW)
        p <- decay * p                        (AdamW: decay = 1 - lr * wd; 1 for Adam)
        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        p <- p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps)

    with ``step_size = lr / (1 - beta1^t)`` and ``inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t)`` at step
    ``t`` (the bias corrections; ``eps`` is added to the corrected ``sqrt(v_hat)``).
    params, grads, m, v (P,); the rest scalars of the arrays' dtype.
    """
    for k in prange(params.shape[0]):
        p = params[k]
        g = grads[k] + weight_decay * p
        p = decay * p
        mk = beta1 * m[k] + one_minus_beta1 * g
        vk = beta2 * v[k] + one_minus_beta2 * (g * g)
        m[k] = mk
        v[k] = vk
        params[k] = p - step_size * mk / (np.sqrt(vk) * inv_sqrt_bc2 + eps)


sgd_update_serial, sgd_update = jit_pair(sgd_update)
sgd_momentum_update_serial, sgd_momentum_update = jit_pair(sgd_momentum_update)
adam_update_serial, adam_update = jit_pair(adam_update)


@jit()
def apply_update(params, grads, kind, hp, s1, s2, step, min_par):
    """Step number ``step`` (1-based) of optimizer ``kind`` on the flat buffers.

    params, grads (P,); kind: ``SGD`` or ``ADAM``; hp (HP_SIZE,) float64 hyperparameters (the
    learning rate of this step included); s1, s2 state buffers (P,) of params' dtype (SGD:
    s1 the velocity when momentum != 0; Adam: s1 = m, s2 = v), empty where unused;
    min_par: the threaded kernel runs when P >= min_par.
    """
    t = params.dtype.type
    par = params.shape[0] >= min_par
    lr = hp[HP_LR]
    wd = hp[HP_WEIGHT_DECAY]
    if kind == SGD:
        momentum = hp[HP_MOMENTUM]
        if momentum == 0.0 and wd == 0.0:
            if par:
                sgd_update(params, grads, t(lr))
            else:
                sgd_update_serial(params, grads, t(lr))
        else:
            nesterov = hp[HP_NESTEROV] != 0.0
            if par:
                sgd_momentum_update(params, grads, s1, t(lr), t(momentum), t(wd), nesterov)
            else:
                sgd_momentum_update_serial(params, grads, s1, t(lr), t(momentum), t(wd),
                                           nesterov)
    else:
        beta1 = hp[HP_BETA1]
        beta2 = hp[HP_BETA2]
        step_size = lr / (1.0 - beta1 ** step)
        inv_sqrt_bc2 = 1.0 / np.sqrt(1.0 - beta2 ** step)
        if hp[HP_DECOUPLED] != 0.0:
            l2 = 0.0
            decay = 1.0 - lr * wd
        else:
            l2 = wd
            decay = 1.0
        if par:
            adam_update(params, grads, s1, s2, t(beta1), t(1.0 - beta1), t(beta2),
                        t(1.0 - beta2), t(step_size), t(inv_sqrt_bc2), t(hp[HP_EPS]), t(l2),
                        t(decay))
        else:
            adam_update_serial(params, grads, s1, s2, t(beta1), t(1.0 - beta1), t(beta2),
                               t(1.0 - beta2), t(step_size), t(inv_sqrt_bc2), t(hp[HP_EPS]),
                               t(l2), t(decay))
