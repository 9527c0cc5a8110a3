"""``fastbp.MLP`` as an object: parameter views, shapes and dtypes of results, labels,
reproducibility, pickling, split fits; and the bundled digits data set."""
import pickle

import numpy as np
import pytest

import naive
import fastbp
from fastbp import datasets

DTYPES = ["float32", "float64"]


def naive_forward(net, X):
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    return naive.network_forward(list(net.weights), list(net.biases), acts, X)[-1]


def small_net(dtype="float64", **kw):
    kw.setdefault("activation", "tanh")
    kw.setdefault("loss", "cross_entropy")
    return fastbp.MLP([6, 5, 4, 3], dtype=dtype, seed=kw.pop("seed", 1), **kw)


# ---- parameters are views into one flat buffer -----------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_and_biases_are_views_into_params(dtype):
    net = small_net(dtype)
    assert net.params.ndim == 1 and net.params.dtype == np.dtype(dtype)
    n = 0
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        assert W.shape == (net.layer_sizes[l + 1], net.layer_sizes[l])
        assert b.shape == (net.layer_sizes[l + 1],)
        assert W.dtype == b.dtype == np.dtype(dtype)
        assert np.shares_memory(W, net.params) and np.shares_memory(b, net.params)
        assert W.flags.writeable and b.flags.writeable
        n += W.size + b.size
    assert net.params.size == n
    # every parameter is in exactly one view: marking each view marks the whole buffer once
    net.params[...] = 0
    for W, b in zip(net.weights, net.biases):
        W += 1
        b += 1
    np.testing.assert_array_equal(net.params, 1)


def test_writing_a_view_changes_the_network():
    rng = np.random.default_rng(0)
    net = small_net()
    X = rng.normal(size=(4, 6))
    before = net.forward(X)
    net.weights[1][2, 3] += 0.5
    net.biases[2][...] = [0.1, -0.2, 0.3]
    after = net.forward(X)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, naive_forward(net, X), rtol=1e-12, atol=1e-15)
    # and writing the flat buffer changes the views
    net.params[...] = 0
    assert all(not W.any() for W in net.weights)
    np.testing.assert_allclose(net.forward(X), 1 / 3)  # softmax of zeros


def test_assigning_a_layer_copies_into_the_view():
    rng = np.random.default_rng(1)
    net = small_net()
    view_W, view_b = net.weights[0], net.biases[0]
    W = rng.normal(size=(5, 6))
    b = rng.normal(size=5)
    net.weights[0] = W
    net.biases[0] = b
    assert net.weights[0] is view_W and net.biases[0] is view_b  # same views, new values
    np.testing.assert_array_equal(view_W, W)
    np.testing.assert_array_equal(view_b, b)
    np.testing.assert_array_equal(net.params[:30].reshape(5, 6), W)
    W[...] = 0  # a copy: the caller's array is not shared
    assert view_W.any()
    X = rng.normal(size=(3, 6))
    np.testing.assert_allclose(net.forward(X), naive_forward(net, X), rtol=1e-12, atol=1e-15)
    kept = net.params.copy()
    with pytest.raises(ValueError, match=r"\(5, 6\)"):
        net.weights[0] = np.zeros((6, 5))
    with pytest.raises(ValueError):
        net.biases[1] = np.zeros(5)
    with pytest.raises(ValueError):
        net.weights[0] = np.full((5, 6), np.nan)
    np.testing.assert_array_equal(net.params, kept)  # failed assignments changed nothing


def test_float32_weights_assigned_from_float64_are_rounded():
    net = small_net("float32")
    W = np.random.default_rng(2).normal(size=(5, 6))
    net.weights[0] = W
    assert net.weights[0].dtype == np.float32
    np.testing.assert_array_equal(net.weights[0], W.astype(np.float32))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_assigning_values_that_overflow_float32_is_rejected():
    net = small_net("float32")
    kept = net.params.copy()
    with pytest.raises(ValueError):
        net.weights[0] = np.full((5, 6), 1e39)
    np.testing.assert_array_equal(net.params, kept)


