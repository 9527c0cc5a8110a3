"""The speed-motivated parts of fastbp, checked for correctness (never for speed):
the vectorizable exp, the threaded per-sample path, Hogwild, the deferred first-layer step,
allocation-free training steps and where the compile cache goes (its sets: test_cache.py)."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastbp
import naive
from fastbp.kernels import fused, network as knet
from fastbp.kernels.activations import ACTIVATIONS, fast_exp
from fastbp.kernels.layout import layer_params, make_layout
from fastbp.kernels.losses import LOSSES



@numba.njit
def _exp_all(x):
    out = np.empty_like(x)
    for k in range(x.shape[0]):
        out[k] = fast_exp(x[k])
    return out


def test_fast_exp_float32_accuracy_and_edges():
    x = np.linspace(-87.3, 88.3, 200_001).astype(np.float32)
    got = _exp_all(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert got.dtype == np.float64 and _exp_all(x).dtype == np.float32
    assert np.max(np.abs(got - want) / want) < 3.1e-7
    edges = np.array([np.nan, -np.inf, -1000.0, -88.0, 0.0, 1000.0, np.inf], dtype=np.float32)
    out = _exp_all(edges)
    assert np.isnan(out[0])
    np.testing.assert_array_equal(out[1:], [0.0, 0.0, 0.0, 1.0, np.inf, np.inf])


def test_fast_exp_float64_matches_numpy_exp():
    x = np.linspace(-700, 700, 10_001)
    np.testing.assert_allclose(_exp_all(x), np.exp(x), rtol=4e-16, atol=0)  # libm vs NumPy


def _per_sample_problem(dtype, n_in=300, hidden=64, n_out=10, N=40):
    rng = np.random.default_rng(5)
    net = fastbp.MLP([n_in, hidden, n_out], dtype=dtype, seed=1)
    X = rng.random((N, n_in)).astype(dtype)
    Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, N)]
    return net, X, Y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threaded_per_sample_sweep_equals_serial_bitwise(dtype):
    """Batch size 1 shares the first layer's fused update+forward sweep among threads (each
    owns whole rows): the weights must be bitwise those of the serial sweep."""
    results = []
    for min_par in (0, knet.SERIAL_ONLY):
        net, X, Y = _per_sample_problem(dtype)
        S = knet.workspace_size(net._layout)
        order = np.arange(X.shape[0], dtype=np.int64)
        loss = fused.sgd_per_sample(net.params, X, Y, order, 0, X.shape[0], dtype(0.05),
                                    net._layout, net._loss_code, np.zeros((2, S), dtype),
                                    np.zeros(S, dtype), min_par, 0.0)
        results.append((net.params.copy(), loss))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_hogwild_learns_digits_and_keeps_weights_finite(num_threads):
    X_train, X_test, y_train, y_test = fastbp.datasets.load_digits_split()
    net = fastbp.MLP([64, 64, 10], seed=0)
    with num_threads(min(2, numba.config.NUMBA_NUM_THREADS)):
        history = net.fit(X_train, y_train, epochs=20, lr=0.5, hogwild=True)
    assert np.isfinite(net.params).all()
    assert history.loss[-1] < history.loss[0]
    assert np.mean(net.predict(X_test).argmax(axis=1) == y_test) >= 0.93


def test_hogwild_with_one_thread_is_the_ordinary_per_sample_path():
    X_train, _, y_train, _ = fastbp.datasets.load_digits_split()
    a = fastbp.MLP([64, 16, 10], seed=3)
    b = fastbp.MLP([64, 16, 10], seed=3)
    with fastbp.threads(1):
        a.fit(X_train[:200], y_train[:200], epochs=2, lr=0.3, hogwild=True)
        b.fit(X_train[:200], y_train[:200], epochs=2, lr=0.3)
    np.testing.assert_array_equal(a.params, b.params)


# (sizes, activations, loss, batch, N, shuffled): ragged last batches, gathered batches, 1 to 3
# layers; input rows a multiple of 4 KiB long (copied into padded rows: network.padded_batch),
# with a batch and a layer that no tile divides
DEFERRED_CASES = [
    ((300, 64, 5), ("sigmoid", "sigmoid"), "mse", 16, 100, True),
    ((129, 33, 17, 4), ("relu", "tanh", "softmax"), "cross_entropy", 8, 45, False),
    ((257, 7), ("sigmoid",), "bce", 32, 70, True),
    ((1024, 30, 3), ("tanh", "sigmoid"), "mse", 7, 40, True),
]


@pytest.mark.parametrize("case", DEFERRED_CASES,
                         ids=["2-layer", "3-layer", "1-layer", "4KiB-rows"])
def test_deferred_first_layer_step_equals_the_plain_epoch_bitwise(case, dtype):
    """``train_epoch_deferred`` runs each batch's steps on the first two layers inside the next
    batch's first-layer region, split into ``n_tasks`` tasks, reading the batches' rows of X in
    place through the order; the weights and the loss must be bitwise those of the plain batch
    loop (which gathers shuffled batches) for any task count, and both must match naive
    in-order mini-batch SGD."""
    sizes, act_names, loss_name, B, N, shuffled = case
    rng = np.random.default_rng(11)
    X = rng.uniform(-1, 1, (N, sizes[0])).astype(dtype)
    Y = rng.uniform(0.05, 0.95, (N, sizes[-1])).astype(dtype)
    if loss_name == "cross_entropy":
        Y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], N)]
    layout, P = make_layout(sizes, [ACTIVATIONS[a] for a in act_names])
    p0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(N) if shuffled else np.arange(N)
    S = knet.workspace_size(layout)
    lr, loss = dtype(0.5), LOSSES[loss_name]

    def epoch(run):
        params = p0.copy()
        xbuf = np.empty(B * sizes[0], dtype=dtype)
        work = (np.empty(B * sizes[-1], dtype=dtype), np.empty(B * (S + sizes[1]), dtype=dtype),
                np.empty(B * S, dtype=dtype))
        total = run(params, X, Y, order, xbuf, *work)
        return params, total

    def run(path, min_par, n_tasks):
        return lambda p, X, Y, o, xb, yb, a, d: knet.sgd_epoch(
            path, p, X, Y, o, B, lr, layout, loss, xb, yb, a, d, min_par, n_tasks)

    # min_par = 0: every layer kernel threaded, so the deferred path applies at any size
    plain = epoch(run("sgd-batches", 0, 2))
    assert not np.array_equal(plain[0], p0)
    # min_par = 4096: only the first layer threaded, so the epoch takes the deferred path
    assert knet.defer_first_step(B, p0, layout, 4096)
    acts = np.empty(B * (S + sizes[1]), dtype=dtype)
    assert knet.sgd_epoch_path(B, p0, layout, acts, 4096) == "sgd-deferred"
    assert knet.sgd_epoch_path(B, p0, layout, acts[:B * S], 4096) == "sgd-batches"
    for n_tasks in (1, 2, 3, 5):
        deferred = epoch(run("sgd-deferred", 0, n_tasks))
        chosen = epoch(run("sgd-deferred", 4096, n_tasks))
        np.testing.assert_array_equal(deferred[0], plain[0], err_msg=f"{n_tasks} tasks")
        np.testing.assert_array_equal(chosen[0], plain[0], err_msg=f"{n_tasks} tasks")
        assert deferred[1] == pytest.approx(plain[1], rel=1e-12)
        assert chosen[1] == pytest.approx(plain[1], rel=1e-12)

    Ws, bs = [], []
    for l in range(len(sizes) - 1):
        w, b = layer_params(p0, layout, l)
        Ws.append(w.astype(np.float64))
        bs.append(b.astype(np.float64))
    Ws, bs = naive.sgd_epoch(Ws, bs, list(act_names), loss_name, X[order].astype(np.float64),
                             Y[order].astype(np.float64), float(lr), B)
    tol = 1e-9 if dtype == np.float64 else 2e-4
    for l in range(len(sizes) - 1):
        w, b = layer_params(deferred[0], layout, l)
        np.testing.assert_allclose(w, Ws[l], rtol=tol, atol=tol)
        np.testing.assert_allclose(b, bs[l], rtol=tol, atol=tol)


def test_consecutive_batches():
    """The deferred loop reads batches as slices of X exactly when every batch is a run."""
    runs = np.array([4, 5, 6, 7, 0, 1, 2, 3, 8, 9], dtype=np.int64)  # runs of 4, ragged end
    assert knet.consecutive_batches(runs, 4)
    assert knet.consecutive_batches(np.arange(10, dtype=np.int64), 3)
    assert not knet.consecutive_batches(runs, 5)  # [4 5 6 7 0]
    swapped = np.arange(32, dtype=np.int64)
    swapped[[15, 16]] = swapped[[16, 15]]  # only across a boundary of batches of 16
    assert not knet.consecutive_batches(swapped, 16)
    assert knet.consecutive_batches(swapped[::-1].copy(), 1)
    assert knet.consecutive_batches(np.zeros(0, dtype=np.int64), 4)
    # the NumPy twin that picks the kernel set (sgd_epoch) agrees, on these and random orders
    cases = [(runs, 4), (np.arange(10, dtype=np.int64), 3), (runs, 5), (swapped, 16),
             (swapped[::-1].copy(), 1), (np.zeros(0, dtype=np.int64), 4)]
    rng = np.random.default_rng(0)
    for _ in range(200):
        n, b = rng.integers(1, 20), rng.integers(1, 8)
        order = np.arange(n, dtype=np.int64)
        if rng.random() < 0.7:
            i, j = rng.integers(0, n, 2)
            order[[i, j]] = order[[j, i]]
        cases.append((order, b))
    for order, b in cases:
        assert knet.batches_are_slices(order, b) == knet.consecutive_batches(order, b), (order, b)


@pytest.mark.parametrize("n_in", [300, 1024])
@pytest.mark.parametrize("kind", ["runs", "one-swap"])
def test_deferred_epoch_on_permuted_runs_equals_the_plain_loop(kind, n_in, dtype):
    """Batches that are runs in a shuffled order of batches (read as slices of X), and the same
    order with one pair of samples swapped (every batch then read through its row indices),
    give the plain loop's weights bit for bit; so do batches copied into padded rows (1024
    inputs: rows a multiple of 4 KiB long)."""
    sizes, B, N = (n_in, 64, 5), 16, 96
    rng = np.random.default_rng(2)
    X = rng.uniform(-1, 1, (N, sizes[0])).astype(dtype)
    Y = rng.uniform(0.05, 0.95, (N, sizes[-1])).astype(dtype)
    layout, P = make_layout(sizes, [ACTIVATIONS["sigmoid"]] * 2)
    p0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = (rng.permutation(N // B)[:, None] * B + np.arange(B)).ravel().astype(np.int64)
    if kind == "one-swap":
        order[[3, 40]] = order[[40, 3]]
    assert knet.consecutive_batches(order, B) == (kind == "runs")
    S = knet.workspace_size(layout)
    lr, loss = dtype(0.5), LOSSES["mse"]
    results = []
    for min_par in (0, 4096):  # every layer threaded (plain loop), first layer only (deferred)
        params = p0.copy()
        acts = np.empty(B * (S + sizes[1]), dtype=dtype)
        path = knet.sgd_epoch_path(B, params, layout, acts, min_par, order)
        deferred = "sgd-deferred-slices" if kind == "runs" else "sgd-deferred"
        assert path == (deferred if min_par else "sgd-batches")
        knet.sgd_epoch(path, params, X, Y, order, B, lr, layout, loss,
                       np.empty(B * sizes[0], dtype=dtype), np.empty(B * sizes[-1], dtype=dtype),
                       acts, np.empty(B * S, dtype=dtype), min_par, 2)
        results.append(params)
    assert knet.defer_first_step(B, p0, layout, 4096) and not knet.defer_first_step(B, p0,
                                                                                      layout, 0)
    assert not np.array_equal(results[0], p0)
    np.testing.assert_array_equal(results[1], results[0])


@pytest.mark.parametrize("B, min_par", [(1, 4096), (8, 4096), (8, 0)],
                         ids=["per-sample", "deferred", "plain"])
def test_train_epoch_on_slices_of_the_order_is_the_whole_epoch(B, min_par, dtype):
    """An epoch trains on the samples its ``order`` names: an epoch run as calls on slices of
    the order (what ``fit`` does), each given the last one's loss sum, gives the one-call
    weights and loss sum, bit for bit;
    rows of X outside the order are never read. The compiled driver ``train_epoch`` (for the
    user's ``@njit`` code) takes the same path: the same numbers up to rounding (compiled as
    one unit with its callees, its sums may be associated differently)."""
    sizes = (300, 64, 5)
    rng = np.random.default_rng(5)
    N = 60
    X = rng.uniform(-1, 1, (N, sizes[0])).astype(dtype)
    Y = rng.uniform(0.05, 0.95, (N, sizes[-1])).astype(dtype)
    layout, P = make_layout(sizes, [ACTIVATIONS["sigmoid"]] * 2)
    p0 = rng.uniform(-0.2, 0.2, P).astype(dtype)
    order = rng.permutation(N)[:44]  # 16 samples never visited: NaN rows must not matter
    X[np.setdiff1d(np.arange(N), order)] = np.nan
    S = knet.workspace_size(layout)
    lr, loss = dtype(0.5), LOSSES["mse"]
    if B > 1:
        assert knet.defer_first_step(B, p0, layout, min_par) == (min_par == 4096)

    def workspaces():
        return (np.empty(2 * B * sizes[0], dtype=dtype), np.empty(B * sizes[-1], dtype=dtype),
                np.empty(max(B, 2) * S + B * sizes[1], dtype=dtype), np.empty(B * S, dtype=dtype))

    def run(params, o, total=0.0):
        work = workspaces()
        path = knet.sgd_epoch_path(B, params, layout, work[2], min_par)
        return knet.sgd_epoch(path, params, X, Y, o, B, lr, layout, loss, *work, min_par, 2,
                              total)

    whole = p0.copy()
    mean = run(whole, order) / 44
    assert np.isfinite(whole).all() and not np.array_equal(whole, p0)
    for cuts in ([24], [8, 16, 40]):  # multiples of the batch size (even, as per-sample wants)
        parts, total = p0.copy(), 0.0
        for a, b in zip([0] + cuts, cuts + [44]):
            total = run(parts, order[a:b], total)
        np.testing.assert_array_equal(parts, whole)
        assert total / 44 == mean, cuts
    driver = p0.copy()
    mean_driver = knet.train_epoch(driver, driver, X, Y, order, B, lr, layout, loss, *workspaces(),
                                   min_par, 2)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(driver, whole, rtol=tol, atol=tol)
    assert mean_driver == pytest.approx(mean, rel=tol)


def test_gather_rows_copies_the_rows_in_order(dtype):
    """The shuffled-batch gather: ``dst[k] = src[order[start + k]]``, nothing else written."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 37)).astype(dtype)
    order = rng.permutation(50)
    buf = np.full(9 * 37 + 5, np.nan, dtype=dtype)
    dst = buf[:9 * 37].reshape(9, 37)
    knet.gather_rows(dst, X, order, 40)
    np.testing.assert_array_equal(dst, X[order[40:49]])
    assert np.isnan(buf[9 * 37:]).all()


