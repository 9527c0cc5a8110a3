"""Robustness of the public API (docs/robustness.md): every bad input raises ValueError or
TypeError naming the argument, what was expected and what came, before any kernel runs;
awkward but valid arrays are converted, never written through; training that diverges keeps
the last finite state; allocations that cannot fit raise MemoryError before allocating."""
import copy
import pickle
import tracemalloc

import numba
import numpy as np
import pytest

import fastbp
from fastbp import _validation as V
from fastbp import optim
from fastbp.kernels import BCE, CROSS_ENTROPY, IDENTITY, MSE, SIGMOID, SOFTMAX, TANH
from fastbp.kernels import checked as C
from fastbp.kernels import network as knet
from fastbp.kernels import train as ktrain


def data(rng, N=12, n=4, m=3, dtype=np.float64):
    X = rng.standard_normal((N, n)).astype(dtype)
    y = np.arange(N) % m
    return X, y


def ce_net(dtype="float64", sizes=(4, 6, 3), seed=0):
    return fastbp.MLP(list(sizes), activation="tanh", loss="cross_entropy", dtype=dtype,
                      seed=seed)


def raises(exc, *words):
    """pytest.raises that also checks the message contains each of ``words``."""
    class _Check:
        def __enter__(self):
            self.ctx = pytest.raises(exc)
            self.info = self.ctx.__enter__()
            return self.info

        def __exit__(self, *args):
            out = self.ctx.__exit__(*args)
            message = str(self.info.value)
            for w in words:
                assert w in message, f"{w!r} not in the message {message!r}"
            return out
    return _Check()


# Every entry point that takes X (and targets): name -> call(net, X, Y).
ENTRY_POINTS = {
    "forward": lambda net, X, Y: net.forward(X),
    "predict": lambda net, X, Y: net.predict(X),
    "predict_proba": lambda net, X, Y: net.predict_proba(X),
    "loss": lambda net, X, Y: net.loss(X, Y),
    "gradients": lambda net, X, Y: net.gradients(X, Y),
    "score": lambda net, X, Y: net.score(X, Y),
    "fit": lambda net, X, Y: net.fit(X, Y, epochs=1, batch_size=4),
    "partial_fit": lambda net, X, Y: net.partial_fit(X, Y, batch_size=4),
}
TARGET_ENTRY_POINTS = ["loss", "gradients", "score", "fit", "partial_fit"]


def assert_untouched(net, before):
    assert np.array_equal(net.params, before)
    assert net.n_epochs_ == 0 and net.optimizer_ is None


# ---- the constructor ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,words", [
    ({"layer_sizes": [4]}, ValueError, ["layer_sizes", "at least 2"]),
    ({"layer_sizes": []}, ValueError, ["layer_sizes"]),
    ({"layer_sizes": 5}, TypeError, ["layer_sizes", "sequence"]),
    ({"layer_sizes": [4, 0, 3]}, ValueError, ["layer_sizes[1]", ">= 1", "0"]),
    ({"layer_sizes": [4, -2, 3]}, ValueError, ["layer_sizes[1]", "-2"]),
    ({"layer_sizes": [4, 2.5, 3]}, TypeError, ["layer_sizes[1]", "integer", "2.5"]),
    ({"layer_sizes": [4, True, 3]}, TypeError, ["layer_sizes[1]", "integer"]),
    ({"layer_sizes": [4, "8", 3]}, TypeError, ["layer_sizes[1]", "'8'"]),
    ({"activation": "softplus"}, ValueError, ["activation", "'sigmoid'", "'tanh'", "'relu'",
                                              "'identity'", "'softplus'"]),
    ({"activation": None}, ValueError, ["activation", "None"]),
    ({"activation": "softmax"}, ValueError, ["activation", "'softmax'"]),
    ({"output_activation": "gelu"}, ValueError, ["output_activation", "'softmax'", "'gelu'"]),
    ({"loss": "hinge"}, ValueError, ["loss", "'mse'", "'bce'", "'cross_entropy'", "'hinge'"]),
    ({"loss": "bce", "output_activation": "tanh"}, ValueError, ["bce", "sigmoid", "tanh"]),
    ({"loss": "mse", "output_activation": "softmax"}, ValueError, ["softmax", "cross_entropy"]),
    ({"layer_sizes": [4, 1], "loss": "cross_entropy"}, ValueError, ["softmax", "2 units"]),
    ({"dtype": "float16"}, TypeError, ["dtype", "'float32' or 'float64'", "float16"]),
    ({"dtype": "int32"}, TypeError, ["dtype", "int32"]),
    ({"dtype": "complex128"}, TypeError, ["dtype", "complex128"]),
    ({"dtype": "nonsense"}, TypeError, ["dtype", "nonsense"]),
    ({"dtype": None}, TypeError, ["dtype", "None"]),
    ({"seed": -1}, ValueError, ["seed", "-1"]),
    ({"seed": 1.5}, TypeError, ["seed", "1.5"]),
    ({"seed": "0"}, TypeError, ["seed"]),
])
def test_constructor_rejects_bad_arguments(kwargs, exc, words):
    kw = {"layer_sizes": [4, 5, 3]}
    kw.update(kwargs)
    with raises(exc, *words):
        fastbp.MLP(**kw)


@pytest.mark.parametrize("dtype", ["float32", np.float64, np.dtype(">f8"), "f4", "double"])
def test_constructor_accepts_dtype_spellings_in_native_order(dtype):
    net = fastbp.MLP([3, 2], dtype=dtype)
    assert net.params.dtype.isnative and net.params.dtype.name in ("float32", "float64")


# ---- X --------------------------------------------------------------------------------------
BAD_X = [
    # (id, X, exception, words in the message)
    ("3-D", np.zeros((2, 3, 4)), ValueError, ["X", "1-D or 2-D", "3-D", "(2, 3, 4)"]),
    ("0-D", np.float64(1.0), ValueError, ["X", "0-D"]),
    ("features", np.zeros((5, 3)), ValueError, ["X", "3 features", "4"]),
    ("features-1d", np.zeros(7), ValueError, ["X", "7 features", "4"]),
    ("empty-rows", np.zeros((0, 4)), ValueError, ["X", "empty", "(0, 4)"]),
    ("empty-1d", np.zeros(0), ValueError, ["X", "empty"]),
    ("complex", np.zeros((5, 4), dtype=complex), TypeError, ["X", "real numbers", "complex"]),
    ("strings", np.full((5, 4), "1.0"), TypeError, ["X", "real numbers", "<U3"]),
    ("objects", np.full((5, 4), None, dtype=object), TypeError, ["X", "object"]),
    ("datetime", np.zeros((5, 4), dtype="datetime64[s]"), TypeError, ["X", "datetime64"]),
    ("none", None, TypeError, ["X", "object"]),
    ("ragged", [[1.0, 2.0, 3.0, 4.0], [1.0]], TypeError, ["X", "array of numbers"]),
    ("nan", np.where(np.eye(5, 4) > 0, np.nan, 0.0), ValueError, ["X", "NaN or infinity",
                                                                  "(0, 0)"]),
    ("inf", np.where(np.eye(5, 4)[::-1] > 0, -np.inf, 0.0), ValueError, ["X", "NaN or infinity",
                                                                        "(1, 3)"]),
    ("masked", np.ma.masked_array(np.zeros((5, 4)), mask=np.eye(5, 4)), ValueError,
     ["X", "masked"]),
]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("bad", BAD_X, ids=[b[0] for b in BAD_X])
def test_bad_X_is_rejected_by_every_entry_point(rng, entry, bad):
    _, X, exc, words = bad
    net = ce_net()
    before = net.params.copy()
    Y = np.arange(5) % 3 if not isinstance(X, np.ndarray) or X.ndim != 2 else \
        np.arange(X.shape[0]) % 3
    with raises(exc, *words):
        ENTRY_POINTS[entry](net, X, Y)
    assert_untouched(net, before)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_values_beyond_float32_range_are_rejected(entry):
    net = ce_net("float32")
    X = np.zeros((5, 4))
    X[2, 1] = 1e300  # finite in float64, infinite once cast to the model's float32
    with raises(ValueError, "X", "1e+300", "(2, 1)", "float32"):
        ENTRY_POINTS[entry](net, X, np.arange(5) % 3)


