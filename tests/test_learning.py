"""Training: one SGD step of the seed network worked out by hand, several steps against
PyTorch and the naive oracle, results independent of the thread count, and networks that learn
(XOR, digits)."""
import math

import numba
import numpy as np
import pytest

import naive
import fastbp
from fastbp import kernels
from fastbp.kernels import network as knet


# ---- one SGD step of the seed network, by hand ----------------------------------------------
def sigma(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_one_sgd_step_of_the_seed_network_by_hand():
    """2 inputs, 2 hidden, 2 outputs, sigmoid everywhere, loss 1/2 ||a2 - y||^2, batch 1.

    x = (1, 0.5), y = (1, 0), eta = 0.5
    W1 = [[0.5, -0.25], [0.25, 0.75]], b1 = (0.125, -0.5)
    W2 = [[1, -1], [0.5, 0.25]],       b2 = (0.25, -0.125)

    Forward (spec: z1 = W1 x + b1, a1 = sigma(z1), z2 = W2 a1 + b2, a2 = sigma(z2)):
      z1 = (0.5 - 0.125 + 0.125, 0.25 + 0.375 - 0.5) = (0.5, 0.125)          (exact)
      a1 = (sigma(0.5), sigma(0.125))        = (0.6224593312, 0.5312093734)
      z2 = (a1_0 - a1_1 + 0.25, 0.5 a1_0 + 0.25 a1_1 - 0.125)
                                             = (0.3412499578, 0.3190320089)
      a2 = (sigma(z2_0), sigma(z2_1))        = (0.5844941206, 0.5790883272)
      L  = 1/2 ((a2_0 - 1)^2 + a2_1^2)       = 0.2539942132
    Backward:
      delta2 = (a2 - y) * a2 * (1 - a2)      = (-0.1009100668, 0.1411499055)
      dW2 = delta2 a1^T                      = [[-0.0628124127, -0.0536043734],
                                                [ 0.0878600757,  0.0749801528]]
      db2 = delta2
      W2^T delta2 = (1 d2_0 + 0.5 d2_1, -1 d2_0 + 0.25 d2_1)
                                             = (-0.0303351141, 0.1361975432)
      delta1 = (W2^T delta2) * a1 * (1 - a1) = (-0.0071288644, 0.0339167260)
      dW1 = delta1 x^T                       = [[-0.0071288644, -0.0035644322],
                                                [ 0.0339167260,  0.0169583630]]
      db1 = delta1
    Update (W <- W - eta dW, b <- b - eta db):
      W1 = [[0.5035644322, -0.2482177839], [0.2330416370, 0.7415208185]]
      b1 = (0.1285644322, -0.5169583630)
      W2 = [[1.0314062064, -0.9731978133], [0.4560699621, 0.2125099236]]
      b2 = (0.3004550334, -0.1955749527)
    """
    x, y, eta = [1.0, 0.5], [1.0, 0.0], 0.5
    W1, b1 = [[0.5, -0.25], [0.25, 0.75]], [0.125, -0.5]
    W2, b2 = [[1.0, -1.0], [0.5, 0.25]], [0.25, -0.125]

    # the same arithmetic in plain Python floats
    z1 = [W1[i][0] * x[0] + W1[i][1] * x[1] + b1[i] for i in range(2)]
    a1 = [sigma(z) for z in z1]
    z2 = [W2[i][0] * a1[0] + W2[i][1] * a1[1] + b2[i] for i in range(2)]
    a2 = [sigma(z) for z in z2]
    L = 0.5 * ((a2[0] - y[0]) ** 2 + (a2[1] - y[1]) ** 2)
    d2 = [(a2[i] - y[i]) * a2[i] * (1.0 - a2[i]) for i in range(2)]
    dW2 = [[d2[i] * a1[j] for j in range(2)] for i in range(2)]
    back = [W2[0][j] * d2[0] + W2[1][j] * d2[1] for j in range(2)]
    d1 = [back[j] * a1[j] * (1.0 - a1[j]) for j in range(2)]
    dW1 = [[d1[i] * x[j] for j in range(2)] for i in range(2)]
    new_W1 = [[W1[i][j] - eta * dW1[i][j] for j in range(2)] for i in range(2)]
    new_b1 = [b1[i] - eta * d1[i] for i in range(2)]
    new_W2 = [[W2[i][j] - eta * dW2[i][j] for j in range(2)] for i in range(2)]
    new_b2 = [b2[i] - eta * d2[i] for i in range(2)]

    # the hand-worked values in the docstring are these numbers
    assert z1 == [0.5, 0.125]
    np.testing.assert_allclose(a1, [0.6224593312, 0.5312093734], atol=1e-10)
    np.testing.assert_allclose(a2, [0.5844941206, 0.5790883272], atol=1e-10)
    np.testing.assert_allclose(L, 0.2539942132, atol=1e-10)
    np.testing.assert_allclose(d2, [-0.1009100668, 0.1411499055], atol=1e-10)
    np.testing.assert_allclose(d1, [-0.0071288644, 0.0339167260], atol=1e-10)
    np.testing.assert_allclose(new_W1, [[0.5035644322, -0.2482177839],
                                        [0.2330416370, 0.7415208185]], atol=1e-10)
    np.testing.assert_allclose(new_W2, [[1.0314062064, -0.9731978133],
                                        [0.4560699621, 0.2125099236]], atol=1e-10)

    net = fastbp.MLP([2, 2, 2], activation="sigmoid", loss="mse", dtype="float64")
    net.weights[0][...] = W1
    net.biases[0][...] = b1
    net.weights[1][...] = W2
    net.biases[1][...] = b2
    X, Y = np.array([x]), np.array([y])

    # the intermediate values through the public API, before the step
    np.testing.assert_array_max_ulp(net.forward(X)[0], np.array(a2), maxulp=4)
    np.testing.assert_allclose(net.loss(X, Y), L, rtol=1e-15)
    dWs, dbs = net.gradients(X, Y)
    np.testing.assert_array_max_ulp(dWs[1], np.array(dW2), maxulp=4)
    np.testing.assert_array_max_ulp(dbs[1], np.array(d2), maxulp=4)
    np.testing.assert_array_max_ulp(dWs[0], np.array(dW1), maxulp=4)
    np.testing.assert_array_max_ulp(dbs[0], np.array(d1), maxulp=4)

    net.fit(X, Y, epochs=1, batch_size=1, lr=eta, shuffle=False)
    np.testing.assert_array_max_ulp(net.weights[0], np.array(new_W1), maxulp=4)
    np.testing.assert_array_max_ulp(net.biases[0], np.array(new_b1), maxulp=4)
    np.testing.assert_array_max_ulp(net.weights[1], np.array(new_W2), maxulp=4)
    np.testing.assert_array_max_ulp(net.biases[1], np.array(new_b2), maxulp=4)
    # loss_curve_ holds the loss measured before the step
    assert len(net.loss_curve_) == 1
    np.testing.assert_allclose(net.loss_curve_[0], L, rtol=1e-15)


# ---- several SGD steps: against the naive oracle and PyTorch ---------------------------------
STEP_CASES = [
    ("sigmoid", "mse", None, [5, 7, 2]),
    ("tanh", "cross_entropy", None, [6, 8, 5, 3]),
    ("relu", "bce", None, [4, 6, 5, 1]),
    ("identity", "mse", "tanh", [3, 4, 2]),
    ("tanh", "cross_entropy", None, [4, 3]),  # a single layer (multinomial regression)
]
STEP_IDS = [f"{h}-{l}-{len(s) - 1}layers" for h, l, _, s in STEP_CASES]


def step_problem(hidden, loss, out_act, sizes, dtype, n=11):
    rng = np.random.default_rng(8)
    net = fastbp.MLP(sizes, activation=hidden, output_activation=out_act, loss=loss,
                     dtype=dtype, seed=6)
    for b in net.biases:
        b[...] = rng.uniform(-0.2, 0.2, b.shape)
    X = rng.uniform(-1, 1, (n, sizes[0]))
    m = sizes[-1]
    if loss == "cross_entropy":
        Y = np.eye(m)[rng.integers(0, m, n)]
    elif loss == "bce":
        Y = rng.integers(0, 2, (n, m)).astype(np.float64)
    else:
        Y = rng.uniform(-0.5, 1, (n, m))
    return net, X.astype(dtype), Y.astype(dtype)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 11, 16],
                         ids=["per-sample", "batch2", "batch3", "full-batch", "batch-over-N"])