def test_when_the_first_layer_step_is_deferred():
    """Deferred only where measured to pay: first layer threaded, later layers on the calling
    thread, and half of W_0 plus two batches of input within DEFER_MAX_BYTES."""
    sig = [ACTIVATIONS["sigmoid"]] * 3
    par = knet.PARALLEL_MIN_WORK

    def defer(sizes, B, dtype=np.float32, min_par=par):
        layout, P = make_layout(sizes, sig[:len(sizes) - 1])
        return bool(knet.defer_first_step(B, np.zeros(P, dtype=dtype), layout, min_par))

    assert defer((784, 128, 10), 32)                       # mnist-b32: 200 + 200 kB
    assert defer((784, 128, 10), 64)
    assert defer((784, 128, 10), 17, np.float64)
    assert not defer((784, 128, 10), 96)                   # 200 + 602 kB
    assert not defer((784, 128, 10), 256)
    assert not defer((784, 128, 10), 32, np.float64)       # 401 + 401 kB
    assert not defer((784, 128, 10), 32, min_par=knet.SERIAL_ONLY)   # one thread
    assert not defer((64, 32, 10), 32)                     # first layer too small to share
    assert not defer((784, 128, 512, 10), 32)              # a later layer is threaded too
    # within the bytes, but the forward pass takes the packed panels (not deferred_sweep's tiles)
    assert defer((64, 64, 10), 64) and not defer((64, 64, 10), 128)


