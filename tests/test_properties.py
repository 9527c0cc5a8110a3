"""Property-based tests (hypothesis): random shapes, dtypes, layouts and values thrown at the
public API. Only the documented exceptions may come out (ValueError, TypeError, MemoryError,
and FloatingPointError for diverging training), never one of numba's, and where an oracle can
tell, a call succeeds exactly when its arguments are valid, with finite results of the right
shape and dtype. Example counts are bounded so that the suite stays fast in CI."""
import math
import os

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastbp
from fastbp import optim
from fastbp.kernels import checked as C

DOCUMENTED = (ValueError, TypeError, MemoryError)
# Bounded example counts for CI; FASTBP_HYPOTHESIS_SCALE=20 (say) searches harder locally.
SCALE = float(os.environ.get("FASTBP_HYPOTHESIS_SCALE", "1"))
SOME = settings(max_examples=max(1, int(80 * SCALE)), deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def documented(exc, allowed=DOCUMENTED):
    """The exception is one fastbp documents, not one escaping from numba or numpy."""
    assert isinstance(exc, allowed), f"undocumented {type(exc).__name__}: {exc}"
    assert not type(exc).__module__.startswith("numba"), repr(exc)
    assert str(exc), "an error without a message"


# ---- strategies -----------------------------------------------------------------------------
ARRAY_DTYPES = [np.bool_, np.int8, np.uint16, np.int64, np.float16, np.float32, np.float64,
                np.float64, np.float64, np.longdouble, np.complex128, np.dtype(">f8"),
                np.dtype("U2"), object]
SPECIAL = [math.nan, math.inf, -math.inf, 1e300, -1e39, 3.5e38, 0.0, -0.0, 1e-320]


@st.composite
def arrays(draw, max_dims=3, max_side=5, n_cols=None):
    """An array of a random dtype, shape, layout (C, Fortran, strided, read-only) and values
    (moderate, special, or beyond float32's range). With ``n_cols``, usually 2-D with that
    many columns, so that valid inputs are common."""
    dtype = np.dtype(draw(st.sampled_from(ARRAY_DTYPES)))
    if n_cols is not None and draw(st.integers(0, 2)):
        shape = (draw(st.integers(0, max_side)), n_cols)
    else:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0,
                                      max_side=max_side))
    if dtype.kind in "fc":
        base = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1e3, 1e3)))
        if base.size and not draw(st.integers(0, 2)):  # one special value somewhere
            base.reshape(-1)[draw(st.integers(0, base.size - 1))] = draw(st.sampled_from(SPECIAL))
        with np.errstate(over="ignore", invalid="ignore"):
            arr = base.astype(dtype)
    elif dtype.kind in "biu":
        arr = draw(hnp.arrays(dtype, shape))
    elif dtype.kind == "U":
        arr = np.full(shape, "1", dtype=dtype)
    else:
        arr = np.empty(shape, dtype=object)
        arr[...] = 1.0
    layout = draw(st.sampled_from(["c", "fortran", "strided", "readonly", "list"]))
    if layout == "fortran":
        arr = np.asfortranarray(arr)
    elif layout == "strided" and arr.ndim >= 1:
        wide = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), dtype=arr.dtype)
        wide[..., ::2] = arr
        arr = wide[..., ::2]
    elif layout == "readonly":
        arr = arr.copy()
        arr.setflags(write=False)
    elif layout == "list" and dtype.kind in "biuf" and dtype.isnative and arr.ndim >= 1:
        return arr.tolist()
    return arr


def castable_finite(arr, dtype):
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.asarray(arr).astype(dtype)).all())


def x_is_valid(X, n_features, dtype):
    a = np.asarray(X)
    return (a.dtype.kind in "biuf" and a.ndim in (1, 2) and a.size > 0
            and a.shape[-1] == n_features and castable_finite(a, dtype))