# ---- shapes and dtypes of results ------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_of_one_sample(dtype):
    rng = np.random.default_rng(3)
    net = small_net(dtype)
    X = rng.normal(size=(7, 6))
    out = net.forward(X)
    assert out.shape == (7, 3) and out.dtype == np.dtype(dtype)
    one = net.forward(X[2])
    assert one.shape == (3,) and one.dtype == np.dtype(dtype)
    # a row inside a batch goes through the 4x4 register tile, a single sample through the
    # one-row loop: the same sums, possibly split into vector lanes differently
    tol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(one, out[2], rtol=tol, atol=tol)
    one_list = net.forward(list(X[2]))
    np.testing.assert_array_equal(one_list, one)


@pytest.mark.parametrize("dtype", DTYPES)
def test_results_keep_the_model_dtype(dtype):
    rng = np.random.default_rng(4)
    X64 = rng.normal(size=(9, 6))  # float64 input to a float32 model is converted
    y = rng.integers(0, 3, 9)
    for loss, out_act in (("mse", None), ("bce", None), ("cross_entropy", None)):
        net = small_net(dtype, loss=loss, output_activation=out_act)
        Y = np.eye(3)[y]
        assert net.forward(X64).dtype == np.dtype(dtype)
        assert net.params.dtype == np.dtype(dtype)
        dWs, dbs = net.gradients(X64, Y)
        assert all(g.dtype == np.dtype(dtype) for g in dWs + dbs)
        assert isinstance(net.loss(X64, Y), float)
        net.fit(X64, Y, epochs=2, batch_size=4, lr=0.1)
        assert net.params.dtype == np.dtype(dtype)
        assert all(W.dtype == np.dtype(dtype) for W in net.weights)
        assert all(isinstance(v, float) for v in net.loss_curve_)
        if loss == "mse":
            assert net.predict(X64).dtype == np.dtype(dtype)


def test_float32_forward_is_float32_arithmetic():
    """The float32 model's output is close to float64 arithmetic on the same weights, but is
    not the float64 result (it was computed in float32, not rounded from float64)."""
    rng = np.random.default_rng(5)
    net32 = fastbp.MLP([40, 30, 10], activation="tanh", loss="mse", dtype="float32", seed=2)
    X = rng.normal(size=(50, 40)).astype(np.float32)
    out = net32.forward(X)
    ref = naive_forward(net32, X)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(out, ref.astype(np.float32))


def test_forward_and_loss_over_many_chunks():
    """forward/loss push rows through in chunks (``PREDICT_CHUNK``): more rows than that, and
    a remainder, give the same as the oracle and as row-by-row."""
    from fastbp.model import PREDICT_CHUNK
    rng = np.random.default_rng(12)
    net = small_net()
    N = 2 * PREDICT_CHUNK + 37
    X = rng.normal(size=(N, 6))
    y = rng.integers(0, 3, N)
    out = net.forward(X)
    assert out.shape == (N, 3)
    np.testing.assert_allclose(out, naive_forward(net, X), rtol=1e-12, atol=1e-15)
    for k in (0, PREDICT_CHUNK - 1, PREDICT_CHUNK, N - 1):  # single rows: see
        np.testing.assert_allclose(net.forward(X[k]), out[k], rtol=1e-15, atol=1e-15)  # above
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    ref = naive.network_loss(list(net.weights), list(net.biases), acts, "cross_entropy", X,
                             np.eye(3)[y])
    np.testing.assert_allclose(net.loss(X, y), ref, rtol=1e-12)


