"""``MLP.gradients`` against central finite differences of ``MLP.loss`` (float64), against the
naive oracle (both dtypes) and against PyTorch autograd, for every hidden activation x output
activation x loss the model allows, at depths 2 and 4."""
import numpy as np
import pytest

import naive
import fastbp

HIDDEN = ("sigmoid", "tanh", "relu", "identity")
OUTPUTS = [("mse", "sigmoid"), ("mse", "tanh"), ("mse", "relu"), ("mse", "identity"),
           ("bce", "sigmoid"), ("cross_entropy", "softmax")]
SIZES = {"1-layer": [5, 3], "2-layer": [5, 4, 3], "4-layer": [4, 6, 5, 4, 3]}


def make_targets(rng, n, m, loss):
    if loss == "mse":
        return rng.uniform(-0.5, 1.0, (n, m))
    if loss == "bce":
        return rng.uniform(0.0, 1.0, (n, m))  # soft targets are fine for BCE
    return rng.integers(0, m, n)  # labels, one-hot encoded by the model


def pre_activations(net, X):
    """z_l of every layer, in float64 from the model's parameters."""
    a, zs = np.asarray(X, dtype=np.float64), []
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    for W, b, act in zip(net.weights, net.biases, acts):
        z = a @ W.astype(np.float64).T + b
        zs.append(z)
        a = naive.activate(z, act)
    return zs


def relu_margin(net, X):
    """Smallest |z| over the units whose activation is relu (inf when there are none)."""
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    zs = [np.abs(z).min() for z, act in zip(pre_activations(net, X), acts) if act == "relu"]
    return min(zs) if zs else np.inf


def kink_free_problem(sizes, hidden, loss, out_act, n=6, margin=1e-3):
    """A float64 network and data on which no relu pre-activation lies within ``margin`` of 0,
    so central differences with a step far below ``margin`` never straddle a kink."""
    for seed in range(200):
        rng = np.random.default_rng(1000 + seed)
        net = fastbp.MLP(sizes, activation=hidden, output_activation=out_act, loss=loss,
                         dtype="float64", seed=seed)
        for b in net.biases:  # non-zero biases, so they are exercised too
            b[...] = rng.uniform(-0.3, 0.3, b.shape)
        X = rng.uniform(-1, 1, (n, sizes[0]))
        if relu_margin(net, X) > margin:
            return net, X, make_targets(rng, n, sizes[-1], loss)
    raise AssertionError("no kink-free relu problem found in 200 tries")


def finite_difference_gradients(net, X, Y, h):
    dWs, dbs = [], []
    for group, out in ((net.weights, dWs), (net.biases, dbs)):
        for P in group:
            G = np.empty_like(P)
            for idx in np.ndindex(P.shape):
                keep = P[idx]
                P[idx] = keep + h
                up = net.loss(X, Y)
                P[idx] = keep - h
                down = net.loss(X, Y)
                P[idx] = keep
                G[idx] = (up - down) / (2 * h)
            out.append(G)
    return dWs, dbs