NETS = st.fixed_dictionaries({
    "activation": st.sampled_from(["sigmoid", "tanh", "relu", "identity"]),
    "loss": st.sampled_from(["mse", "bce", "cross_entropy"]),
    "dtype": st.sampled_from(["float32", "float64"]),
    "hidden": st.integers(1, 6),
})


def make_net(spec, n_in=3, n_out=2):
    return fastbp.MLP([n_in, spec["hidden"], n_out], activation=spec["activation"],
                      loss=spec["loss"], dtype=spec["dtype"], seed=0)


# ---- the constructor ------------------------------------------------------------------------
SIZE_ITEMS = st.one_of(st.integers(-2, 9), st.integers(10 ** 14, 10 ** 30), st.booleans(),
                       st.floats(-2, 9), st.just("4"), st.none())


@SOME
@given(sizes=st.one_of(st.lists(SIZE_ITEMS, max_size=5), st.integers(-1, 5), st.none()),
       activation=st.sampled_from(["sigmoid", "tanh", "relu", "identity", "softmax", "elu",
                                   None, 3]),
       output_activation=st.sampled_from([None, "softmax", "sigmoid", "identity", "swish"]),
       loss=st.sampled_from(["mse", "bce", "cross_entropy", "hinge", None]),
       dtype=st.sampled_from(["float32", "float64", np.float32, "float16", "int32", None, "?"]),
       seed=st.one_of(st.none(), st.integers(-3, 2 ** 70), st.floats(0, 3)))
def test_constructor_either_builds_a_sane_network_or_says_why(sizes, activation,
                                                              output_activation, loss, dtype,
                                                              seed):
    try:
        net = fastbp.MLP(sizes, activation=activation, output_activation=output_activation,
                         loss=loss, dtype=dtype, seed=seed)
    except Exception as exc:
        documented(exc)
        return
    n = sum(a * b + b for a, b in zip(net.layer_sizes[:-1], net.layer_sizes[1:]))
    assert net.params.shape == (n,) and net.params.dtype.name in ("float32", "float64")
    assert np.isfinite(net.params).all()
    out = net.forward(np.zeros(net.layer_sizes[0]))
    assert out.shape == (net.layer_sizes[-1],) and np.isfinite(out).all()


# ---- inputs of the inference entry points ---------------------------------------------------
@SOME
@given(spec=NETS, X=arrays(n_cols=3))
def test_forward_and_predict_accept_exactly_the_valid_inputs(spec, X):
    net = make_net(spec)
    before = np.array(X, dtype=object, copy=True) if isinstance(X, list) else np.copy(X)
    valid = x_is_valid(X, 3, net.dtype)
    event("valid input" if valid else "invalid input")
    try:
        out = net.forward(X)
        labels = net.predict(X)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        assert not valid, f"a valid input was rejected: {exc}"
        kind = np.asarray(X).dtype.kind
        assert isinstance(exc, TypeError) == (kind not in "biuf"), exc
        return
    assert valid, "an invalid input was accepted"
    rows = np.asarray(X).shape[0] if np.asarray(X).ndim == 2 else None
    assert out.shape == ((rows, 2) if rows is not None else (2,))
    assert out.dtype == net.dtype and np.isfinite(out).all()
    assert np.asarray(labels).ndim <= out.ndim
    if not isinstance(X, list):
        assert np.array_equal(X, before, equal_nan=True) if X.dtype.kind in "fc" else \
            np.array_equal(X, before)