# ---- predict ---------------------------------------------------------------------------------
def test_predict_returns_labels_for_classification():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(20, 6))
    ce = small_net(loss="cross_entropy")
    labels = ce.predict(X)
    assert labels.shape == (20,) and labels.dtype.kind == "i"
    np.testing.assert_array_equal(labels, ce.forward(X).argmax(axis=1))
    assert np.ndim(ce.predict(X[0])) == 0 and ce.predict(X[0]) == labels[0]

    bce1 = fastbp.MLP([6, 5, 1], activation="tanh", loss="bce", dtype="float64", seed=3)
    bce1.biases[1][...] = 0.0
    p = bce1.forward(X)[:, 0]
    got = bce1.predict(X)
    assert got.shape == (20,) and got.dtype.kind == "i"
    np.testing.assert_array_equal(got, (p > 0.5).astype(int))
    assert set(np.unique(got)) <= {0, 1}

    bce3 = small_net(loss="bce")
    got = bce3.predict(X)
    assert got.shape == (20, 3) and got.dtype.kind == "i"
    np.testing.assert_array_equal(got, (bce3.forward(X) > 0.5).astype(int))

    mse = small_net(loss="mse")
    np.testing.assert_array_equal(mse.predict(X), mse.forward(X))


# ---- integer labels are one-hot rows ---------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
def test_integer_labels_equal_one_hot_targets(loss, dtype):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(25, 6)).astype(dtype)
    y = rng.integers(0, 3, 25)
    Y = np.eye(3, dtype=dtype)[y]
    a, b = small_net(dtype, loss=loss), small_net(dtype, loss=loss)
    assert a.loss(X, y) == b.loss(X, Y)
    ga, gb = a.gradients(X, y), b.gradients(X, Y)
    for u, v in zip(ga[0] + ga[1], gb[0] + gb[1]):
        np.testing.assert_array_equal(u, v)
    a.fit(X, y, epochs=3, batch_size=4, lr=0.2)
    b.fit(X, Y, epochs=3, batch_size=4, lr=0.2)
    np.testing.assert_array_equal(a.params, b.params)
    assert a.loss_curve_ == b.loss_curve_
    # float labels holding integers, and other integer dtypes, are labels too
    c = small_net(dtype, loss=loss)
    c.fit(X, y.astype(np.float64), epochs=3, batch_size=4, lr=0.2)
    np.testing.assert_array_equal(c.params, a.params)
    d = small_net(dtype, loss=loss)
    d.fit(X, y.astype(np.int8), epochs=3, batch_size=4, lr=0.2)
    np.testing.assert_array_equal(d.params, a.params)


def test_labels_out_of_range_are_rejected():
    net = small_net()
    X = np.zeros((3, 6))
    with pytest.raises(ValueError, match="label"):
        net.fit(X, [0, 1, 3])
    with pytest.raises(ValueError, match="label"):
        net.fit(X, [0, -1, 2])
    with pytest.raises(ValueError):
        net.fit(X, [0.5, 1, 2])


# ---- reproducibility -------------------------------------------------------------------------
def test_seeded_initialization_is_reproducible():
    a = fastbp.MLP([8, 7, 6, 3], activation="relu", loss="cross_entropy", seed=42)
    b = fastbp.MLP([8, 7, 6, 3], activation="relu", loss="cross_entropy", seed=42)
    c = fastbp.MLP([8, 7, 6, 3], activation="relu", loss="cross_entropy", seed=43)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    u = fastbp.MLP([8, 7, 6, 3], seed=None)
    v = fastbp.MLP([8, 7, 6, 3], seed=None)
    assert not np.array_equal(u.params, v.params)


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "identity"])
def test_initialization_ranges_and_dtypes_agree(activation):
    """Uniform in [-r, r] with the documented r; biases zero; float32 = rounded float64."""
    sizes = [30, 20, 10]
    n64 = fastbp.MLP(sizes, activation=activation, loss="mse", dtype="float64", seed=5)
    n32 = fastbp.MLP(sizes, activation=activation, loss="mse", dtype="float32", seed=5)
    np.testing.assert_array_equal(n32.params, n64.params.astype(np.float32))
    for W, b in zip(n64.weights, n64.biases):
        n_out, n_in = W.shape
        r = {"relu": np.sqrt(6 / n_in), "sigmoid": np.sqrt(2 / (n_in + n_out))}.get(
            activation, np.sqrt(6 / (n_in + n_out)))
        assert np.abs(W).max() <= r
        assert np.abs(W).max() > 0.8 * r  # spread over the range, not a smaller one
        assert not b.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_k_epochs_in_one_fit_equal_k_fits_of_one_epoch(dtype):
    rng = np.random.default_rng(8)
    X = rng.normal(size=(23, 6)).astype(dtype)
    y = rng.integers(0, 3, 23)
    for batch_size in (1, 5):
        one = small_net(dtype, seed=9)
        one.fit(X, y, epochs=4, batch_size=batch_size, lr=0.1, shuffle=True)
        split = small_net(dtype, seed=9)
        for _ in range(4):
            split.fit(X, y, epochs=1, batch_size=batch_size, lr=0.1, shuffle=True)
        np.testing.assert_array_equal(one.params, split.params)
        assert one.loss_curve_ == split.loss_curve_
        assert len(one.loss_curve_) == 4
        # and shuffling did matter: in-order training ends elsewhere
        ordered = small_net(dtype, seed=9)
        ordered.fit(X, y, epochs=4, batch_size=batch_size, lr=0.1, shuffle=False)
        assert not np.array_equal(ordered.params, one.params)