def test_no_allocation_per_training_step():
    """Numba runtime allocations during fit do not grow with the number of steps. An epoch
    runs here in one piece: each kernel call makes a few (its per-call scratch), and ``fit``
    makes one call per piece of about ``PIECE_SECONDS``, not per step."""
    script = textwrap.dedent("""
        import numpy as np, fastbp
        import fastbp.training as M
        from numba.core.runtime import rtsys

        class OnePiece(M._Pieces):
            def __init__(self, unit, cap):
                super().__init__(unit, cap)
                self.size = self.cap

            def update(self, n_done, seconds):
                pass

        M._Pieces = OnePiece
        rng = np.random.default_rng(0)
        counts = {}
        for B in (1, 4):
            for N in (64, 512):
                net = fastbp.MLP([20, 16, 3], seed=0)
                X = rng.random((N, 20), dtype=np.float32); y = rng.integers(0, 3, N)
                net.fit(X[:8], y[:8], batch_size=B)
                before = rtsys.get_allocation_stats().alloc
                net.fit(X, y, epochs=2, batch_size=B)
                counts[B, N] = rtsys.get_allocation_stats().alloc - before
        print(counts)
        assert counts[1, 64] == counts[1, 512] and counts[4, 64] == counts[4, 512], counts
    """)
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr


# ---- where the compile cache goes ----------------------------------------------------------------

_FORWARD_SCRIPT = """
import warnings
import numpy as np
import fastbp
X = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
net = fastbp.MLP([3, 5, 2], seed=0)
want = X
for W, b in zip(net.weights, net.biases):
    want = 1 / (1 + np.exp(-(want.astype(np.float64) @ W.T + b)))
assert np.allclose(net.forward(X), want, rtol=1e-5, atol=1e-6)
info = fastbp._info.config_dict()
print("CACHE", info["cache"], len(fastbp._config.UNCACHED), len(fastbp._config.DISPATCHERS))
print("DIR", info["cache_dir"])
"""


def _run_script(script, **env_changes):
    env = dict(os.environ)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_no_writable_cache_folder_warns_and_compiles_in_each_process(tmp_path):
    """Numba refuses ``cache=True`` when neither the package folder nor its per-user folder is
    writable (a read-only install with a read-only home); fastbp must still import and train,
    without a cache, and say so once."""
    refuse = textwrap.dedent("""
        import tempfile
        def refuse(*args, **kwargs):  # numba's writability probe, for every folder
            raise PermissionError(30, "Read-only file system", kwargs.get("dir"))
        tempfile.TemporaryFile = refuse
    """)
    res = _run_script(refuse + _FORWARD_SCRIPT, FASTBP_CACHE="1", NUMBA_CACHE_DIR=None,
                      XDG_CACHE_HOME=str(tmp_path))
    assert res.stderr.count("numba found no writable folder for its compile cache") == 1
    assert "NUMBA_CACHE_DIR" in res.stderr
    cache, uncached, total = res.stdout.split("CACHE ")[1].split()[:3]
    assert cache == "False" and int(uncached) == int(total) > 0
    assert "no writable folder" in res.stdout
    assert not any(p.is_file() for p in tmp_path.rglob("*"))  # (numba's probe makes folders)


def test_cache_off_by_environment_writes_nothing(tmp_path):
    res = _run_script(_FORWARD_SCRIPT, FASTBP_CACHE="0", NUMBA_CACHE_DIR=str(tmp_path / "c"))
    assert "CACHE False 0" in res.stdout and "FASTBP_CACHE=0" in res.stdout
    assert "writable folder" not in res.stderr
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_read_only_package_folder_caches_in_the_user_folder(tmp_path, monkeypatch):
    """With the package folder read-only, numba's per-user cache folder takes fastbp's kernels
    (fastbp relies on numba for this; checked here on fastbp's own functions)."""
    import tempfile
    from numba.core import caching

    package = os.path.dirname(os.path.abspath(fastbp.__file__))
    real = tempfile.TemporaryFile

    def refuse_in_package(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir).startswith(package):
            raise PermissionError(30, "Read-only file system", dir)
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(caching.tempfile, "TemporaryFile", refuse_in_package)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for kernel in (fastbp.kernels.dense_forward, knet.train_epoch):
        path = caching.FunctionCache(kernel.py_func).cache_path
        assert path.startswith(str(tmp_path / "numba")), path
        assert os.path.isdir(path)