def test_unused_masked_array_is_accepted(rng):
    X, y = data(rng)
    net = ce_net()
    masked = np.ma.masked_array(X, mask=False)
    assert np.array_equal(net.forward(masked), net.forward(X))


# ---- targets and sample weights -------------------------------------------------------------
BAD_Y = [
    ("labels-count", np.zeros(11, dtype=int), ValueError, ["Y", "11 labels", "12 samples"]),
    ("label-negative", np.r_[np.zeros(11, int), -1], ValueError, ["Y", "labels from -1 to 0",
                                                                   "0..2"]),
    ("label-too-big", np.r_[np.zeros(11, int), 3], ValueError, ["Y", "labels from 0 to 3",
                                                                "3 outputs"]),
    ("label-huge", np.r_[np.zeros(11), 1e300], ValueError, ["Y", "1e+300", "0..2"]),
    ("label-uint64", np.r_[np.zeros(11, np.uint64), np.uint64(2**64 - 1)], ValueError,
     ["Y", str(2**64 - 1)]),
    ("label-fraction", np.r_[np.zeros(11), 0.5], ValueError, ["Y", "integer class labels"]),
    ("label-nan", np.r_[np.zeros(11), np.nan], ValueError, ["Y", "integer class labels"]),
    ("rows", np.zeros((11, 3)), ValueError, ["Y", "11 samples", "12"]),
    ("columns", np.zeros((12, 4)), ValueError, ["Y", "4 columns", "3 outputs"]),
    ("3-D", np.zeros((12, 3, 1)), ValueError, ["Y", "1-D labels or 2-D", "(12, 3, 1)"]),
    ("targets-above-1", np.full((12, 3), 2.0), ValueError, ["cross_entropy", "[0, 1]", "2.0"]),
    ("targets-negative", np.full((12, 3), -0.5), ValueError, ["[0, 1]", "-0.5"]),
    ("targets-nan", np.full((12, 3), np.nan), ValueError, ["Y", "NaN or infinity"]),
    ("complex", np.zeros(12, dtype=complex), TypeError, ["Y", "complex"]),
    ("strings", np.array(["a"] * 12), TypeError, ["Y", "<U1"]),
    ("ragged", [[0, 1, 0]] * 11 + [[1]], TypeError, ["Y", "array of numbers"]),
    ("masked", np.ma.masked_array(np.zeros(12, int), mask=np.eye(1, 12, dtype=bool)[0]),
     ValueError, ["Y", "masked"]),
]


@pytest.mark.parametrize("entry", TARGET_ENTRY_POINTS)
@pytest.mark.parametrize("bad", BAD_Y, ids=[b[0] for b in BAD_Y])
def test_bad_targets_are_rejected(rng, entry, bad):
    _, Y, exc, words = bad
    X, _ = data(rng)
    net = ce_net()
    before = net.params.copy()
    with raises(exc, *words):
        ENTRY_POINTS[entry](net, X, Y)
    assert_untouched(net, before)


def test_regression_targets_beyond_float32_are_rejected(rng):
    X = rng.standard_normal((6, 3))
    net = fastbp.MLP([3, 2], activation="identity", dtype="float32")
    Y = np.zeros((6, 2))
    Y[4, 1] = -1e200
    with raises(ValueError, "Y", "-1e+200", "(4, 1)", "float32"):
        net.fit(X, Y)


def test_bce_single_output_rejects_labels_beyond_one(rng):
    X = rng.standard_normal((6, 3))
    net = fastbp.MLP([3, 4, 1], loss="bce")
    with raises(ValueError, "bce", "[0, 1]", "2"):
        net.fit(X, np.array([0, 1, 2, 0, 1, 0]))


@pytest.mark.parametrize("method", ["fit", "score"])
@pytest.mark.parametrize("sw,exc,words", [
    (np.ones(11), ValueError, ["sample_weight", "11 entries", "12 samples"]),
    (np.ones((12, 1)), ValueError, ["sample_weight", "1-D", "2-D"]),
    (-np.ones(12), ValueError, ["sample_weight", ">= 0", "-1"]),
    (np.zeros(12), ValueError, ["sample_weight", "zero everywhere"]),
    (np.r_[np.ones(11), np.nan], ValueError, ["sample_weight", "NaN or infinity"]),
    (np.r_[np.ones(11), np.inf], ValueError, ["sample_weight", "NaN or infinity"]),
    (np.ones(12, dtype=complex), TypeError, ["sample_weight", "complex"]),
    ("heavy", TypeError, ["sample_weight"]),
])
def test_bad_sample_weights_are_rejected(rng, method, sw, exc, words):
    X, y = data(rng)
    net = ce_net()
    before = net.params.copy()
    with raises(exc, *words):
        getattr(net, method)(X, y, sample_weight=sw)
    assert_untouched(net, before)


# ---- scalar arguments of fit / partial_fit --------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,words", [
    ({"lr": 0}, ValueError, ["lr", "(0.0, inf)", "0"]),
    ({"lr": -0.5}, ValueError, ["lr", "-0.5"]),
    ({"lr": float("nan")}, ValueError, ["lr", "nan"]),
    ({"lr": float("inf")}, ValueError, ["lr", "inf"]),
    ({"lr": 10 ** 400}, ValueError, ["lr"]),
    ({"lr": True}, TypeError, ["lr", "True"]),
    ({"lr": "0.1"}, TypeError, ["lr", "'0.1'"]),
    ({"lr": 1j}, TypeError, ["lr", "complex"]),
    ({"batch_size": 0}, ValueError, ["batch_size", ">= 1", "0"]),
    ({"batch_size": -3}, ValueError, ["batch_size", "-3"]),
    ({"batch_size": 2.0}, TypeError, ["batch_size", "integer", "2.0"]),
    ({"batch_size": True}, TypeError, ["batch_size", "True"]),
    ({"batch_size": None}, TypeError, ["batch_size", "None"]),
    ({"batch_size": float("inf")}, TypeError, ["batch_size", "inf"]),
    ({"epochs": 0}, ValueError, ["epochs", ">= 1", "0"]),
    ({"epochs": -1}, ValueError, ["epochs", "-1"]),
    ({"epochs": 2.5}, TypeError, ["epochs", "2.5"]),
    ({"epochs": float("nan")}, TypeError, ["epochs", "nan"]),
    ({"optimizer": "rmsprop"}, ValueError, ["optimizer", "'sgd'", "'adam'", "'adamw'",
                                            "'rmsprop'"]),
    ({"optimizer": 7}, TypeError, ["optimizer", "int"]),
    ({"optimizer": {"name": "sgd", "momentum": 2.0}}, ValueError, ["momentum", "2.0"]),
    ({"on_divergence": "ignore"}, ValueError, ["on_divergence", "'raise'", "'stop'",
                                               "'ignore'"]),
    ({"on_divergence": None}, ValueError, ["on_divergence", "None"]),
    ({"verbose": 1.5}, TypeError, ["verbose", "1.5"]),
    ({"hogwild": "yes"}, TypeError, ["hogwild", "'yes'"]),
    ({"hogwild": True, "batch_size": 4}, ValueError, ["hogwild", "batch_size=1"]),
])
def test_fit_rejects_bad_scalars(rng, kwargs, exc, words):
    X, y = data(rng)
    net = ce_net()
    before = net.params.copy()
    with raises(exc, *words):
        net.fit(X, y, **kwargs)
    assert_untouched(net, before)