def test_fit_is_reproducible_and_continues_from_the_current_weights():
    rng = np.random.default_rng(10)
    X = rng.normal(size=(30, 6))
    y = rng.integers(0, 3, 30)
    a, b = small_net(seed=4), small_net(seed=4)
    a.fit(X, y, epochs=3, batch_size=2, lr=0.1)
    b.fit(X, y, epochs=3, batch_size=2, lr=0.1)
    np.testing.assert_array_equal(a.params, b.params)
    first = a.loss(X, y)
    a.fit(X, y, epochs=20, batch_size=2, lr=0.1)
    assert a.loss(X, y) < first  # continued training lowers the loss further


# ---- pickling --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
def test_pickle_round_trip_keeps_params_and_views(dtype):
    rng = np.random.default_rng(11)
    X = rng.normal(size=(12, 6)).astype(dtype)
    y = rng.integers(0, 3, 12)
    net = small_net(dtype)
    net.fit(X, y, epochs=2, batch_size=3, lr=0.1)
    clone = pickle.loads(pickle.dumps(net))
    assert clone.params is not net.params
    np.testing.assert_array_equal(clone.params, net.params)
    # the parameters start on a cache line, in a new model and in an unpickled one
    assert net.params.ctypes.data % 64 == 0 and clone.params.ctypes.data % 64 == 0
    assert clone.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(clone.forward(X), net.forward(X))
    assert clone.layer_sizes == net.layer_sizes and clone.loss_curve_ == net.loss_curve_
    for W, b in zip(clone.weights, clone.biases):  # the views point into the clone's buffer
        assert np.shares_memory(W, clone.params) and np.shares_memory(b, clone.params)
        assert not np.shares_memory(W, net.params)
    clone.weights[0][...] = 0
    assert not clone.params[:30].any()
    assert net.weights[0].any()
    np.testing.assert_allclose(clone.forward(X), naive_forward(clone, X), rtol=1e-5, atol=1e-6)
    # training continues identically (the shuffling generator is pickled too)
    again = pickle.loads(pickle.dumps(net))
    net.fit(X, y, epochs=2, batch_size=3, lr=0.1)
    again.fit(X, y, epochs=2, batch_size=3, lr=0.1)
    np.testing.assert_array_equal(again.params, net.params)


def test_pickle_of_a_model_with_public_architecture_attributes_loads():
    """Pickles from before the architecture became read-only properties hold it as plain
    public attributes: they load into the private ones."""
    net = small_net()
    state = net.__getstate__()
    for name in ("layer_sizes", "activation", "output_activation", "loss_name", "dtype",
                 "seed"):
        state[name] = state.pop("_" + name)
    state["layer_sizes"] = list(state["layer_sizes"])
    old = fastbp.MLP.__new__(fastbp.MLP)
    old.__setstate__(state)
    assert old.get_config() == net.get_config() and "layer_sizes" not in vars(old)
    X = np.linspace(-1, 1, 12).reshape(2, 6)
    np.testing.assert_array_equal(old.forward(X), net.forward(X))


