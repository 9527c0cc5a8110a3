"""Validated Python wrappers of the layer kernels.

The kernels in :mod:`fastbp.kernels` trust their arguments (numba does not bounds-check: a wrong
shape reads or writes outside an array). These wrappers check everything first (dimensions,
shapes against each other, one floating dtype in native byte order, aligned C-contiguous
memory, writable outputs that do not overlap the inputs, finite inputs and scalars, valid codes
and loss/activation pairs) and raise ``ValueError``/``TypeError`` naming the argument. Use them
from Python; call the raw kernels from your own ``@njit`` code.
"""
import numbers

import numpy as np

from .. import _validation as V
from . import dense, losses, optim
from .activations import ACTIVATION_NAMES, SIGMOID, SOFTMAX
from .losses import BCE, CROSS_ENTROPY, LOSS_NAMES, MSE


def _arrays(dtype=None, **named):
    """Check that each named array is a C-contiguous float32/float64 ndarray, all of one dtype."""
    for name, a in named.items():
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(a).__name__}")
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} must be float32 or float64, got {a.dtype}")
        if dtype is None:
            dtype = a.dtype
        elif a.dtype != dtype:
            raise TypeError(f"{name} has dtype {a.dtype}, but the other arrays are {dtype}")
        if not a.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous (np.ascontiguousarray)")
        if not a.flags.aligned:
            raise ValueError(f"{name} is not aligned to its dtype (np.ascontiguousarray of a "
                             "copy)")
    return dtype


def _finite(**named):
    """ValueError if an input array holds NaN or infinity."""
    for name, a in named.items():
        V.check_finite(name, a)


def _ndim(name, a, ndim):
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")


def _shape(name, a, expected):
    if a.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got {a.shape}")


def _outputs(outputs, inputs):
    for oname, o in outputs.items():
        if not o.flags.writeable:
            raise ValueError(f"{oname} is read-only; it is written to")
        for iname, i in inputs.items():
            if np.shares_memory(o, i):
                raise ValueError(f"{oname} overlaps {iname}; outputs must not share memory "
                                 "with inputs")


def _probabilities(target, loss):
    """The cross-entropies' targets are probabilities: outside [0, 1] their loss has no
    minimum (the kernels would return a number all the same)."""
    if loss in (BCE, CROSS_ENTROPY) and target.size and not (
            target.min() >= 0 and target.max() <= 1):
        raise ValueError(f"target must hold probabilities in [0, 1] for loss={loss} "
                         f"({LOSS_NAMES[loss]}), got values in [{target.min()}, "
                         f"{target.max()}]")


def _code(name, value, names):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) \
            or int(value) not in names:
        valid = ", ".join(f"{c} ({n})" for c, n in names.items())
        raise ValueError(f"{name} must be one of {valid}; got {value!r}")
    return int(value)


def _scalar(name, value, dtype):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number, got {value!r} "
                        f"({type(value).__name__})")
    try:
        with np.errstate(over="ignore"):
            finite = np.isfinite(float(value)) and np.isfinite(dtype.type(value))
    except OverflowError:
        finite = False
    if not finite:
        raise ValueError(f"{name} must be a finite real number (in {dtype}), got {value!r}")
    return dtype.type(value)


def dense_forward(out, inp, weight, bias, act):
    """Checked ``kernels.dense_forward``: out (B, n_out) = f(inp (B, n_in) W^T + b)."""
    _arrays(out=out, inp=inp, weight=weight, bias=bias)
    _ndim("inp", inp, 2)
    _ndim("weight", weight, 2)
    B, n_in = inp.shape
    n_out = weight.shape[0]
    if weight.shape[1] != n_in:
        raise ValueError(f"weight must have shape (n_out, n_in) with n_in = {n_in} (the columns "
                         f"of inp), got {weight.shape}")
    _shape("bias", bias, (n_out,))
    _shape("out", out, (B, n_out))
    act = _code("act", act, ACTIVATION_NAMES)
    if act == SOFTMAX and n_out == 0:
        raise ValueError("act=4 (softmax) needs at least one output unit; weight has shape "
                         f"{weight.shape}")
    _outputs({"out": out}, {"inp": inp, "weight": weight, "bias": bias})
    _finite(inp=inp, weight=weight, bias=bias)
    dense.dense_forward(out, inp, weight, bias, act)
    return out