# ---- targets --------------------------------------------------------------------------------
@st.composite
def targets(draw, n, m):
    """Labels or target rows for ``n`` samples and ``m`` outputs: mostly of the right size,
    mostly in range, sometimes not."""
    rows = n if draw(st.integers(0, 4)) else draw(st.integers(0, 6))
    form = draw(st.sampled_from(["int-labels", "float-labels", "rows"]))
    if form == "int-labels":
        return draw(hnp.arrays(np.int64, rows, elements=st.integers(
            0 if draw(st.booleans()) else -1, m - 1 if draw(st.booleans()) else m)))
    if form == "float-labels":
        Y = draw(hnp.arrays(np.float64, rows, elements=st.integers(0, m - 1).map(float)))
        cols = None
    else:
        cols = m if draw(st.integers(0, 4)) else draw(st.integers(1, 4))
        Y = draw(hnp.arrays(np.float64, (rows, cols), elements=st.floats(0, 1)))
    if Y.size and not draw(st.integers(0, 2)):  # one odd value somewhere
        Y.reshape(-1)[draw(st.integers(0, Y.size - 1))] = draw(st.sampled_from(
            [math.nan, math.inf, 1e300, -0.5, 1.5, 0.5, 2.0]))
    return Y


def targets_valid(Y, n, m, classifier, dtype):
    Y = np.asarray(Y)
    if Y.ndim == 1 and m > 1:
        return (Y.shape[0] == n and bool(np.isfinite(Y).all()) and bool(np.all(Y == np.round(Y)))
                and (Y.size == 0 or (Y.min() >= 0 and Y.max() < m)))
    if Y.ndim == 1:
        Y = Y.reshape(-1, 1)
    if Y.ndim != 2 or Y.shape != (n, m) or not castable_finite(Y, dtype):
        return False
    return not classifier or bool((Y >= 0).all() and (Y <= 1).all())


@SOME
@given(spec=NETS, N=st.integers(1, 6), data=st.data())
def test_loss_and_gradients_accept_exactly_the_valid_targets(spec, N, data):
    if spec["loss"] == "cross_entropy":
        m = 3
    else:
        m = data.draw(st.sampled_from([1, 3]))
    Y = data.draw(targets(N, m))
    net = make_net(spec, n_out=m)
    X = np.linspace(-1, 1, N * 3).reshape(N, 3)
    valid = targets_valid(Y, N, m, net.is_classifier, net.dtype)
    event("valid targets" if valid else "invalid targets")
    try:
        loss = net.loss(X, Y)
        dW, db = net.gradients(X, Y)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        assert not valid, f"valid targets were rejected: {exc}"
        return
    assert valid, "invalid targets were accepted"
    assert isinstance(loss, float) and loss >= 0
    moderate = np.abs(np.asarray(Y, dtype=np.float64)).max() < 1e100  # else (a - y)^2 overflows
    assert math.isfinite(loss) or not moderate
    for g, w in zip(dW + db, net.weights + net.biases):
        assert g.shape == w.shape and g.dtype == net.dtype
        assert np.isfinite(g).all() or not moderate


# ---- training arguments ---------------------------------------------------------------------
def mostly(valid, invalid):
    """Mostly valid values, so that whole valid calls are common (hypothesis favours the
    simplest branch of a one_of; an arbitrary middle value picks the invalid one here)."""
    return st.integers(0, 7).flatmap(lambda k: invalid if k == 3 else valid)


LR = mostly(st.one_of(st.none(), st.floats(1e-4, 2.0)),
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 3),
                      st.just(10 ** 400), st.booleans(), st.just("0.1")))
BATCH = mostly(st.one_of(st.integers(1, 12), st.just(10 ** 20)),
               st.one_of(st.integers(-1, 0), st.floats(0, 4), st.none(), st.booleans()))
EPOCHS = mostly(st.integers(1, 3), st.one_of(st.integers(-1, 0), st.floats(0, 3),
                                             st.booleans()))
OPTIMIZERS = mostly(st.sampled_from(["sgd", "adam", "adamw", None,
                                     {"name": "sgd", "momentum": 0.9},
                                     {"name": "adam", "beta1": 0.5, "weight_decay": 0.01}]),
                    st.sampled_from(["rmsprop", {"name": "sgd", "momentum": 1.5}, 3]))
WEIGHTS = mostly(st.one_of(st.none(), st.just("ones")),
                 hnp.arrays(np.float64, st.integers(0, 9),
                            elements=st.one_of(st.floats(0, 3),
                                               st.sampled_from([-1.0, math.nan]))))