# ---- datasets --------------------------------------------------------------------------------
def test_load_digits():
    X, y = datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32 and X.flags.c_contiguous
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 1
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    assert np.bincount(y).min() >= 170  # about 180 images of each digit
    X64, y64 = datasets.load_digits("float64")
    assert X64.dtype == np.float64
    np.testing.assert_array_equal(X64.astype(np.float32), X)
    np.testing.assert_array_equal(y64, y)
    raw, _ = datasets.load_digits("float64", scale=False)
    np.testing.assert_array_equal(raw, np.round(raw))  # pixel counts 0..16
    assert raw.max() == 16
    np.testing.assert_array_equal(raw / 16, X64)


def rows(X, y):
    """The samples as a sorted list of tuples (pixels..., label): compares multisets."""
    return sorted(map(tuple, np.column_stack([X, y]).tolist()))


def test_digits_split_is_stratified_disjoint_and_reproducible():
    X, y = datasets.load_digits()
    X_tr, X_te, y_tr, y_te = datasets.load_digits_split()
    assert X_tr.dtype == X_te.dtype == np.float32
    assert len(X_tr) + len(X_te) == 1797 and len(X_tr) == len(y_tr) and len(X_te) == len(y_te)
    assert rows(np.vstack([X_tr, X_te]), np.concatenate([y_tr, y_te])) == rows(X, y)
    counts, test_counts = np.bincount(y), np.bincount(y_te, minlength=10)
    np.testing.assert_array_equal(test_counts, np.round(0.25 * counts))  # per class
    # reproducible, and a different seed gives a different split
    again = datasets.load_digits_split()
    for u, v in zip(again, (X_tr, X_te, y_tr, y_te)):
        np.testing.assert_array_equal(u, v)
    other = datasets.load_digits_split(seed=1)
    assert not np.array_equal(other[3], y_te) or not np.array_equal(other[1], X_te)
    np.testing.assert_array_equal(np.bincount(other[3], minlength=10), test_counts)
    # another fraction, another dtype
    X_tr, X_te, y_tr, y_te = datasets.load_digits_split("float64", test_fraction=0.5)
    assert X_tr.dtype == np.float64
    np.testing.assert_array_equal(np.bincount(y_te, minlength=10), np.round(0.5 * counts))


def test_train_test_split_of_other_targets_and_bad_arguments():
    X = np.arange(200.0).reshape(100, 2)
    y = np.arange(100) % 3
    # one-hot rows and float targets: split as a whole (not stratified), 25 held out
    for target in (np.eye(3)[y], np.linspace(0.0, 1.0, 100)):
        X_tr, X_te, y_tr, y_te = datasets.train_test_split(X, target)
        assert len(X_te) == len(y_te) == 25 and len(X_tr) == 75
        assert sorted(X_tr[:, 0].tolist() + X_te[:, 0].tolist()) == X[:, 0].tolist()
        np.testing.assert_array_equal(y_te, target[(X_te[:, 0] / 2).astype(int)])
    with pytest.raises(ValueError, match="seed must be an integer >= 0, got -1"):
        datasets.train_test_split(X, y, seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        datasets.train_test_split(X, y, seed="a")
    with pytest.raises(ValueError, match="leaves the test part empty"):
        datasets.train_test_split(X, y, test_fraction=1e-9)
    with pytest.raises(ValueError, match="leaves the train part empty"):
        datasets.train_test_split(X, y, test_fraction=0.999)


def test_aligned_zeros_start_on_a_cache_line():
    from fastbp.model import CACHE_LINE, aligned_zeros
    for dtype in DTYPES:
        for n in (1, 3, 17, 1000, 100_003):
            a = aligned_zeros(n, dtype)
            assert a.shape == (n,) and a.dtype == np.dtype(dtype), (n, dtype)
            assert a.ctypes.data % CACHE_LINE == 0, (n, dtype)
            assert a.flags.c_contiguous and a.flags.writeable and not a.any()
