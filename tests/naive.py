"""Slow, obviously correct NumPy versions of fastbp's kernels: the oracles the tests compare to.

Written from the specification (``shared/design/backprop.md``), in float64, with matrix products
and no cleverness. Nothing here is imported by fastbp itself.
"""
import numpy as np


def activate(z, name):
    z = np.asarray(z, dtype=np.float64)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "identity":
        return z.copy()
    if name == "softmax":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    raise ValueError(name)


def activation_grad(a, name):
    """f'(z) written in terms of the output a = f(z)."""
    a = np.asarray(a, dtype=np.float64)
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "tanh":
        return 1.0 - a * a
    if name == "relu":
        return (a > 0).astype(np.float64)
    if name == "identity":
        return np.ones_like(a)
    raise ValueError(name)


def dense_forward(X, W, b, act):
    """X (B, n_in), W (n_out, n_in), b (n_out,) -> f(X W^T + b) (B, n_out)."""
    X, W, b = (np.asarray(v, dtype=np.float64) for v in (X, W, b))
    return activate(X @ W.T + b, act)


def dense_backward(dout, W, A_prev, act_prev):
    """delta_{l-1} = (delta_l W_l) * f'(a_{l-1}), batched: dout (B, n_out) -> (B, n_in)."""
    dout, W, A_prev = (np.asarray(v, dtype=np.float64) for v in (dout, W, A_prev))
    return (dout @ W) * activation_grad(A_prev, act_prev)


def dense_grad(dout, A_prev, scale):
    """dW = scale * dout^T A_prev (n_out, n_in), db = scale * sum_b dout (n_out,)."""
    dout, A_prev = (np.asarray(v, dtype=np.float64) for v in (dout, A_prev))
    return scale * dout.T @ A_prev, scale * dout.sum(axis=0)


def loss_per_sample(A, Y, loss, eps=None):
    """Per-sample losses (B,). Probabilities are clipped to [eps, 1 - eps] before the logarithms;
    ``eps`` defaults to float64's machine epsilon (fastbp clips at the eps of the data's dtype)."""
    A, Y = (np.asarray(v, dtype=np.float64) for v in (A, Y))
    if loss == "mse":
        return 0.5 * ((A - Y) ** 2).sum(axis=1)
    if eps is None:
        eps = np.finfo(np.float64).eps
    Ac = np.clip(A, eps, 1 - eps)
    if loss == "bce":
        return -(Y * np.log(Ac) + (1 - Y) * np.log(1 - Ac)).sum(axis=1)
    if loss == "cross_entropy":
        return -(Y * np.log(Ac)).sum(axis=1)
    raise ValueError(loss)


def output_delta(A, Y, loss, act):
    """dLoss/dz_L per sample."""
    A, Y = (np.asarray(v, dtype=np.float64) for v in (A, Y))
    if loss == "mse":
        return (A - Y) * activation_grad(A, act)
    return A - Y


def sgd_update(params, grads, lr):
    """params - lr * grads (a new float64 array)."""
    params, grads = (np.asarray(v, dtype=np.float64) for v in (params, grads))
    return params - lr * grads


def network_forward(Ws, bs, acts, X):
    """All activations [a_0 = X, a_1, ..., a_L] of a network."""
    A = [np.asarray(X, dtype=np.float64)]
    for W, b, act in zip(Ws, bs, acts):
        A.append(dense_forward(A[-1], W, b, act))
    return A


def network_gradients(Ws, bs, acts, loss, X, Y):
    """Gradients (dWs, dbs) of the mean per-sample loss over the batch, by the spec's equations."""
    A = network_forward(Ws, bs, acts, X)
    B = A[0].shape[0]
    delta = output_delta(A[-1], Y, loss, acts[-1])
    dWs, dbs = [None] * len(Ws), [None] * len(Ws)
    for l in range(len(Ws) - 1, -1, -1):
        dWs[l], dbs[l] = dense_grad(delta, A[l], 1.0 / B)
        if l > 0:
            delta = dense_backward(delta, Ws[l], A[l], acts[l - 1])
    return dWs, dbs


def network_loss(Ws, bs, acts, loss, X, Y):
    return float(loss_per_sample(network_forward(Ws, bs, acts, X)[-1], Y, loss).mean())


def sgd_epoch(Ws, bs, acts, loss, X, Y, lr, batch_size):
    """One epoch of mini-batch SGD in order (no shuffling); returns new (Ws, bs)."""
    Ws = [np.array(W, dtype=np.float64) for W in Ws]
    bs = [np.array(b, dtype=np.float64) for b in bs]
    for start in range(0, len(X), batch_size):
        dWs, dbs = network_gradients(Ws, bs, acts, loss, X[start:start + batch_size],
                                     Y[start:start + batch_size])
        for l in range(len(Ws)):
            Ws[l] -= lr * dWs[l]
            bs[l] -= lr * dbs[l]
    return Ws, bs


def torch_network_loss(torch, Ws, bs, acts, loss, X, Y):
    """The same mean loss in PyTorch, for its autograd (``torch`` is passed in: optional)."""
    F = torch.nn.functional
    fns = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
           "identity": lambda z: z}
    a = X
    for l, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W.T + b
        if l == len(Ws) - 1 and loss == "cross_entropy":
            return -(Y * F.log_softmax(z, dim=1)).sum(dim=1).mean()
        a = fns[acts[l]](z)
    if loss == "mse":
        return 0.5 * ((a - Y) ** 2).sum(dim=1).mean()
    return -(Y * torch.log(a) + (1 - Y) * torch.log(1 - a)).sum(dim=1).mean()