DIVERGENCE = mostly(st.sampled_from(["raise", "stop"]), st.sampled_from(["ignore", None]))


@SOME
@given(spec=NETS, N=st.integers(1, 9), lr=LR, batch_size=BATCH, epochs=EPOCHS,
       optimizer=OPTIMIZERS, sample_weight=WEIGHTS, partial=st.booleans(),
       on_divergence=DIVERGENCE, seed=st.integers(0, 3))
def test_training_arguments_only_raise_documented_errors(spec, N, lr, batch_size, epochs,
                                                          optimizer, sample_weight, partial,
                                                          on_divergence, seed):
    net = make_net(spec, n_out=3)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 3)) * 3
    y = rng.integers(0, 3, N)
    Y = np.eye(3)[y] if spec["loss"] != "mse" else rng.standard_normal((N, 3))
    if isinstance(sample_weight, str):
        sample_weight = rng.uniform(0.5, 2, N)
    before = net.params.copy()
    try:
        if partial:
            net.partial_fit(X, Y, batch_size=batch_size, lr=lr, optimizer=optimizer,
                            sample_weight=sample_weight, on_divergence=on_divergence)
        else:
            net.fit(X, Y, epochs=epochs, batch_size=batch_size, lr=lr,
                    optimizer="sgd" if optimizer is None else optimizer,
                    sample_weight=sample_weight, on_divergence=on_divergence)
    except FloatingPointError as exc:
        assert on_divergence == "raise" and "diverged" in str(exc)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        assert np.array_equal(net.params, before), "a rejected call changed the weights"
        assert net.n_epochs_ == 0
        return
    assert np.isfinite(net.params).all(), "training left non-finite weights"
    assert all(math.isfinite(v) for v in net.loss_curve_)
    event("trained")


# ---- optimizers -----------------------------------------------------------------------------
REALS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 2),
                  st.just(10 ** 400), st.booleans(), st.none(), st.just("0.5"))


@SOME
@given(cls=st.sampled_from([optim.SGD, optim.Adam, optim.AdamW]), lr=REALS, a=REALS, b=REALS,
       weight_decay=REALS)
def test_optimizer_hyperparameters_are_checked(cls, lr, a, b, weight_decay):
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    kwargs.update({"momentum": a} if cls is optim.SGD else {"beta1": a, "beta2": b})
    try:
        opt = cls(**kwargs)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        return
    config = opt.get_config()
    assert all(math.isfinite(v) for v in config.values()
               if isinstance(v, float)), config
    assert opt.lr > 0 and opt.weight_decay >= 0
    p = np.ones(4)
    opt.step(p, np.full(4, 0.5))  # huge but valid settings may overflow: the user's arithmetic
    assert opt.step_count == 1


# ---- kernels.checked ------------------------------------------------------------------------
def _perturb(draw, shape):
    """A shape off by one in one dimension, or with a different number of dimensions."""
    how = draw(st.sampled_from(["bigger", "smaller", "flat", "extra"]))
    if not shape:
        return tuple(shape)
    if how in ("bigger", "smaller"):
        k = draw(st.integers(0, len(shape) - 1))
        s = list(shape)
        s[k] = max(0, s[k] + (1 if how == "bigger" else -1))
        return tuple(s)
    if how == "flat":
        return (int(np.prod(shape)),)
    return tuple(shape) + (1,)


DEFECTS = ["shape", "dtype", "transposed", "overlap", "act"]