@pytest.mark.parametrize("kwargs,exc,words", [
    ({"lr": 0}, ValueError, ["lr"]),
    ({"lr": float("inf")}, ValueError, ["lr"]),
    ({"batch_size": 0}, ValueError, ["batch_size"]),
    ({"optimizer": "lbfgs"}, ValueError, ["optimizer", "'sgd'"]),
    ({"on_divergence": "warn"}, ValueError, ["on_divergence"]),
    ({"validation_data": (np.zeros((3, 5)), np.zeros(3, int))}, ValueError,
     ["validation_data", "X has 5 features"]),
])
def test_partial_fit_rejects_bad_arguments_and_keeps_the_state(rng, kwargs, exc, words):
    X, y = data(rng)
    net = ce_net()
    net.partial_fit(X, y, optimizer={"name": "sgd", "momentum": 0.5}, lr=0.05, batch_size=4)
    state, params = net.get_training_state(), net.params.copy()
    with raises(exc, *words):
        net.partial_fit(X, y, **kwargs)
    after = net.get_training_state()
    assert np.array_equal(net.params, params)
    assert after["optimizer_config"] == state["optimizer_config"]  # lr unchanged too
    assert after["n_epochs"] == state["n_epochs"] and after["n_steps"] == state["n_steps"]
    assert after["rng_state"] == state["rng_state"]


def test_partial_fit_does_not_change_lr_when_another_argument_is_bad(rng):
    X, y = data(rng)
    net = ce_net()
    net.partial_fit(X, y, lr=0.05)
    with pytest.raises(TypeError, match="validation_data"):
        net.partial_fit(X, y, lr=0.5, validation_data="bad")
    assert net.optimizer_.lr == 0.05


# ---- awkward but valid arrays: converted, never written -------------------------------------
def _layouts(X):
    """Equal-valued variants of X that need converting: name -> array."""
    ro = X.copy()
    ro.setflags(write=False)
    unaligned = _unaligned(X)
    wide = np.zeros((X.shape[0] * 2, X.shape[1] * 3))
    wide[::2, ::3] = X
    return {"fortran": np.asfortranarray(X), "strided": wide[::2, ::3], "readonly": ro,
            "big-endian": X.astype(">f8"), "float16": X.astype(np.float16),
            "longdouble": X.astype(np.longdouble), "unaligned": unaligned,
            "list": X.tolist(), "matrix-view": X.view(np.recarray)}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_awkward_layouts_are_converted_and_never_written(rng, dtype):
    X, y = data(rng)
    X = np.round(X * 4) / 4  # exactly representable in float16
    net = ce_net(dtype)
    ref_out = net.forward(X)
    ref_grads = net.gradients(X, y)
    ref = ce_net(dtype)
    ref.fit(X, y, epochs=2, batch_size=4, lr=0.1)
    for name, Xv in _layouts(X).items():
        keep = np.array(Xv, copy=True)
        assert np.array_equal(net.forward(Xv), ref_out), name
        dW, db = net.gradients(Xv, y)
        assert all(np.array_equal(a, b) for a, b in zip(dW + db, ref_grads[0] + ref_grads[1]))
        other = ce_net(dtype)
        other.fit(Xv, y, epochs=2, batch_size=4, lr=0.1)
        assert np.array_equal(other.params, ref.params), name
        assert np.array_equal(np.asarray(Xv), keep), f"{name} input was written"


def test_integer_and_bool_inputs_are_accepted(rng):
    Xi = rng.integers(-3, 4, size=(12, 4))
    y = np.arange(12) % 3
    net = ce_net()
    for Xv in (Xi, Xi.astype(np.int8), Xi.astype(np.uint16) % 3, Xi > 0):
        assert np.array_equal(net.forward(Xv), net.forward(Xv.astype(np.float64)))
    for yv in (y.astype(np.int8), y.astype(np.uint64), y.astype(np.float32), y.astype(">i8"),
               y.tolist()):
        assert net.loss(Xi, yv) == net.loss(Xi, y)


def test_read_only_inputs_do_not_compile_new_kernel_variants(rng):
    """Read-only arrays are copied: the kernels only ever see writable C-contiguous arrays (a
    read-only array would be another numba type, compiled anew for every kernel)."""
    X, y = data(rng)
    X.setflags(write=False)
    y.setflags(write=False)
    sw = np.ones(12)
    sw.setflags(write=False)
    net = ce_net()
    net.fit(X, y, epochs=1, batch_size=4, sample_weight=sw)
    net.fit(X, y, epochs=1, batch_size=4)
    net.forward(X)
    net.gradients(X, y)
    for kernel in (ktrain.train_segment, knet.train_batches, knet.forward_batch,
                   knet.predict_into):
        assert kernel.signatures, kernel
        for sig in kernel.signatures:
            assert all(not getattr(t, "readonly", False) for t in sig), (kernel, sig)


def test_inputs_are_never_written(rng):
    X, y = data(rng)
    Y = np.eye(3)[y]
    sw = rng.uniform(0.5, 1.5, 12)
    copies = [a.copy() for a in (X, Y, sw)]
    net = ce_net()
    net.fit(X, Y, epochs=2, batch_size=3, sample_weight=sw, optimizer="adam",
            validation_data=(X, Y, sw))
    net.fit(X, Y, epochs=1, batch_size=1)
    net.fit(X, Y, epochs=1, batch_size=5, progress=False, validation_split=0.25)
    net.partial_fit(X, Y, sample_weight=sw)
    net.score(X, Y, sample_weight=sw)
    net.gradients(X, Y)
    for a, b in zip((X, Y, sw), copies):
        assert np.array_equal(a, b)