def dense_backward(dinp, dout, weight, inp, act):
    """Checked ``kernels.dense_backward``: dinp (B, n_in) = (dout (B, n_out) W) * f'(inp)."""
    _arrays(dinp=dinp, dout=dout, weight=weight, inp=inp)
    _ndim("weight", weight, 2)
    n_out, n_in = weight.shape
    _ndim("dout", dout, 2)
    B = dout.shape[0]
    _shape("dout", dout, (B, n_out))
    _shape("inp", inp, (B, n_in))
    _shape("dinp", dinp, (B, n_in))
    act = _code("act", act, ACTIVATION_NAMES)
    if act == SOFTMAX:
        raise ValueError("act must be an element-wise activation; softmax is only used on the "
                         "output layer, whose delta comes from output_delta")
    _outputs({"dinp": dinp}, {"dout": dout, "weight": weight, "inp": inp})
    _finite(dout=dout, weight=weight, inp=inp)
    dense.dense_backward(dinp, dout, weight, inp, act)
    return dinp


def dense_grad(dweight, dbias, dout, inp, scale, accumulate=False):
    """Checked ``kernels.dense_grad``: dW (+)= scale dout^T inp, db (+)= scale sum_b dout."""
    dtype = _arrays(dweight=dweight, dbias=dbias, dout=dout, inp=inp)
    _ndim("inp", inp, 2)
    _ndim("dout", dout, 2)
    B, n_in = inp.shape
    n_out = dout.shape[1]
    _shape("dout", dout, (B, n_out))
    _shape("dweight", dweight, (n_out, n_in))
    _shape("dbias", dbias, (n_out,))
    _outputs({"dweight": dweight, "dbias": dbias}, {"dout": dout, "inp": inp})
    if np.shares_memory(dweight, dbias):
        raise ValueError("dweight overlaps dbias")
    if not isinstance(accumulate, (bool, np.bool_)):
        raise TypeError(f"accumulate must be True or False, got {accumulate!r}")
    _finite(dout=dout, inp=inp)
    if accumulate:  # dweight and dbias are read too
        _finite(dweight=dweight, dbias=dbias)
    dense.dense_grad(dweight, dbias, dout, inp, _scalar("scale", scale, dtype),
                     bool(accumulate))
    return dweight, dbias


def output_delta(delta, out, target, loss, act):
    """Checked ``kernels.output_delta``: delta (B, m) = dLoss/dz_L per sample."""
    _arrays(delta=delta, out=out, target=target)
    _ndim("out", out, 2)
    _shape("target", target, out.shape)
    _shape("delta", delta, out.shape)
    loss = _code("loss", loss, LOSS_NAMES)
    act = _code("act", act, ACTIVATION_NAMES)
    required = {BCE: SIGMOID, CROSS_ENTROPY: SOFTMAX}.get(loss)
    if (required is not None and act != required) or (loss == MSE and act == SOFTMAX):
        need = "an element-wise activation (not softmax)" if required is None else \
            f"act={required} ({ACTIVATION_NAMES[required]})"
        raise ValueError(f"loss={loss} ({LOSS_NAMES[loss]}) needs {need}; got act={act} "
                         f"({ACTIVATION_NAMES[act]})")
    _outputs({"delta": delta}, {"out": out, "target": target})
    _finite(out=out, target=target)
    _probabilities(target, loss)
    losses.output_delta(delta, out, target, loss, act)
    return delta


def loss_sum(out, target, loss):
    """Checked ``kernels.loss_sum``: the batch's summed per-sample loss, as a float."""
    _arrays(out=out, target=target)
    _ndim("out", out, 2)
    _shape("target", target, out.shape)
    loss = _code("loss", loss, LOSS_NAMES)
    _finite(out=out, target=target)
    _probabilities(target, loss)
    return float(losses.loss_sum(out, target, loss))


def sgd_update(params, grads, lr):
    """Checked ``kernels.sgd_update``: params (P,) -= lr * grads (P,)."""
    dtype = _arrays(params=params, grads=grads)
    _ndim("params", params, 1)
    _shape("grads", grads, params.shape)
    _outputs({"params": params}, {"grads": grads})
    _finite(params=params, grads=grads)
    optim.sgd_update(params, grads, _scalar("lr", lr, dtype))
    return params