@pytest.mark.parametrize("hidden,loss,out_act,sizes", STEP_CASES, ids=STEP_IDS)
def test_fit_matches_naive_sgd(hidden, loss, out_act, sizes, batch_size):
    """Two epochs over 11 samples in order: per-sample SGD (the fused path), batches of 2 and
    3 (last batches of 1 and 2), one batch of all 11, and a batch size above N."""
    net, X, Y = step_problem(hidden, loss, out_act, sizes, "float64")
    acts = [hidden] * (len(sizes) - 2) + [net.output_activation]
    Ws, bs = list(net.weights), list(net.biases)
    for _ in range(2):
        Ws, bs = naive.sgd_epoch(Ws, bs, acts, loss, X, Y, 0.3, batch_size)
    net.fit(X, Y, epochs=2, batch_size=batch_size, lr=0.3, shuffle=False)
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], Ws[l], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(net.biases[l], bs[l], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,loss,out_act,sizes", STEP_CASES, ids=STEP_IDS)
def test_fit_matches_torch_sgd(torch, hidden, loss, out_act, sizes, dtype, batch):
    """Three epochs over 11 samples in order, per-sample and in batches of 3, against
    ``torch.optim.SGD`` stepping on the same starting weights."""
    net, X, Y = step_problem(hidden, loss, out_act, sizes, dtype)
    tdt = torch.float64 if dtype == "float64" else torch.float32
    Ws = [torch.tensor(W, dtype=tdt, requires_grad=True) for W in net.weights]
    bs = [torch.tensor(b, dtype=tdt, requires_grad=True) for b in net.biases]
    acts = [hidden] * (len(sizes) - 2) + [net.output_activation]
    lr, epochs = 0.3, 3
    opt = torch.optim.SGD(Ws + bs, lr=lr)
    Xt, Yt = torch.tensor(X, dtype=tdt), torch.tensor(Y, dtype=tdt)
    curve = []
    for _ in range(epochs):
        total = 0.0
        for start in range(0, len(X), batch):
            opt.zero_grad()
            L = naive.torch_network_loss(torch, Ws, bs, acts, loss, Xt[start:start + batch],
                           Yt[start:start + batch])
            L.backward()
            opt.step()
            total += L.item() * len(Xt[start:start + batch])
        curve.append(total / len(X))

    net.fit(X, Y, epochs=epochs, batch_size=batch, lr=lr, shuffle=False)
    if dtype == "float64":
        rtol, atol = 1e-10, 1e-12
    else:
        rtol, atol = 1e-4, 1e-5
    for l in range(net.n_layers):
        np.testing.assert_allclose(net.weights[l], Ws[l].detach().numpy(), rtol=rtol, atol=atol)
        np.testing.assert_allclose(net.biases[l], bs[l].detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(net.loss_curve_, curve, rtol=rtol * 10)


@pytest.mark.parametrize("batch_size", [1, 8])
def test_fit_matches_naive_sgd_on_a_wider_network(batch_size):
    """Sizes at which the batched path runs threaded kernels (with more than one thread) and
    the per-sample path sweeps 300-wide rows."""
    rng = np.random.default_rng(9)
    net = fastbp.MLP([300, 40, 10], activation="tanh", loss="cross_entropy", dtype="float64",
                     seed=2)
    X = rng.uniform(0, 1, (20, 300))
    Y = np.eye(10)[rng.integers(0, 10, 20)]
    Ws, bs = list(net.weights), list(net.biases)
    Ws, bs = naive.sgd_epoch(Ws, bs, ["tanh", "softmax"], "cross_entropy", X, Y, 0.05,
                             batch_size)
    net.fit(X, Y, epochs=1, batch_size=batch_size, lr=0.05, shuffle=False)
    for l in range(2):
        np.testing.assert_allclose(net.weights[l], Ws[l], rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(net.biases[l], bs[l], rtol=1e-11, atol=1e-13)


# ---- the thread count does not change any result ---------------------------------------------
needs_two_threads = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < 2,
    reason="numba was started with NUMBA_NUM_THREADS=1; CI reruns the suite with 2")


def run_everything(sizes, dtype, X, y, batch_size):
    net = fastbp.MLP(sizes, activation="sigmoid", loss="cross_entropy", dtype=dtype, seed=3)
    out = net.forward(X)
    loss = net.loss(X, y)
    dWs, dbs = net.gradients(X, y)
    net.fit(X, y, epochs=2, batch_size=batch_size, lr=0.1, shuffle=True)
    return [out, np.array(loss), *dWs, *dbs, net.params.copy(), np.array(net.loss_curve_)]


def assert_bitwise(a, b):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        assert u.dtype == v.dtype
        np.testing.assert_array_equal(u, v, err_msg=f"result {k} differs")


@needs_two_threads
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("sizes,n,batch_size", [
    ([784, 128, 10], 64, 32),   # threaded kernels (the first layer's, batch_threaded)
    ([784, 128, 10], 24, 1),    # per-sample: the first layer and the update still threaded
    ([5, 4, 3], 17, 4),         # everything on the serial path
], ids=["784-128-10-batch32", "784-128-10-batch1", "5-4-3-serial"])
def test_results_bitwise_equal_with_one_and_two_threads(num_threads, sizes, n, batch_size,
                                                        dtype):
    rng = np.random.default_rng(5)
    X = rng.uniform(0, 1, (n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    if sizes[1] == 128 and batch_size == 1:  # the per-sample sweep of the first layer
        assert sizes[0] * sizes[1] >= knet.PARALLEL_MIN_WORK
    elif sizes[1] == 128:
        assert knet.batch_threaded(batch_size, np.empty((sizes[1], sizes[0])),
                                   knet.PARALLEL_MIN_WORK)
    with num_threads(1):
        one = run_everything(sizes, dtype, X, y, batch_size)
    with num_threads(2):
        assert knet.parallel_threshold() == knet.PARALLEL_MIN_WORK
        two = run_everything(sizes, dtype, X, y, batch_size)
    assert_bitwise(one, two)


@needs_two_threads
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_threaded_drivers_race_free(num_threads, dtype):
    """The network drivers with every layer forced onto the threaded kernels (``min_par=0``),
    with 1 and with 2 threads, and with every layer serial: the same bits."""
    rng = np.random.default_rng(6)
    net = fastbp.MLP([300, 37, 17, 10], activation="tanh", loss="cross_entropy", dtype=dtype,
                     seed=1)
    X = rng.uniform(0, 1, (33, 300)).astype(dtype)
    Y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 33)]
    S = knet.workspace_size(net._layout)

    def passes(min_par):
        params = net.params.copy()
        acts, deltas = np.empty(33 * S, dtype), np.empty(33 * S, dtype)
        grads = np.empty_like(params)
        out = knet.forward_batch(acts, X, params, net._layout, min_par).copy()
        knet.backward_batch(grads, deltas, acts, X, Y, params, net._layout, 2, min_par)
        stepped = params.copy()
        if min_par == 0:
            kernels.sgd_update(stepped, grads, np.dtype(dtype).type(0.1))
        else:
            kernels.sgd_update_serial(stepped, grads, np.dtype(dtype).type(0.1))
        return [out, grads, stepped]

    with num_threads(1):
        serial = passes(knet.SERIAL_ONLY)
        threaded_1 = passes(0)
    with num_threads(2):
        threaded_2 = passes(0)
    assert_bitwise(threaded_1, threaded_2)
    assert_bitwise(serial, threaded_2)


# ---- networks that learn ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_xor_is_learned(dtype, seed):
    """The classic: 2-4-1 sigmoid network, squared error, per-sample SGD."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=dtype)
    Y = np.array([[0], [1], [1], [0]], dtype=dtype)
    net = fastbp.MLP([2, 4, 1], activation="sigmoid", loss="mse", dtype=dtype, seed=seed)
    before = net.loss(X, Y)
    net.fit(X, Y, epochs=2000, batch_size=1, lr=2.0)
    out = net.forward(X)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.round(out), Y)
    assert np.abs(out - Y).max() < 0.25
    assert net.loss(X, Y) < before / 10
    assert len(net.loss_curve_) == 2000 and net.loss_curve_[-1] < net.loss_curve_[0]


@pytest.mark.parametrize("config", [
    dict(activation="sigmoid", loss="mse", batch_size=1, lr=0.5, epochs=20),  # the seed's
    dict(activation="relu", loss="cross_entropy", batch_size=8, lr=0.1, epochs=20),
], ids=["sigmoid-mse-per-sample", "relu-cross_entropy-batch8"])
def test_digits_reach_95_percent(config):
    X_train, X_test, y_train, y_test = fastbp.datasets.load_digits_split()
    net = fastbp.MLP([64, 64, 10], activation=config["activation"], loss=config["loss"],
                     dtype="float32", seed=0)
    net.fit(X_train, y_train, epochs=config["epochs"], batch_size=config["batch_size"],
            lr=config["lr"])
    pred = net.predict(X_test)
    if pred.ndim == 2:  # mse: outputs, one per class
        pred = pred.argmax(axis=1)
    accuracy = (pred == y_test).mean()
    assert accuracy >= 0.95, f"test accuracy {accuracy:.3f}"
    assert net.loss_curve_[-1] < net.loss_curve_[0] / 2