# ---- labels between partial_fit calls -------------------------------------------------------
def test_a_label_means_the_same_output_in_every_partial_fit_call(rng):
    """There is no label encoding: label k is output unit k, fixed by the network's size, so a
    later call whose labels are a different subset (or a single class) trains the same units
    as one-hot targets would, and labels outside 0..m-1 are rejected without a change."""
    X, _ = data(rng, N=8)
    a, b = ce_net(), ce_net()
    first = np.array([0, 1, 0, 1, 0, 1, 0, 1])       # classes {0, 1}
    later = np.array([2, 2, 2, 2, 2, 2, 2, 2])       # only class 2
    a.partial_fit(X, first, batch_size=4)
    a.partial_fit(X, later, batch_size=4)
    b.partial_fit(X, np.eye(3)[first], batch_size=4)
    b.partial_fit(X, np.eye(3)[later], batch_size=4)
    assert np.array_equal(a.params, b.params)
    state, params = a.get_training_state(), a.params.copy()
    with raises(ValueError, "Y", "labels from 0 to 3", "3 outputs"):
        a.partial_fit(X, np.array([0, 1, 2, 3, 0, 1, 2, 3]))  # a fourth class appears
    with raises(ValueError, "Y", "4 columns", "3 outputs"):
        a.partial_fit(X, np.eye(4)[[0, 1, 2, 3, 0, 1, 2, 3]])
    with raises(ValueError, "X", "5 features", "4"):
        a.partial_fit(np.zeros((8, 5)), first)
    assert np.array_equal(a.params, params)
    assert a.get_training_state()["n_steps"] == state["n_steps"]


# ---- divergence -----------------------------------------------------------------------------
def diverging(rng):
    """A regression whose lr grows 30x per epoch: finite for the first epochs, then not."""
    X = rng.standard_normal((40, 4))
    Y = rng.standard_normal((40, 2))
    return X, Y


DIVERGE_SPECS = [  # the fused plain-SGD path, the general path, Adam
    {"name": "sgd", "lr": 1e-3, "schedule": {"name": "exponential", "gamma": 30.0}},
    {"name": "sgd", "lr": 1e-3, "momentum": 0.5,
     "schedule": {"name": "exponential", "gamma": 30.0}},
    {"name": "adam", "lr": 1e-3, "schedule": {"name": "exponential", "gamma": 1e10}},
]


def _first_diverging_epoch(X, Y, spec, dtype):
    net = fastbp.MLP([4, 8, 2], activation="identity", dtype=dtype)
    hist = net.fit(X, Y, epochs=30, batch_size=5, optimizer=spec, on_divergence="stop")
    return hist.diverged_epoch