@pytest.mark.parametrize("depth", list(SIZES))
@pytest.mark.parametrize("loss,out_act", OUTPUTS, ids=[f"{l}-{a}" for l, a in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_match_central_differences(hidden, loss, out_act, depth):
    net, X, Y = kink_free_problem(SIZES[depth], hidden, loss, out_act)
    h = 1e-6
    params_before = net.params.copy()
    dWs, dbs = net.gradients(X, Y)
    np.testing.assert_array_equal(net.params, params_before)  # gradients() does not train
    fd_W, fd_b = finite_difference_gradients(net, X, Y, h)
    np.testing.assert_array_equal(net.params, params_before)
    assert relu_margin(net, X) > 100 * h
    biggest = max(np.abs(g).max() for g in dWs + dbs)
    assert biggest > 1e-3, "degenerate problem: all gradients are (nearly) zero"
    for l in range(net.n_layers):
        assert dWs[l].shape == net.weights[l].shape and dbs[l].shape == net.biases[l].shape
        assert dWs[l].dtype == np.float64
        # central differences: O(h^2) truncation, O(eps * L / h) ~ 1e-10 rounding
        np.testing.assert_allclose(dWs[l], fd_W[l], rtol=1e-5, atol=1e-8,
                                   err_msg=f"dW[{l}] {hidden} {loss}/{out_act} {depth}")
        np.testing.assert_allclose(dbs[l], fd_b[l], rtol=1e-5, atol=1e-8,
                                   err_msg=f"db[{l}] {hidden} {loss}/{out_act} {depth}")


def test_soft_cross_entropy_targets_match_central_differences():
    """Cross-entropy with probability rows (not one-hot) as targets: delta = a - y still holds
    because every row sums to 1."""
    net, X, _ = kink_free_problem([4, 5, 3], "tanh", "cross_entropy", "softmax")
    rng = np.random.default_rng(7)
    Y = naive.activate(rng.normal(size=(X.shape[0], 3)), "softmax")
    dWs, dbs = net.gradients(X, Y)
    fd_W, fd_b = finite_difference_gradients(net, X, Y, 1e-6)
    for g, fd in zip(dWs + dbs, fd_W + fd_b):
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)


def one_hot(y, m):
    Y = np.zeros((len(y), m))
    Y[np.arange(len(y)), y] = 1
    return Y


def gradient_problem(rng, sizes, hidden, out_act, loss, dtype, seed, n):
    """A network with random biases, n inputs in [-1, 1], targets for ``loss`` and their dense
    form ``Yd`` (one-hot for cross-entropy, in the network's dtype)."""
    net = fastbp.MLP(sizes, activation=hidden, output_activation=out_act, loss=loss,
                     dtype=dtype, seed=seed)
    for b in net.biases:
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    X = rng.uniform(-1, 1, (n, sizes[0])).astype(dtype)
    Y = make_targets(rng, n, sizes[-1], loss)
    Yd = one_hot(Y, sizes[-1]) if loss == "cross_entropy" else Y.astype(dtype)
    return net, X, Y, Yd


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss,out_act", OUTPUTS, ids=[f"{l}-{a}" for l, a in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_gradients_and_loss_match_naive_oracle(hidden, loss, out_act, dtype):
    sizes = [7, 9, 5, 4]
    net, X, Y, Yd = gradient_problem(np.random.default_rng(3), sizes, hidden, out_act, loss,
                                     dtype, seed=5, n=11)
    acts = [hidden] * 2 + [out_act]
    dWs, dbs = net.gradients(X, Y)
    ref_W, ref_b = naive.network_gradients(list(net.weights), list(net.biases), acts, loss, X,
                                           Yd)
    rtol, atol = (1e-12, 1e-14) if dtype == "float64" else (2e-4, 2e-6)
    for l in range(net.n_layers):
        assert dWs[l].dtype == np.dtype(dtype) and dbs[l].dtype == np.dtype(dtype)
        np.testing.assert_allclose(dWs[l], ref_W[l], rtol=rtol, atol=atol)
        np.testing.assert_allclose(dbs[l], ref_b[l], rtol=rtol, atol=atol)
    got = net.loss(X, Y)
    assert isinstance(got, float)
    np.testing.assert_allclose(
        got, naive.network_loss(list(net.weights), list(net.biases), acts, loss, X, Yd),
        rtol=1e-12 if dtype == "float64" else 1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batch_gradient_is_mean_of_sample_gradients(dtype):
    rng = np.random.default_rng(11)
    net = fastbp.MLP([6, 8, 3], activation="tanh", loss="cross_entropy", dtype=dtype, seed=2)
    X = rng.normal(size=(9, 6)).astype(dtype)
    y = rng.integers(0, 3, 9)
    dWs, dbs = net.gradients(X, y)
    per_sample = [net.gradients(X[i:i + 1], y[i:i + 1]) for i in range(9)]
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=1e-5, atol=1e-7)
    for l in range(net.n_layers):
        np.testing.assert_allclose(dWs[l], np.mean([g[0][l] for g in per_sample], axis=0), **tol)
        np.testing.assert_allclose(dbs[l], np.mean([g[1][l] for g in per_sample], axis=0), **tol)
    np.testing.assert_allclose(net.loss(X, y), np.mean([net.loss(X[i:i + 1], y[i:i + 1])
                                                        for i in range(9)]), rtol=1e-6)


def test_float32_gradients_close_to_float64():
    """Both dtypes start from the same network (float64 draws rounded), so float32 gradients
    are the float64 ones up to float32 rounding."""
    rng = np.random.default_rng(4)
    X = rng.uniform(-1, 1, (16, 10))
    y = rng.integers(0, 4, 16)
    n32 = fastbp.MLP([10, 12, 4], activation="sigmoid", loss="cross_entropy", dtype="float32",
                     seed=9)
    n64 = fastbp.MLP([10, 12, 4], activation="sigmoid", loss="cross_entropy", dtype="float64",
                     seed=9)
    n64.params[...] = n32.params  # exactly the same numbers
    g32, g64 = n32.gradients(X, y), n64.gradients(X, y)
    for a, b in zip(g32[0] + g32[1], g64[0] + g64[1]):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


# ---- PyTorch autograd as an independent oracle -----------------------------------------------
TORCH_CASES = [
    ("sigmoid", "mse", None, [5, 4, 3]),
    ("tanh", "mse", "identity", [6, 7, 5, 2]),
    ("relu", "mse", "relu", [4, 6, 5, 4, 3]),
    ("identity", "mse", "tanh", [3, 5, 1]),
    ("tanh", "bce", None, [6, 8, 4]),
    ("sigmoid", "bce", None, [5, 6, 5, 1]),
    ("relu", "cross_entropy", None, [8, 16, 10]),
    ("sigmoid", "cross_entropy", None, [4, 6, 5, 4, 3]),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,loss,out_act,sizes", TORCH_CASES,
                         ids=[f"{h}-{l}-{len(s) - 1}layers" for h, l, _, s in TORCH_CASES])
def test_gradients_and_loss_match_torch_autograd(torch, hidden, loss, out_act, sizes, dtype):
    net, X, Y, Yd = gradient_problem(np.random.default_rng(21), sizes, hidden, out_act, loss,
                                     dtype, seed=4, n=13)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    Ws = [torch.tensor(W, dtype=tdt, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b, dtype=tdt, requires_grad=True) for b in net.biases]
    acts = [hidden] * (len(sizes) - 2) + [net.output_activation]
    L = naive.torch_network_loss(torch, Ws, bs, acts, loss, torch.tensor(X, dtype=tdt),
                           torch.tensor(Yd, dtype=tdt))
    L.backward()
    dWs, dbs = net.gradients(X, Y)
    if dtype == "float64":
        rtol, loss_rtol = 1e-10, 1e-12
    else:
        rtol, loss_rtol = 1e-4, 1e-5
    np.testing.assert_allclose(net.loss(X, Y), L.item(), rtol=loss_rtol)
    for l in range(len(Ws)):
        gw, gb = Ws[l].grad.numpy(), bs[l].grad.numpy()
        scale = max(np.abs(gw).max(), np.abs(gb).max(), 1e-3)
        np.testing.assert_allclose(dWs[l], gw, rtol=rtol, atol=rtol * scale * 1e-2,
                                   err_msg=f"dW[{l}]")
        np.testing.assert_allclose(dbs[l], gb, rtol=rtol, atol=rtol * scale * 1e-2,
                                   err_msg=f"db[{l}]")