@st.composite
def forward_args(draw):
    """Arguments of dense_forward: consistent ones, or with defects of random kinds (which a
    draw may also happen to make harmless: the oracle decides)."""
    B, n_in, n_out = (draw(st.integers(0, 4)) for _ in range(3))
    dtype = np.dtype(draw(st.sampled_from(["float32", "float64"])))
    shapes = {"out": (B, n_out), "inp": (B, n_in), "weight": (n_out, n_in), "bias": (n_out,)}
    defects = draw(st.lists(st.sampled_from(DEFECTS), max_size=2))
    args = {}
    for name, shape in shapes.items():
        dt, s = dtype, shape
        if "dtype" in defects and draw(st.booleans()):
            dt = np.dtype(draw(st.sampled_from(["float32", "float64", "float16", "int64",
                                                ">f8"])))
        if "shape" in defects and draw(st.booleans()):
            s = _perturb(draw, shape)
        a = np.linspace(-1, 1, int(np.prod(s))).astype(dt).reshape(s)
        if "transposed" in defects and a.ndim == 2 and draw(st.booleans()):
            a = np.ascontiguousarray(a.T).T  # the same shape, Fortran order
        args[name] = a
    if "overlap" in defects:
        args["out"] = args["inp"]
    args["act"] = draw(st.sampled_from([-1, 5, "tanh", 2.0, True]) if "act" in defects
                       else st.integers(0, 4))
    return args


def forward_valid(args):
    out, inp, w, b, act = (args[k] for k in ("out", "inp", "weight", "bias", "act"))
    arrays_ = (out, inp, w, b)
    if not all(a.dtype in (np.float32, np.float64) and a.dtype == inp.dtype
               and a.flags.c_contiguous for a in arrays_):
        return False
    if inp.ndim != 2 or w.ndim != 2 or w.shape[1] != inp.shape[1]:
        return False
    if b.shape != (w.shape[0],) or out.shape != (inp.shape[0], w.shape[0]):
        return False
    if any(np.shares_memory(out, a) for a in (inp, w, b)):
        return False
    if not (isinstance(act, int) and not isinstance(act, bool) and 0 <= act <= 4):
        return False
    return act != 4 or w.shape[0] > 0  # softmax over no units is refused


@SOME
@given(args=forward_args())
def test_checked_dense_forward_accepts_exactly_the_valid_calls(args):
    valid = forward_valid(args)
    event("valid call" if valid else "invalid call")
    try:
        out = C.dense_forward(**args)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        assert not valid, f"a valid call was rejected: {exc}"
        return
    assert valid, "an invalid call was accepted"
    z = args["inp"].astype(np.float64) @ args["weight"].astype(np.float64).T + args["bias"]
    act = args["act"]
    if act == 1:
        ref = 1 / (1 + np.exp(-z))
    elif act == 2:
        ref = np.tanh(z)
    elif act == 3:
        ref = np.maximum(z, 0)
    elif act == 4:
        e = np.exp(z - z.max(axis=1, keepdims=True)) if z.size else z
        ref = e / e.sum(axis=1, keepdims=True) if z.size else z
    else:
        ref = z
    tol = 1e-5 if out.dtype == np.float32 else 1e-12
    assert np.allclose(out, ref, rtol=tol, atol=tol)


@SOME
@given(B=st.integers(0, 4), n_in=st.integers(1, 4), n_out=st.integers(1, 4),
       dtype=st.sampled_from(["float32", "float64"]), scale=REALS, accumulate=REALS,
       seed=st.integers(0, 3))
def test_checked_dense_grad_scalars(B, n_in, n_out, dtype, scale, accumulate, seed):
    rng = np.random.default_rng(seed)
    dW, db = np.zeros((n_out, n_in), dtype), np.zeros(n_out, dtype)
    dout = rng.standard_normal((B, n_out)).astype(dtype)
    inp = rng.standard_normal((B, n_in)).astype(dtype)
    try:
        C.dense_grad(dW, db, dout, inp, scale, accumulate)
    except Exception as exc:
        documented(exc, (ValueError, TypeError))
        ok_scale = (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                    and castable_finite(np.array(float(scale) if abs(scale) < 1e308 else
                                                 math.inf), dtype))
        assert not (ok_scale and isinstance(accumulate, bool)), exc
        return
    ref = float(scale) * dout.T.astype(np.float64) @ inp
    assert np.allclose(dW, ref, rtol=1e-4, atol=1e-4 * max(1.0, abs(float(scale))))
