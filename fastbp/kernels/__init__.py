"""fastbp's kernels: explicit-loop Numba functions, callable from Python and from your own
``@njit`` code.

Every array argument must be C-contiguous and of one floating dtype (float32 or float64) per
call; the kernels do not check shapes (numba does not bounds-check), so from Python prefer the
validated wrappers in :mod:`fastbp.kernels.checked`, or ``fastbp.MLP``.

Layer kernels (outputs first, then inputs, then parameters):

* ``dense_forward(out, inp, weight, bias, act)``: ``out = f(inp W^T + b)``
* ``dense_backward(dinp, dout, weight, inp, act)``: ``dinp = (dout W) * f'(inp)``
* ``dense_grad(dweight, dbias, dout, inp, scale, accumulate=False)``: ``dW (+)= scale dout^T inp``,
  ``db (+)= scale sum_b dout`` (with ``-lr/B`` and ``accumulate``: the fused SGD step)
* ``output_delta(delta, out, target, loss, act)`` and ``loss_sum(out, target, loss)``
* ``sgd_update(params, grads, lr)``: ``params -= lr * grads``; ``sgd_momentum_update`` and
  ``adam_update``: the other optimizers, each one flat loop over the parameter buffer

Each layer kernel also exists as ``name_serial``: the same loops without threads.
Activation codes: ``IDENTITY, SIGMOID, TANH, RELU, SOFTMAX``; loss codes: ``MSE, BCE,
CROSS_ENTROPY``.
"""
from .activations import (ACTIVATION_NAMES, ACTIVATIONS, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH,
                          activate, activation_grad, softmax_row)
from .dense import (dense_backward, dense_backward_serial, dense_forward, dense_forward_serial,
                    dense_grad, dense_grad_serial)
from .losses import BCE, CROSS_ENTROPY, LOSS_NAMES, LOSSES, MSE, loss_sum, output_delta
from .optim import (adam_update, adam_update_serial, sgd_momentum_update,
                    sgd_momentum_update_serial, sgd_update, sgd_update_serial)

__all__ = [
    "IDENTITY", "SIGMOID", "TANH", "RELU", "SOFTMAX", "ACTIVATIONS", "ACTIVATION_NAMES",
    "MSE", "BCE", "CROSS_ENTROPY", "LOSSES", "LOSS_NAMES",
    "activate", "activation_grad", "softmax_row",
    "dense_forward", "dense_forward_serial", "dense_backward", "dense_backward_serial",
    "dense_grad", "dense_grad_serial", "output_delta", "loss_sum",
    "sgd_update", "sgd_update_serial", "sgd_momentum_update", "sgd_momentum_update_serial",
    "adam_update", "adam_update_serial",
]