@pytest.mark.parametrize("spec", DIVERGE_SPECS, ids=["sgd", "momentum", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_divergence_raises_and_keeps_the_last_finite_state(rng, spec, dtype):
    X, Y = diverging(rng)
    k = _first_diverging_epoch(X, Y, spec, dtype)
    assert k is not None and k > 1
    good = fastbp.MLP([4, 8, 2], activation="identity", dtype=dtype)
    good.fit(X, Y, epochs=k - 1, batch_size=5, optimizer=spec)
    net = fastbp.MLP([4, 8, 2], activation="identity", dtype=dtype)
    with raises(FloatingPointError, "diverged", f"epoch {k}", "on_divergence"):
        net.fit(X, Y, epochs=30, batch_size=5, optimizer=spec)
    assert np.isfinite(net.params).all()
    assert np.array_equal(net.params, good.params)  # the state after epoch k - 1
    assert net.n_epochs_ == k - 1 and len(net.history_) == k - 1
    assert len(net.loss_curve_) == k - 1 and np.isfinite(net.loss_curve_).all()
    s_net, s_good = net.get_training_state(), good.get_training_state()
    assert s_net["n_steps"] == s_good["n_steps"] and s_net["rng_state"] == s_good["rng_state"]
    for key, value in s_good["optimizer_state"].items():
        assert np.array_equal(s_net["optimizer_state"][key], value), key


def test_divergence_stop_is_quiet_and_equal_to_raise(rng):
    X, Y = diverging(rng)
    spec = DIVERGE_SPECS[0]
    a = fastbp.MLP([4, 8, 2], activation="identity")
    b = fastbp.MLP([4, 8, 2], activation="identity")
    hist = a.fit(X, Y, epochs=30, batch_size=5, optimizer=spec, on_divergence="stop")
    with pytest.raises(FloatingPointError):
        b.fit(X, Y, epochs=30, batch_size=5, optimizer=spec)
    assert hist.diverged_epoch == len(hist) + 1
    assert np.array_equal(a.params, b.params) and np.isfinite(a.params).all()
    assert hist.to_dict()["diverged_epoch"] == hist.diverged_epoch


def test_divergence_in_the_first_epoch_restores_the_initial_weights(rng):
    X = rng.standard_normal((50, 4))
    Y = 100 * rng.standard_normal((50, 2))
    for batch_size, opt in ((10, "sgd"), (1, "sgd"), (10, {"name": "sgd", "momentum": 0.9})):
        net = fastbp.MLP([4, 8, 2], activation="identity", dtype="float64")
        initial = net.params.copy()
        with pytest.raises(FloatingPointError, match="diverged in epoch 1"):
            net.fit(X, Y, epochs=5, batch_size=batch_size, lr=10.0, optimizer=opt)
        assert np.array_equal(net.params, initial)
        assert all(np.isfinite(v).all() for v in net.optimizer_.state_arrays().values())


def test_partial_fit_divergence_keeps_the_previous_state(rng):
    X = rng.standard_normal((50, 4))
    Y = 100 * rng.standard_normal((50, 2))
    net = fastbp.MLP([4, 8, 2], activation="identity", dtype="float64")
    net.partial_fit(X, Y, batch_size=10, lr=1e-5)
    params = net.params.copy()
    with pytest.raises(FloatingPointError, match="epoch 2"):
        net.partial_fit(X, Y, batch_size=10, lr=10.0)
    assert np.array_equal(net.params, params) and net.n_epochs_ == 1
    net.partial_fit(X, Y, batch_size=10, lr=10.0, on_divergence="stop")
    assert np.array_equal(net.params, params) and net.history_.diverged_epoch == 2


# ---- memory ---------------------------------------------------------------------------------
def _peak_bytes(call):
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_absurd_layer_sizes_raise_memory_error_before_allocating():
    for sizes in ([10 ** 6, 10 ** 6, 10], [10 ** 10, 10 ** 10, 2], [2 ** 62, 2]):
        def build():
            with raises(MemoryError, f"MLP([{sizes[0]}, ", "parameters", "needs"):
                fastbp.MLP(sizes)
        assert _peak_bytes(build) < 1 << 20


def test_network_larger_than_available_memory(monkeypatch):
    monkeypatch.setattr(V, "available_memory", lambda: 50 << 20)  # 50 MiB
    monkeypatch.setattr(V, "SMALL_BYTES", 1 << 20)
    peak = _peak_bytes(lambda: pytest.raises(MemoryError, fastbp.MLP, [2000, 4000, 10]))
    assert peak < 1 << 20
    with raises(MemoryError, "[2000, 4000, 10]", "8,044,010 float64", "50.0 MiB of memory available"):
        fastbp.MLP([2000, 4000, 10], dtype="float64")
    fastbp.MLP([200, 400, 10])  # small networks are fine


def test_huge_batches_raise_memory_error_before_allocating(monkeypatch):
    net = fastbp.MLP([2, 3000, 10], loss="cross_entropy", dtype="float64")
    X = np.zeros((20000, 2))
    y = np.zeros(20000, dtype=int)
    monkeypatch.setattr(V, "available_memory", lambda: 100 << 20)
    # 2 x 20000 x 3010 float64 = 918 MiB of activations and deltas
    with raises(MemoryError, "gradients", "20,000 samples", "3,010 activations", "available"):
        net.gradients(X, y)
    with raises(MemoryError, "training", "batches of 20,000", "available"):
        net.fit(X, y, batch_size=10 ** 9)  # the batch is the whole set
    net.fit(X[:100], y[:100], batch_size=10 ** 9)  # small enough
    # predictions go in chunks: only the outputs grow with the number of samples
    assert net.forward(X).shape == (20000, 10)


def test_broadcast_input_is_not_copied_when_it_cannot_fit():
    net = fastbp.MLP([2, 3, 2])
    X = np.broadcast_to(np.ones(2), (10 ** 13, 2))  # 10^13 rows, no memory behind them
    peak = _peak_bytes(lambda: pytest.raises(MemoryError, net.forward, X))
    assert peak < 1 << 20
    with raises(MemoryError, "converting X", "(10000000000000, 2)", "needs"):
        net.forward(X)


def test_available_memory_is_a_sane_number():
    avail = V.available_memory()
    assert avail is None or 0 < avail < 1 << 60
    assert V.format_bytes(3 << 30) == "3.0 GiB" and V.format_bytes(512) == "512 bytes"
    V.check_memory(V.SMALL_BYTES, "a small buffer")  # never refused
    with raises(MemoryError, "a big buffer", "beyond fastbp's limit"):
        V.check_memory(V.MAX_BYTES + 1, "a big buffer")


# ---- threads API ----------------------------------------------------------------------------
def test_thread_settings_are_validated_and_restored():
    limit = numba.config.NUMBA_NUM_THREADS
    for bad, exc, words in ((0, ValueError, ["n", ">= 1", "0"]), (-1, ValueError, ["-1"]),
                            (1.0, TypeError, ["n", "integer", "1.0"]),
                            (True, TypeError, ["n", "True"]), ("2", TypeError, ["'2'"]),
                            (limit + 1, ValueError, [f"between 1 and {limit}",
                                                     "NUMBA_NUM_THREADS", str(limit + 1)])):
        with raises(exc, *words):
            fastbp.set_num_threads(bad)
        with raises(exc, *words):
            with fastbp.threads(bad):
                pass
    before = fastbp.get_num_threads()
    previous = fastbp.set_num_threads(1)
    try:
        assert fastbp.get_num_threads() == 1
        with fastbp.threads(limit):
            assert fastbp.get_num_threads() == limit
            with fastbp.threads(1):
                assert fastbp.get_num_threads() == 1
            assert fastbp.get_num_threads() == limit
        with pytest.raises(RuntimeError):
            with fastbp.threads(limit):
                raise RuntimeError("inside")
        assert fastbp.get_num_threads() == 1
    finally:
        assert fastbp.set_num_threads(previous) == 1
    assert fastbp.get_num_threads() == before


def test_entry_points_restore_numba_thread_count(rng):
    X, y = data(rng, N=64, n=64, m=3)
    net = fastbp.MLP([64, 128, 3], loss="cross_entropy")
    numba_before = numba.get_num_threads()
    with fastbp.threads(1):
        net.fit(X, y, batch_size=32)
    net.fit(X, y, batch_size=32)
    with pytest.raises(ValueError):
        net.fit(X, y[:-1])
    assert numba.get_num_threads() == numba_before


# ---- kernels.checked ------------------------------------------------------------------------
def _ok_forward(dt=np.float64):
    return dict(out=np.zeros((3, 2), dt), inp=np.ones((3, 4), dt), weight=np.ones((2, 4), dt),
                bias=np.zeros(2, dt), act=SIGMOID)


def _ok_backward(dt=np.float64):
    return dict(dinp=np.zeros((3, 4), dt), dout=np.ones((3, 2), dt), weight=np.ones((2, 4), dt),
                inp=np.full((3, 4), 0.5, dt), act=TANH)


def _ok_grad(dt=np.float64):
    return dict(dweight=np.zeros((2, 4), dt), dbias=np.zeros(2, dt), dout=np.ones((3, 2), dt),
                inp=np.ones((3, 4), dt), scale=0.5)


def _ok_delta(dt=np.float64):
    return dict(delta=np.zeros((3, 2), dt), out=np.full((3, 2), 0.5, dt),
                target=np.ones((3, 2), dt), loss=MSE, act=SIGMOID)


def _ok_sgd(dt=np.float64):
    return dict(params=np.zeros(5, dt), grads=np.ones(5, dt), lr=0.1)


def _ro(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _unaligned(a):
    raw = np.zeros(a.nbytes + 1, dtype=np.uint8)
    out = raw[1:].view(a.dtype).reshape(a.shape)  # shifted by one byte: misaligned
    out[...] = a
    assert not out.flags.aligned
    return out


def _with(base, **changes):
    kw = base()
    for k, v in changes.items():
        kw[k] = v(kw) if callable(v) and not isinstance(v, type) else v
    return kw


CHECKED_BAD = [
    # (function, kwargs builder, exception, words)
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((3, 5))), ValueError,
     ["weight", "n_in = 5"]),
    (C.dense_forward, lambda: _with(_ok_forward, out=np.zeros((3, 3))), ValueError,
     ["out", "(3, 2)", "(3, 3)"]),
    (C.dense_forward, lambda: _with(_ok_forward, bias=np.zeros((2, 1))), ValueError,
     ["bias", "(2,)"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones(4)), ValueError, ["inp", "2-D"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((3, 4), np.float32)), TypeError,
     ["inp", "float32", "float64"]),
    (C.dense_forward, lambda: _with(_ok_forward, out=np.zeros((3, 2), np.float16)), TypeError,
     ["out", "float16"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((3, 4), int)), TypeError,
     ["inp", "int64"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((3, 4), ">f8")), TypeError,
     ["inp", ">f8"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((4, 3)).T), ValueError,
     ["inp", "C-contiguous"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.ones((3, 8))[:, ::2]), ValueError,
     ["inp", "C-contiguous"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=_unaligned(np.ones((3, 4)))), ValueError,
     ["inp", "aligned"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=[[1.0] * 4] * 3), TypeError,
     ["inp", "numpy array", "list"]),
    (C.dense_forward, lambda: _with(_ok_forward, out=_ro(np.zeros((3, 2)))), ValueError,
     ["out", "read-only"]),
    (C.dense_forward, lambda: _with(_ok_forward, inp=np.full((3, 4), np.nan)), ValueError,
     ["inp", "NaN"]),
    (C.dense_forward, lambda: _with(_ok_forward, bias=np.array([0.0, np.inf])), ValueError,
     ["bias", "NaN or infinity", "(1,)"]),
    (C.dense_forward, lambda: _with(_ok_forward, act=9), ValueError,
     ["act", "0 (identity)", "4 (softmax)", "9"]),
    (C.dense_forward, lambda: _with(_ok_forward, act="sigmoid"), ValueError, ["act"]),
    (C.dense_forward, lambda: _with(_ok_forward, out=np.zeros((3, 0)), weight=np.ones((0, 4)),
                                    bias=np.zeros(0), act=SOFTMAX), ValueError,
     ["softmax", "at least one output unit"]),
    (C.dense_forward, lambda: _with(_ok_forward, act=True), ValueError, ["act"]),
    (C.dense_backward, lambda: _with(_ok_backward, act=SOFTMAX), ValueError,
     ["act", "element-wise"]),
    (C.dense_backward, lambda: _with(_ok_backward, inp=np.ones((2, 4))), ValueError,
     ["inp", "(3, 4)"]),
    (C.dense_backward, lambda: _with(_ok_backward, dinp=np.zeros((3, 5))), ValueError,
     ["dinp", "(3, 4)", "(3, 5)"]),
    (C.dense_backward, lambda: _with(_ok_backward, dout=np.ones((3, 3))), ValueError,
     ["dout", "(3, 2)"]),
    (C.dense_grad, lambda: _with(_ok_grad, dweight=np.zeros((4, 2))), ValueError,
     ["dweight", "(2, 4)", "(4, 2)"]),
    (C.dense_grad, lambda: _with(_ok_grad, dout=np.ones((4, 2))), ValueError, ["dout", "(3, 2)"]),
    (C.dense_grad, lambda: _with(_ok_grad, scale=float("nan")), ValueError, ["scale", "nan"]),
    (C.dense_grad, lambda: _with(_ok_grad, scale=1e300, dweight=np.zeros((2, 4), np.float32),
                                 dbias=np.zeros(2, np.float32),
                                 dout=np.ones((3, 2), np.float32),
                                 inp=np.ones((3, 4), np.float32)), ValueError,
     ["scale", "float32"]),
    (C.dense_grad, lambda: _with(_ok_grad, scale="1"), TypeError, ["scale", "'1'"]),
    (C.dense_grad, lambda: _with(_ok_grad, accumulate="yes"), TypeError, ["accumulate"]),
    (C.dense_grad, lambda: dict(_with(_ok_grad, dweight=np.full((2, 4), np.nan)),
                                accumulate=True), ValueError, ["dweight", "NaN"]),
    (C.output_delta, lambda: _with(_ok_delta, loss=BCE, act=IDENTITY), ValueError,
     ["loss=1 (bce)", "sigmoid", "identity"]),
    (C.output_delta, lambda: _with(_ok_delta, loss=CROSS_ENTROPY, act=SIGMOID), ValueError,
     ["cross_entropy", "softmax"]),
    (C.output_delta, lambda: _with(_ok_delta, loss=MSE, act=SOFTMAX), ValueError,
     ["mse", "element-wise"]),
    (C.output_delta, lambda: _with(_ok_delta, loss=5), ValueError,
     ["loss", "0 (mse)", "2 (cross_entropy)", "5"]),
    (C.output_delta, lambda: _with(_ok_delta, target=np.ones((3, 3))), ValueError,
     ["target", "(3, 2)"]),
    (C.loss_sum, lambda: {"out": np.ones((3, 2)), "target": np.ones((2, 3)), "loss": MSE},
     ValueError, ["target", "(3, 2)"]),
    (C.loss_sum, lambda: {"out": np.ones((3, 2)), "target": np.full((3, 2), np.inf),
                          "loss": MSE}, ValueError, ["target", "NaN or infinity"]),
    (C.loss_sum, lambda: {"out": np.full((3, 2), 0.5), "target": np.full((3, 2), 2.0),
                          "loss": BCE}, ValueError, ["target", "[0, 1]", "bce", "2.0"]),
    (C.output_delta, lambda: _with(_ok_delta, loss=CROSS_ENTROPY, act=SOFTMAX,
                                   target=np.full((3, 2), -0.5)), ValueError,
     ["target", "[0, 1]", "cross_entropy", "-0.5"]),
    (C.sgd_update, lambda: _with(_ok_sgd, grads=np.ones(4)), ValueError, ["grads", "(5,)"]),
    (C.sgd_update, lambda: _with(_ok_sgd, lr=float("inf")), ValueError, ["lr", "inf"]),
    (C.sgd_update, lambda: (lambda p: {"params": p, "grads": p, "lr": 0.1})(np.zeros(5)),
     ValueError, ["params overlaps grads"]),
    (C.sgd_update, lambda: (lambda p: {"params": p[:5], "grads": p[3:], "lr": 0.1})(np.zeros(8)),
     ValueError, ["overlaps"]),
]


def _checked_id(case):
    return case[0].__name__


@pytest.mark.parametrize("case", CHECKED_BAD, ids=[_checked_id(c) for c in CHECKED_BAD])
def test_checked_kernels_reject_bad_arguments(case):
    func, build, exc, words = case
    kwargs = build()
    outputs = {k: v.copy() for k, v in kwargs.items() if isinstance(v, np.ndarray)}
    with raises(exc, *words):
        func(**kwargs)
    for k, v in outputs.items():  # nothing was written before the error
        assert np.array_equal(kwargs[k], v, equal_nan=True), k


def test_checked_overlapping_output_and_input_is_rejected():
    flat = np.zeros(3 * 2 + 3 * 4)
    out, inp = flat[:6].reshape(3, 2), flat[:12].reshape(3, 4)
    with raises(ValueError, "out overlaps inp"):
        C.dense_forward(out, inp, np.ones((2, 4)), np.zeros(2), IDENTITY)
    dW = np.zeros((2, 4))
    with raises(ValueError, "dweight overlaps"):
        C.dense_grad(dW, dW[0, :2], np.ones((3, 2)), np.ones((3, 4)), 1.0)


def test_checked_kernels_compute_the_right_numbers(rng):
    inp = rng.standard_normal((5, 4))
    W = rng.standard_normal((3, 4))
    b = rng.standard_normal(3)
    out = C.dense_forward(np.empty((5, 3)), inp, W, b, TANH)
    assert np.allclose(out, np.tanh(inp @ W.T + b), rtol=1e-12, atol=1e-12)
    ro = _ro(inp)  # read-only inputs are fine (only outputs are written)
    assert np.array_equal(C.dense_forward(np.empty((5, 3)), ro, W, b, TANH), out)
    dout = rng.standard_normal((5, 3))
    dW, db = C.dense_grad(np.empty((3, 4)), np.empty(3), dout, inp, 0.5)
    assert np.allclose(dW, 0.5 * dout.T @ inp) and np.allclose(db, 0.5 * dout.sum(0))
    dinp = C.dense_backward(np.empty((5, 4)), dout, W, np.tanh(inp), TANH)
    assert np.allclose(dinp, (dout @ W) * (1 - np.tanh(inp) ** 2))
    p = np.ones(4)
    C.sgd_update(p, np.full(4, 2.0), 0.25)
    assert np.array_equal(p, np.full(4, 0.5))
    assert C.loss_sum(np.full((2, 2), 0.5), np.zeros((2, 2)), MSE) == 0.5  # 4 x 0.5 x 0.25


# ---- optimizers -----------------------------------------------------------------------------
@pytest.mark.parametrize("call,exc,words", [
    (lambda: optim.SGD(lr=float("inf")), ValueError, ["lr", "inf"]),
    (lambda: optim.SGD(lr=10 ** 400), ValueError, ["lr"]),
    (lambda: optim.SGD(lr=True), TypeError, ["lr", "True"]),
    (lambda: optim.SGD(lr=None), TypeError, ["lr", "None"]),
    (lambda: optim.SGD(momentum=float("nan")), ValueError, ["momentum", "nan"]),
    (lambda: optim.SGD(weight_decay=float("inf")), ValueError, ["weight_decay", "inf"]),
    (lambda: optim.Adam(lr=-1e-3), ValueError, ["lr", "-0.001"]),
    (lambda: optim.Adam(beta1=-0.1), ValueError, ["beta1", "[0.0, 1.0)", "-0.1"]),
    (lambda: optim.Adam(beta2=1), ValueError, ["beta2", "1.0"]),
    (lambda: optim.Adam(eps=float("inf")), ValueError, ["eps", "inf"]),
    (lambda: optim.Adam(eps="1e-8"), TypeError, ["eps", "'1e-8'"]),
    (lambda: optim.AdamW(weight_decay=-0.01), ValueError, ["weight_decay", "-0.01"]),
    (lambda: optim.SGD(schedule="warmup"), ValueError, ["schedule", "'constant'", "'warmup'"]),
    (lambda: optim.ExponentialLR(gamma=float("nan")), ValueError, ["gamma", "nan"]),
    (lambda: optim.StepLR(step_size=2.0), TypeError, ["step_size", "2.0"]),
    (lambda: optim.make_optimizer("Adam"), ValueError, ["optimizer", "'adam'", "'Adam'"]),
    (lambda: optim.make_optimizer({"lr": 0.1}), ValueError, ["optimizer", "None"]),
])
def test_optimizers_reject_bad_hyperparameters(call, exc, words):
    with raises(exc, *words):
        call()


def test_optimizer_step_rejects_foreign_arrays():
    opt = optim.Adam()
    with raises(ValueError, "params", "byte order", ">f8"):
        opt.step(np.zeros(3, ">f8"), np.zeros(3, ">f8"))
    with raises(TypeError, "params", "float32 or float64"):
        opt.step(np.zeros(3, np.float16), np.zeros(3, np.float16))
    with raises(ValueError, "params", "writable"):
        opt.step(_ro(np.zeros(3)), np.zeros(3))
    with raises(TypeError, "params", "1-D"):
        opt.step(np.zeros((3, 1)), np.zeros((3, 1)))
    assert opt.step_count == 0
    p, g = np.zeros(3), _ro(np.ones(3))  # read-only gradients are fine
    opt.step(p, g)
    assert opt.step_count == 1 and np.all(p < 0) and np.array_equal(g, np.ones(3))


# ---- weights assignment ---------------------------------------------------------------------
def test_weight_assignment_is_checked():
    net = ce_net()
    before = net.params.copy()
    with raises(ValueError, "layer 0", "(6, 4)", "(4, 6)"):
        net.weights[0] = np.zeros((4, 6))
    with raises(ValueError, "layer 1", "finite"):
        net.biases[1] = np.array([0, np.nan, 0])
    with raises(TypeError, "layer 0", "complex"):
        net.weights[0] = np.zeros((6, 4), complex)
    with raises(TypeError, "one layer at a time"):
        net.weights[0:1] = [np.zeros((6, 4))]
    with raises(TypeError, "one layer at a time"):
        net.weights[True] = np.zeros((3, 6))
    assert np.array_equal(net.params, before)


def test_a_rate_that_is_zero_in_the_dtype_is_rejected(rng):
    X, y = data(rng)
    net = ce_net("float32")
    before = net.params.copy()
    for call in (lambda: net.fit(X, y, lr=1e-320), lambda: net.partial_fit(X, y, lr=1e-46),
                 lambda: net.fit(X, y, optimizer={"name": "adam", "lr": 1e-50})):
        with raises(ValueError, "is 0 in float32", "1.4e-45"):
            call()
    assert np.array_equal(net.params, before) and net.n_epochs_ == 0
    ce_net("float64").fit(X, y, lr=1e-320, epochs=1)  # not 0 in float64


def test_weight_lists_keep_one_view_per_layer():
    """After a ``del net.weights[0]``, ``net.weights[0] = W`` would have written layer 1."""
    net = ce_net()
    before = net.params.copy()
    for change in (lambda w: w.append(np.zeros(3)), lambda w: w.__delitem__(0),
                   lambda w: w.pop(), lambda w: w.clear(), lambda w: w.reverse(),
                   lambda w: w.insert(0, w[1]), lambda w: w.extend(w)):
        for views in (net.weights, net.biases):
            with raises(TypeError, "one array per layer"):
                change(views)
            assert len(views) == 2
    with raises(TypeError, "one array per layer"):
        net.weights += [np.zeros(3)]
    assert [W.shape for W in net.weights] == [(6, 4), (3, 6)]
    assert np.array_equal(net.params, before)
    # a copy of the list is a plain list: deepcopy snapshots the weights
    snapshot = copy.deepcopy(net.weights)
    assert type(snapshot) is list and not np.shares_memory(snapshot[0], net.params)
    assert all(np.array_equal(a, b) for a, b in zip(snapshot, net.weights))
    assert [W.shape for W in pickle.loads(pickle.dumps(net.biases))] == [(6,), (3,)]


def test_predict_proba_needs_a_classifier(rng):
    net = fastbp.MLP([4, 3, 2], loss="mse")
    with raises(ValueError, "predict_proba", "classification", "'mse'"):
        net.predict_proba(rng.standard_normal((3, 4)))


def test_fit_rejected_by_its_late_checks_changes_nothing(rng, monkeypatch):
    """Checks that need the whole setup (validation data for EarlyStopping, the training
    memory, the sample weights left after validation_split) still run before any state
    changes: the generator, the optimizer and the history stay as they were."""
    X, y = data(rng, N=10)
    net = ce_net()
    net.partial_fit(X, y, optimizer="adam", lr=0.01)

    def snapshot():
        return (net.params.copy(), net.rng_state, net.optimizer_, net.history_,
                net.optimizer_.state_arrays(), net.optimizer_.lr)

    def same(a, b):
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
        assert a[2] is b[2] and a[3] is b[3] and a[5] == b[5]
        assert all(np.array_equal(a[4][k], b[4][k]) for k in a[4])

    before = snapshot()
    with raises(ValueError, "EarlyStopping(monitor='val_loss')", "validation data"):
        net.fit(X, y, early_stopping=fastbp.callbacks.EarlyStopping(monitor="val_loss"))
    with raises(ValueError, "EarlyStopping(monitor='val_loss')"):
        net.partial_fit(X, y, lr=0.5, callbacks=[
            fastbp.callbacks.EarlyStopping(monitor="val_loss")])
    same(before, snapshot())
    # the one training sample left by validation_split=0.9 gets weight zero
    probe = np.random.default_rng()
    probe.bit_generator.state = net.rng_state
    left = probe.permutation(10)[9]
    sw = np.ones(10)
    sw[left] = 0
    with raises(ValueError, "sample_weight is zero", "validation_split"):
        net.fit(X, y, validation_split=0.9, sample_weight=sw)
    same(before, snapshot())
    monkeypatch.setattr(V, "SMALL_BYTES", 0)
    monkeypatch.setattr(V, "available_memory", lambda: 1000)
    with raises(MemoryError, "training", "5 samples"):  # the other 5 validate
        net.fit(X, y, validation_split=0.5)
    with raises(MemoryError, "training"):
        net.partial_fit(X, y, lr=0.5)
    monkeypatch.undo()
    same(before, snapshot())


# ---- the architecture is read-only ---------------------------------------------------------------
ARCHITECTURE = [("layer_sizes", [1, 6, 3]), ("activation", "relu"),
                ("output_activation", "sigmoid"), ("loss_name", "mse"),
                ("dtype", np.dtype("float32")), ("seed", 5)]


@pytest.mark.parametrize("name,value", ARCHITECTURE, ids=[a[0] for a in ARCHITECTURE])
def test_architecture_attributes_are_read_only(rng, name, value):
    """The layout and the parameter buffer are built from these once: assigning one would
    leave the kernels on the old layout (out-of-bounds reads) and make save write a file that
    load rejects or rebuilds as another network."""
    net = ce_net()
    X, y = data(rng)
    config, out = net.get_config(), net.forward(X)
    with raises(AttributeError, f"MLP.{name}", "read-only", "get_config"):
        setattr(net, name, value)
    with raises(AttributeError, f"MLP.{name}", "read-only"):
        delattr(net, name)
    assert net.get_config() == config and np.array_equal(net.forward(X), out)


def test_layer_sizes_cannot_be_changed_in_place(rng):
    net = ce_net(sizes=(4, 6, 3))
    sizes = net.layer_sizes
    sizes[0] = 1  # a copy: the network keeps its input layer
    net.layer_sizes[0] = 1
    assert net.layer_sizes == [4, 6, 3] and net.get_config()["layer_sizes"] == [4, 6, 3]
    with raises(ValueError, "X has 1 features", "4"):  # no forward pass over a wrong layout
        net.forward(np.ones((1, 1)))
    assert net.forward(np.ones((2, 4))).shape == (2, 3)
    assert repr(net).startswith("MLP([4, 6, 3], ")


# ---- non-finite parameters written through the views ---------------------------------------------
NONFINITE = [("weights", 0, (2, 1), np.nan, "net.weights[0]", "(2, 1)"),
             ("biases", 1, (2,), -np.inf, "net.biases[1]", "(2,)"),
             ("weights", 1, (0, 5), np.inf, "net.weights[1]", "(0, 5)")]
CHECKED_CALLS = {name: call for name, call in ENTRY_POINTS.items() if name != "forward"}


@pytest.mark.parametrize("part,l,index,value,where,at", NONFINITE,
                         ids=["weights-nan", "biases-inf", "weights-inf"])
def test_nonfinite_parameters_written_through_views_are_caught(rng, part, l, index, value,
                                                                where, at):
    """A write through a view is not checked, but every call that trains or measures checks
    the parameters first and names the layer: no silent labels of 0, no FloatingPointError
    blaming training for weights it never had. forward does not check (docs/robustness.md)."""
    X, y = data(rng)
    net = ce_net()
    getattr(net, part)[l][index] = value
    before = net.params.copy()
    for name, call in CHECKED_CALLS.items():
        with raises(ValueError, f"MLP.{name}", f"the {part} of layer {l}", where, at, "NaN"):
            call(net, X, y)
    np.testing.assert_array_equal(net.params, before)
    assert net.n_epochs_ == 0 and net.optimizer_ is None and net.history_ is None
    # forward, the raw pass, does not check: NaN outputs here, finite ones for an infinite
    # bias of the softmax layer (scikit-learn's wrapper scores a diverged epoch from them)
    assert net.forward(X).shape == (X.shape[0], 3)
    getattr(net, part)[l][index] = 0.5  # repaired: every call works again
    net.fit(X, y, epochs=1, batch_size=4)
    assert net.n_epochs_ == 1 and np.isfinite(net.params).all()


# ---- set_training_state and rng_state: checked whole, then assigned ------------------------------
def test_set_training_state_is_atomic_and_names_the_field(rng):
    X, y = data(rng)
    trained_net = ce_net()
    trained_net.fit(X, y, epochs=2, batch_size=4, optimizer="adam")
    good = trained_net.get_training_state()
    net = ce_net(seed=1)
    net.partial_fit(X, y, batch_size=4, optimizer={"name": "sgd", "momentum": 0.5})

    def state():
        s = net.get_training_state()
        return (s["n_epochs"], s["n_steps"], s["rng_state"], s["loss_curve"],
                s["optimizer_config"], s["history"], net.optimizer_, net.history_,
                {k: v.copy() for k, v in s["optimizer_state"].items()})

    before = state()
    m = good["optimizer_state"]["m"]
    cases = [
        (dict(good, loss_curve=["x"]), TypeError, ["loss_curve[0]", "real number", "'x'"]),
        (dict(good, loss_curve=5), TypeError, ["loss_curve", "list", "int"]),
        (dict(good, history={"epoch": 3}), ValueError, ["history lacks", "'loss'"]),
        (dict(good, history=dict(good["history"], epoch=3)), TypeError,
         ["history['epoch']", "list", "int"]),
        (dict(good, history=dict(good["history"], loss=[0.5, "x"])), TypeError,
         ["history['loss'][1]", "'x'"]),
        (dict(good, history=dict(good["history"], best_epoch=1.5)), TypeError,
         ["history['best_epoch']", "1.5"]),
        (dict(good, rng_state={"bit_generator": "PCG64", "state": 5}), TypeError,
         ["rng_state", "PCG64"]),
        (dict(good, rng_state={"bit_generator": "PCG64", "state": {"state": "x", "inc": 1}}),
         TypeError, ["rng_state", "PCG64"]),
        (dict(good, optimizer_state={**good["optimizer_state"], "m": m[:7]}), ValueError,
         ["optimizer_state", "'m'", "7 entries"]),
        (dict(good, optimizer_state={**good["optimizer_state"], "v": -np.ones_like(m)}),
         ValueError, ["optimizer_state", "'v'", ">= 0"]),
        (dict(good, optimizer_config={"name": "adamax"}), ValueError,
         ["optimizer_config", "adamax"]),
        (dict(good, n_epochs=-1), ValueError, ["n_epochs", ">= 0"]),
    ]
    for bad, exc, words in cases:
        with raises(exc, *words):
            net.set_training_state(bad)
        after = state()
        assert after[:5] == before[:5] and after[6] is before[6] and after[7] is before[7]
        assert all(np.array_equal(after[8][k], v) for k, v in before[8].items())
    with raises(TypeError, "rng_state", "PCG64", "not subscriptable"):
        net.rng_state = {"bit_generator": "PCG64", "state": 5}
    assert net.rng_state == before[2]
    net.set_training_state(good)  # a valid state is taken whole
    assert net.get_training_state()["rng_state"] == good["rng_state"]
    assert net.n_epochs_ == 2 and net.optimizer_.get_config() == good["optimizer_config"]


# ---- callbacks are checked before the first epoch ------------------------------------------------
class _BadHook(fastbp.callbacks.Callback):
    def on_epoch_end(self, epoch):
        return False


@pytest.mark.parametrize("callbacks,words", [
    ([lambda epoch: None], ["callbacks[0]", "(epoch, history, model)", "(epoch)"]),
    ([lambda e, h, m: None, lambda e, h, m, extra: None], ["callbacks[1]", "extra"]),
    ([_BadHook()], ["callbacks[0].on_epoch_end", "(epoch, history, model)"]),
])
def test_callbacks_with_a_wrong_signature_are_rejected_before_training(rng, callbacks, words):
    X, y = data(rng)
    net = ce_net()
    before = net.params.copy()
    for train_call in (lambda: net.fit(X, y, callbacks=callbacks),
                       lambda: net.partial_fit(X, y, callbacks=callbacks)):
        with raises(TypeError, *words):
            train_call()
        assert_untouched(net, before)
    # signatures that accept the three arguments pass
    net.fit(X, y, callbacks=[lambda *a: None, lambda e, h, m, extra=1: None])
