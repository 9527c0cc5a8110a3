"""fastbp.sklearn: scikit-learn's own estimator checks, and the estimators side by side with
scikit-learn's (same random_state: same initial weights, batches, updates, so the same loss
curves and weights to rounding), their errors and warnings, sparse input, L-BFGS, threadpoolctl
and joblib."""
import contextlib
import io
import pickle
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import scipy.sparse as sp  # noqa: E402
import sklearn.neural_network as skn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def expected_failures(estimator):
    # scikit-learn's own MLPClassifier(solver="lbfgs") fails it too: L-BFGS drives some
    # logistic outputs to exactly 1.0
    if estimator.solver == "lbfgs" and isinstance(estimator, MLPClassifier):
        return {"check_classifiers_multilabel_output_format_predict_proba":
                "saturated probabilities, as sklearn.neural_network.MLPClassifier's"}
    return {}


@quiet
@parametrize_with_checks([MLPClassifier(), MLPRegressor(), MLPClassifier(solver="lbfgs"),
                          MLPRegressor(solver="sgd")],
                         expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(rng, N=90, n=4, k=3, spread=0.6):
    centers = 2.0 * rng.standard_normal((k, n))
    y = rng.integers(0, k, N)
    X = centers[y] + spread * rng.standard_normal((N, n))
    return X, y


def fit_both(cls, X, y, sample_weight=None, **params):
    """Fit fastbp's estimator and scikit-learn's with the same parameters; the warnings and
    the printed lines of each come back too."""
    ours_cls = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[cls]
    out = []
    for est in (ours_cls(**params), getattr(skn, cls)(**params)):
        buf = io.StringIO()
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buf):
            warnings.simplefilter("always")
            est.fit(X, y, sample_weight=sample_weight)
        out.append((est, [(w.category, str(w.message)) for w in caught], buf.getvalue()))
    return out


def assert_same_fit(ours, theirs, rtol=1e-7, atol=1e-9):
    """Same fitted attributes, weights and records, to rounding."""
    for name in ("n_iter_", "t_", "n_layers_", "n_outputs_", "out_activation_",
                 "n_features_in_"):
        assert getattr(ours, name) == getattr(theirs, name), name
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol, atol=atol)
    for name in ("loss_curve_", "validation_scores_"):
        if hasattr(theirs, name) and getattr(theirs, name) is not None:
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=rtol,
                                       atol=atol, err_msg=name)
    for name in ("best_loss_", "best_validation_score_"):
        if hasattr(theirs, name):
            a, b = getattr(ours, name), getattr(theirs, name)
            assert (a is None) == (b is None), name
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * 10)


def test_import_fastbp_does_not_import_sklearn():
    code = ("import sys, fastbp; assert 'sklearn' not in sys.modules, 'imported'; "
            "assert 'threadpoolctl' not in sys.modules; "
            "fastbp.sklearn.MLPClassifier; assert 'sklearn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_same_parameters_and_defaults_as_sklearn():
    for ours, theirs in ((MLPClassifier(), skn.MLPClassifier()),
                         (MLPRegressor(), skn.MLPRegressor())):
        extras = {"weight_decay": 0.0, "schedule": None, "dtype": None}
        assert ours.get_params() == {**theirs.get_params(), **extras}
    # the regressor's first positional parameter is loss, as in scikit-learn
    assert MLPRegressor("poisson").loss == "poisson"


# ---- training side by side with scikit-learn ---------------------------------------------------
@pytest.mark.parametrize("solver,extra", [
    ("adam", {}),
    ("adam", {"alpha": 0.5, "beta_1": 0.8, "epsilon": 1e-3}),
    ("sgd", {}),
    ("sgd", {"nesterovs_momentum": False, "alpha": 0.1}),
    ("sgd", {"momentum": 0.0, "alpha": 0.0}),
    ("sgd", {"learning_rate": "invscaling", "power_t": 0.3}),
    ("sgd", {"learning_rate": "adaptive", "tol": 0.05, "n_iter_no_change": 1}),
    ("adam", {"shuffle": False, "batch_size": 16}),
], ids=["adam", "adam-alpha-eps", "sgd-nesterov", "sgd-momentum", "sgd-plain",
        "sgd-invscaling", "sgd-adaptive", "adam-unshuffled"])
@pytest.mark.parametrize("k", [2, 3], ids=["binary", "multiclass"])
def test_classifier_trains_as_sklearn(rng, solver, extra, k):
    X, y = blobs(rng, N=70, k=k, spread=1.5)
    params = dict(hidden_layer_sizes=(6, 5), activation="tanh", solver=solver, batch_size=20,
                  learning_rate_init=0.05, max_iter=15, random_state=7)
    params.update(extra)
    (ours, w_ours, out_ours), (theirs, w_theirs, out_theirs) = fit_both(
        "MLPClassifier", X, y, **params)
    assert_same_fit(ours, theirs)
    assert w_ours == w_theirs and out_ours == out_theirs
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-7,
                               atol=1e-10)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_adaptive_learning_rate_divides_by_five_as_sklearn(rng):
    X, y = blobs(rng, N=60, k=2, spread=3.0)
    params = dict(hidden_layer_sizes=(4,), solver="sgd", learning_rate="adaptive",
                  learning_rate_init=0.5, tol=10.0, n_iter_no_change=1, max_iter=40,
                  random_state=0, verbose=True)
    (ours, _, out_ours), (theirs, _, out_theirs) = fit_both("MLPClassifier", X, y, **params)
    assert "Setting learning rate to 0.020000" in out_theirs
    assert "Learning rate too small. Stopping." in out_theirs
    assert out_ours == out_theirs
    assert_same_fit(ours, theirs)
    assert ours._optimizer.learning_rate == theirs._optimizer.learning_rate


@pytest.mark.parametrize("kind", ["multilabel", "regression", "multi-output", "poisson"])
def test_other_targets_train_as_sklearn(rng, kind):
    X = rng.standard_normal((60, 5))
    cls = "MLPRegressor"
    params = dict(hidden_layer_sizes=(8,), activation="relu", batch_size=16,
                  learning_rate_init=0.01, max_iter=12, random_state=3, alpha=0.01)
    if kind == "multilabel":
        cls = "MLPClassifier"
        y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5], axis=1).astype(int)
    elif kind == "regression":
        y = np.sin(X[:, 0]) + X[:, 1]
    elif kind == "multi-output":
        y = np.stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2], -X[:, 3]], axis=1)
    else:
        y = rng.poisson(np.exp(0.5 * X[:, 0]))
        params["loss"] = "poisson"
    (ours, w_ours, _), (theirs, w_theirs, _) = fit_both(cls, X, y, **params)
    assert_same_fit(ours, theirs)
    assert w_ours == w_theirs
    np.testing.assert_allclose(ours.predict(X), theirs.predict(X), rtol=1e-7, atol=1e-10)
    if kind == "multilabel":
        np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-7)


@quiet
@pytest.mark.parametrize("cls", ["MLPClassifier", "MLPRegressor"])
def test_sample_weight_as_sklearn(rng, cls):
    X, y = blobs(rng, N=50, k=2, spread=2.0)
    w = rng.uniform(0, 3, 50)
    params = dict(hidden_layer_sizes=(5,), solver="sgd", batch_size=12, max_iter=8, alpha=0.3,
                  learning_rate_init=0.05, random_state=1)
    (ours, *_), (theirs, *_) = fit_both(cls, X, y, sample_weight=w, **params)
    assert_same_fit(ours, theirs)
    # all ones is the unweighted fit
    a = MLPClassifier(**params).fit(X, y, sample_weight=np.ones(50)) if cls[3] == "C" else None
    if a is not None:
        b = MLPClassifier(**params).fit(X, y)
        np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], rtol=1e-12)


@pytest.mark.parametrize("cls,k", [("MLPClassifier", 2), ("MLPClassifier", 3),
                                   ("MLPRegressor", 1)])
def test_early_stopping_as_sklearn(rng, cls, k):
    X, y = blobs(rng, N=120, k=max(k, 2), spread=1.5)
    if cls == "MLPRegressor":
        y = X[:, 0] - 2 * X[:, 1] + 0.3 * rng.standard_normal(120)
    params = dict(hidden_layer_sizes=(10,), early_stopping=True, validation_fraction=0.25,
                  n_iter_no_change=3, max_iter=200, learning_rate_init=0.05, random_state=0,
                  verbose=True)
    (ours, w_ours, out_ours), (theirs, w_theirs, out_theirs) = fit_both(cls, X, y, **params)
    assert ours.n_iter_ < 200 and ours.best_loss_ is None
    assert_same_fit(ours, theirs)
    assert w_ours == w_theirs and out_ours == out_theirs
    # the best epoch's weights are kept
    assert int(np.argmax(ours.validation_scores_)) < ours.n_iter_ - 1


def test_float32_trains_as_sklearn(rng):
    X, y = blobs(rng, N=60)
    X = X.astype(np.float32)
    (ours, *_), (theirs, *_) = fit_both("MLPClassifier", X, y, hidden_layer_sizes=(8,),
                                        max_iter=5, random_state=0, batch_size=20)
    assert ours.coefs_[0].dtype == theirs.coefs_[0].dtype == np.float32
    assert_same_fit(ours, theirs, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("cls", ["MLPClassifier", "MLPRegressor"])
@pytest.mark.parametrize("sparse", ["csr", "csc"])
def test_sparse_input_as_dense(rng, cls, sparse):
    X = rng.standard_normal((50, 12)) * (rng.uniform(size=(50, 12)) < 0.3)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) if cls == "MLPClassifier" else X[:, 0] - X[:, 2]
    Xs = sp.csr_matrix(X) if sparse == "csr" else sp.csc_matrix(X)
    est = {"MLPClassifier": MLPClassifier, "MLPRegressor": MLPRegressor}[cls]
    for solver in ("adam", "lbfgs"):
        params = dict(hidden_layer_sizes=(6,), max_iter=10, random_state=0, solver=solver,
                      batch_size=16)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            dense = est(**params).fit(X, y)
            sparse_fit = est(**params).fit(Xs, y)
            theirs = getattr(skn, cls)(**params).fit(Xs, y)
        for a, b in zip(dense.coefs_, sparse_fit.coefs_):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(sparse_fit.predict(Xs), dense.predict(X), rtol=1e-10)
        assert_same_fit(sparse_fit, theirs, rtol=1e-6, atol=1e-8)


def test_partial_fit_as_sklearn(rng):
    X, y = blobs(rng)
    params = dict(hidden_layer_sizes=(8,), solver="sgd", batch_size=16, random_state=5,
                  learning_rate_init=0.01)
    ours, theirs = MLPClassifier(**params), skn.MLPClassifier(**params)
    for est in (ours, theirs):
        with pytest.raises(ValueError, match="classes must be passed on the first call"):
            clone(est).partial_fit(X, y)
        est.partial_fit(X[:40], y[:40], classes=[0, 1, 2])
        for _ in range(3):
            est.partial_fit(X, y)
    assert_same_fit(ours, theirs)
    for est in (ours, theirs):
        with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
            est.partial_fit(X, np.where(y == 0, 9, y))
        with pytest.raises(ValueError, match="is not the same as on last call"):
            est.partial_fit(X, y, classes=[0, 1])
        with pytest.raises(ValueError, match="features"):
            est.partial_fit(X[:, :3], y)
    reg = MLPRegressor(**params)
    reg.partial_fit(X, X[:, 0])
    with pytest.raises(ValueError, match="does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X, X[:, 0])


def test_partial_fit_only_for_stochastic_solvers():
    for cls in (MLPClassifier, MLPRegressor):
        assert hasattr(cls(solver="adam"), "partial_fit")
        assert not hasattr(cls(solver="lbfgs"), "partial_fit")
        with pytest.raises(AttributeError, match="has no attribute 'partial_fit'"):
            cls(solver="lbfgs").partial_fit


@quiet
def test_warm_start_as_sklearn(rng):
    X, y = blobs(rng)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, tol=0.0, random_state=2,
                  warm_start=True)
    ours, theirs = MLPClassifier(**params), skn.MLPClassifier(**params)
    for est in (ours, theirs):
        est.fit(X, y)
        est.fit(X, y)
    assert_same_fit(ours, theirs)
    assert ours.n_iter_ == 3 and len(ours.loss_curve_) == 6
    for est in (ours, theirs):
        with pytest.raises(ValueError, match="warm_start can only be used where `y` has the "
                                             "same classes"):
            est.fit(X, np.where(y == 2, 7, y))


def test_one_class_as_sklearn(rng):
    X = rng.standard_normal((10, 3))
    (ours, *_), (theirs, *_) = fit_both("MLPClassifier", X, np.full(10, "a"), max_iter=5,
                                        random_state=0)
    assert_same_fit(ours, theirs)
    assert list(ours.predict(X)) == list(theirs.predict(X)) == ["a"] * 10


# ---- L-BFGS ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ["MLPClassifier", "MLPRegressor"])
def test_lbfgs_reaches_sklearns_optimum(rng, cls):
    X = rng.standard_normal((60, 4))
    y = np.sin(X[:, 0]) + X[:, 1] * X[:, 2]
    if cls == "MLPClassifier":
        y = np.digitize(y, [-0.5, 0.5])
    w = rng.uniform(0.5, 2, 60)
    # alpha=1: a well-conditioned minimum (with flat valleys, rounding differences between
    # the two implementations take L-BFGS to different points of the valley after ~100 steps)
    params = dict(hidden_layer_sizes=(5,), activation="tanh", solver="lbfgs", alpha=1.0,
                  max_iter=2000, tol=1e-10, random_state=0)
    (ours, w_ours, _), (theirs, w_theirs, _) = fit_both(cls, X, y, sample_weight=w, **params)
    assert w_ours == w_theirs == []  # both converged
    assert ours.n_iter_ < 2000
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-6)
    out = ours.predict_proba(X) if cls == "MLPClassifier" else ours.predict(X)
    ref = theirs.predict_proba(X) if cls == "MLPClassifier" else theirs.predict(X)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    for name in ("loss_curve_", "best_loss_", "validation_scores_"):
        assert not hasattr(ours, name) and not hasattr(theirs, name)


def test_lbfgs_early_iterations_match_and_warn_as_sklearn(rng):
    X, y = blobs(rng, N=60, k=3, spread=1.0)
    for limits in ({"max_iter": 5}, {"max_fun": 4}):
        params = dict(hidden_layer_sizes=(5,), solver="lbfgs", random_state=0, **limits)
        (ours, w_ours, _), (theirs, w_theirs, _) = fit_both("MLPClassifier", X, y, **params)
        assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_ == 0
        np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-9)
        assert_same_fit(ours, theirs, rtol=1e-7, atol=1e-9)
        assert w_ours == w_theirs and w_ours[0][0] is ConvergenceWarning


def test_lbfgs_chunks_give_the_one_pass_result(rng, monkeypatch):
    from fastbp import _sklearn_solvers
    X, y = blobs(rng, N=50)
    params = dict(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        one = MLPClassifier(**params).fit(X, y, sample_weight=np.arange(50) % 3)
        monkeypatch.setattr(_sklearn_solvers, "LBFGS_CHUNK_VALUES", 7 * 17)  # 17-row chunks
        chunked = MLPClassifier(**params).fit(X, y, sample_weight=np.arange(50) % 3)
    np.testing.assert_allclose(chunked.loss_, one.loss_, rtol=1e-9)
    np.testing.assert_allclose(chunked.coefs_[0], one.coefs_[0], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_lbfgs_chunk_of_zero_weight(rng, monkeypatch, loss):
    """A chunk whose weights sum to zero (the first half of the data unweighted here) counts
    for nothing, as in scikit-learn's one pass, and divides nothing."""
    from fastbp import _sklearn_solvers
    X = rng.standard_normal((60, 3))
    y = np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])
    w = np.r_[np.zeros(30), np.ones(30)]
    params = dict(loss=loss, hidden_layer_sizes=(5,), solver="lbfgs", max_iter=15,
                  random_state=0)
    monkeypatch.setattr(_sklearn_solvers, "LBFGS_CHUNK_VALUES", 8 * 20)  # 20-row chunks
    (ours, _, _), (theirs, _, _) = fit_both("MLPRegressor", X, y, sample_weight=w, **params)
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-7)
    np.testing.assert_allclose(ours.coefs_[0], theirs.coefs_[0], rtol=1e-6, atol=1e-9)


def test_batch_of_zero_weight_raises_as_sklearn(rng):
    X, y = blobs(rng, N=30)
    w = np.r_[np.zeros(15), np.ones(15)]  # the first batch weighs nothing
    for mod in (skn, fastbp.sklearn):
        with pytest.raises(ZeroDivisionError, match="^Weights sum to zero, can't be normalized$"):
            mod.MLPClassifier((4,), batch_size=15, shuffle=False, max_iter=2).fit(
                X, y, sample_weight=w)


def test_diverging_poisson_fit_raises_as_sklearn(rng):
    """Outputs far below the targets' log: the delta exp(z) - y is about -y, orders of magnitude
    below z, and must not be lost in rounding (the weights would freeze, the fit seem to end)."""
    X = rng.standard_normal((80, 4))
    y = np.exp((X[:, 0] - X[:, 2]) / 2)
    for mod in (skn, fastbp.sklearn):
        est = mod.MLPRegressor(hidden_layer_sizes=(6,), max_iter=20, random_state=0,
                               loss="poisson", solver="sgd")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
                est.fit(X * 100, y)
        # both warn that max_iter was reached before they raise (and scikit-learn overflows)
        assert [w.category for w in caught if w.category is not RuntimeWarning] == [
            ConvergenceWarning], (mod.__name__, [str(w.message) for w in caught])


# ---- parameters, errors, warnings --------------------------------------------------------------
@pytest.mark.parametrize("params", [
    dict(alpha=-1.0), dict(activation="swish"), dict(solver="newton"),
    dict(hidden_layer_sizes=0), dict(batch_size=0), dict(batch_size="big"), dict(max_iter=0),
    dict(learning_rate="cyclic"), dict(learning_rate_init=0.0), dict(power_t=-1),
    dict(momentum=1.5), dict(validation_fraction=1.0), dict(beta_1=1.0), dict(epsilon=0),
    dict(n_iter_no_change=0), dict(n_iter_no_change=2.5), dict(max_fun=0), dict(tol=-1),
    dict(shuffle="yes"), dict(random_state="seed"), dict(verbose=-1),
])
def test_invalid_params_raise_as_sklearn(rng, params):
    X, y = blobs(rng, N=20)
    errors = []
    for est in (MLPClassifier(**params), skn.MLPClassifier(**params)):  # never in __init__
        with pytest.raises((ValueError, TypeError)) as info:
            est.fit(X, y)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_hidden_layer_sizes_error_as_sklearn(rng):
    X, y = blobs(rng, N=20)
    for est in (MLPClassifier(hidden_layer_sizes=(10, 0)),
                skn.MLPClassifier(hidden_layer_sizes=(10, 0))):
        with pytest.raises(ValueError, match=re.escape("hidden_layer_sizes must be > 0, got "
                                                       "[10, 0].")):
            est.fit(X, y)


@pytest.mark.parametrize("sizes", [(3.5,), (2.0,), (4, True), np.array([3.0])])
def test_hidden_layer_sizes_of_non_integers_raise_as_sklearn(rng, sizes):
    X, y = blobs(rng, N=20)
    for mod in (skn, fastbp.sklearn):
        with pytest.raises(TypeError):
            mod.MLPClassifier(hidden_layer_sizes=sizes, max_iter=2).fit(X, y)


@quiet
def test_activation_changed_after_fit_as_sklearn(rng):
    """scikit-learn reads ``activation`` at every prediction and fit: set_params after fitting
    changes the predictions, and a warm start trains with the new one."""
    X, y = blobs(rng)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, random_state=2, warm_start=True)
    ours, theirs = MLPClassifier(**params).fit(X, y), skn.MLPClassifier(**params).fit(X, y)
    for est in (ours, theirs):
        est.set_params(activation="logistic")
    fitted = ours.net_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-7)
    assert ours.net_ is fitted  # a prediction changes nothing
    for est in (ours, theirs):
        est.set_params(activation="tanh").fit(X, y)
    assert_same_fit(ours, theirs)


@quiet
def test_warm_start_with_other_hidden_layers_raises(rng):
    """scikit-learn trains the fitted layers (same depth) or fails deep inside (another
    depth); fastbp says why (docs/sklearn.md, the differences)."""
    X, y = blobs(rng)
    for est in (MLPClassifier((5,), max_iter=2, warm_start=True),
                MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, solver="sgd")):
        est.fit(X, y) if est.warm_start else est.partial_fit(X, y)
        for sizes in ((6,), (5, 5)):
            est.set_params(hidden_layer_sizes=sizes)
            with pytest.raises(ValueError, match=re.escape(
                    f"hidden_layer_sizes={sizes!r} differs from the fitted network's (5,)")):
                est.fit(X, y) if est.warm_start else est.partial_fit(X, y)


@quiet
def test_predict_and_regression_targets_take_numbers_only(rng):
    X, y = blobs(rng, N=20)
    for mod in (skn, fastbp.sklearn):
        clf = mod.MLPClassifier((4,), max_iter=2).fit(X, y)
        with pytest.raises(ValueError, match="dtype='numeric' is not compatible with arrays of "
                                             "bytes/strings"):
            clf.predict(X.astype(str))
        with pytest.raises(TypeError):
            mod.MLPRegressor((4,), max_iter=2).fit(X, y.astype(str))


@pytest.mark.parametrize("params,match", [
    (dict(dtype="float16"), "dtype"),
    (dict(weight_decay=-1.0), "weight_decay"),
    (dict(schedule="bogus"), "schedule"),
    (dict(schedule="plateau", solver="sgd", learning_rate="adaptive"), "schedule"),
])
def test_invalid_extras_raise_at_fit(rng, params, match):
    X, y = blobs(rng, N=20)
    with pytest.raises((ValueError, TypeError), match=match):
        MLPClassifier(**params).fit(X, y)


def test_n_iter_no_change_inf_runs_max_iter(rng):
    X, y = blobs(rng, N=40)
    (ours, w_ours, _), (theirs, w_theirs, _) = fit_both(
        "MLPClassifier", X, y, hidden_layer_sizes=(4,), n_iter_no_change=np.inf, tol=10.0,
        max_iter=7, random_state=0)
    assert ours.n_iter_ == theirs.n_iter_ == 7
    assert w_ours == w_theirs == [(ConvergenceWarning, "Stochastic Optimizer: Maximum "
                                   "iterations (7) reached and the optimization hasn't "
                                   "converged yet.")]


def test_batch_size_larger_than_data_warns_as_sklearn(rng):
    X, y = blobs(rng, N=30)
    (ours, w_ours, _), (theirs, w_theirs, _) = fit_both(
        "MLPClassifier", X, y, batch_size=50, max_iter=3, random_state=0)
    assert w_ours == w_theirs and any("clipped" in m for _, m in w_ours)
    assert_same_fit(ours, theirs)


@pytest.mark.parametrize("solver", ["sgd", "adam", "lbfgs"])
def test_warning_filters_for_sklearn_apply(rng, solver):
    """A filter written for scikit-learn's warnings (by module, as in its own examples) silences
    fastbp's too; without it they are shown, from fastbp's file."""
    X, y = blobs(rng, N=30)
    for mod in (skn, fastbp.sklearn):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")
            warnings.filterwarnings("ignore", message="Got `batch_size`", module="sklearn")
            mod.MLPClassifier((4,), solver=solver, batch_size=50, max_iter=1).fit(X, y)
        assert seen == []
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            mod.MLPClassifier((4,), solver=solver, batch_size=50, max_iter=1).fit(X, y)
        assert ConvergenceWarning in [w.category for w in seen]
        assert (solver == "lbfgs") != any("clipped" in str(w.message) for w in seen)
    assert {w.filename for w in seen} == {fastbp._sklearn_solvers.__file__}


def test_column_vector_y_warns_as_sklearn(rng):
    from sklearn.exceptions import DataConversionWarning
    X, y = blobs(rng, N=30)
    (_, w_ours, _), (_, w_theirs, _) = fit_both("MLPRegressor", X, y.reshape(-1, 1) * 1.0,
                                                max_iter=2, random_state=0)
    assert w_ours == w_theirs and w_ours[0][0] is DataConversionWarning


def test_not_fitted():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        MLPRegressor().coefs_
    assert not hasattr(MLPRegressor(), "coefs_")


@quiet
@pytest.mark.parametrize("dtype,X_dtype,expected", [(None, np.float32, np.float32),
                                                    (None, np.float64, np.float64),
                                                    (None, np.int64, np.float64),
                                                    ("float32", np.float64, np.float32),
                                                    ("float64", np.float32, np.float64)])
def test_dtype(rng, dtype, X_dtype, expected):
    X, y = blobs(rng)
    X = (X * 10).astype(X_dtype)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=5, dtype=dtype, random_state=0)
    clf.fit(X, y)
    assert clf.net_.dtype == np.dtype(expected) == clf.coefs_[0].dtype
    assert clf.predict_proba(X).dtype == np.dtype(expected)
    reg = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, dtype=dtype, random_state=0)
    assert reg.fit(X, y.astype(float)).predict(X).dtype == np.dtype(expected)


@quiet
def test_extras_weight_decay_and_schedule(rng):
    X, y = blobs(rng)
    base = dict(hidden_layer_sizes=(8,), max_iter=10, random_state=0, alpha=0.0)
    plain = MLPClassifier(**base).fit(X, y)
    decayed = MLPClassifier(weight_decay=0.1, **base).fit(X, y)
    assert np.abs(decayed.coefs_[0]).sum() < np.abs(plain.coefs_[0]).sum()
    # a constant schedule is the plain run; a step schedule changes it
    const = MLPClassifier(schedule="constant", **base).fit(X, y)
    np.testing.assert_array_equal(const.coefs_[0], plain.coefs_[0])
    step = MLPClassifier(schedule={"name": "step", "step_size": 2, "gamma": 0.1}, **base)
    assert not np.allclose(step.fit(X, y).coefs_[0], plain.coefs_[0])


@quiet
def test_coefs_are_views_and_assignable(rng):
    X, y = blobs(rng)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=3, random_state=0).fit(X, y)
    coefs = [c * 0 for c in clf.coefs_]
    clf.coefs_ = coefs
    clf.intercepts_ = [b * 0 for b in clf.intercepts_]
    np.testing.assert_allclose(clf.predict_proba(X), 1 / 3)
    clf.coefs_[1][0, 0] = 1.0  # a view: the network sees it
    assert clf.net_.weights[1][0, 0] == 1.0
    clf.coefs_[0] = np.ones((4, 6))  # as scikit-learn's list item: the model changes
    clf.intercepts_[1] = np.full(3, 0.5)
    np.testing.assert_array_equal(clf.net_.weights[0], 1.0)
    np.testing.assert_array_equal(clf.net_.biases[1], 0.5)
    before = clf.net_.params.copy()
    with pytest.raises(ValueError, match=re.escape("coefs_ must be 2 arrays of shapes "
                                                   "[(4, 6), (6, 3)]")):
        clf.coefs_ = [np.zeros((4, 6))]  # a layer short: nothing is written
    with pytest.raises(ValueError, match="layer 1 expects an array of shape"):
        clf.coefs_[1] = np.zeros((3, 6))
    np.testing.assert_array_equal(clf.net_.params, before)


# ---- classifier and regressor behaviour ----------------------------------------------------------
@pytest.mark.parametrize("labels", [np.array([-5, 2, 7]), np.array(["cat", "dog", "emu"]),
                                    np.array([-1.0, 2.0, 4.0]), np.array(["no", "yes"]),
                                    np.array([3, 1])],
                         ids=["ints", "strings", "floats", "binary-strings", "binary-ints"])
def test_classifier_arbitrary_labels(rng, labels):
    X, idx = blobs(rng, k=len(labels))
    y = labels[idx]
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=150, random_state=0,
                        learning_rate_init=0.02).fit(X, y)
    np.testing.assert_array_equal(clf.classes_, np.unique(labels))
    pred = clf.predict(X)
    assert pred.dtype == y.dtype and set(pred) <= set(labels)
    assert clf.score(X, y) > 0.9
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), len(labels))
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    np.testing.assert_array_equal(clf.classes_[np.argmax(proba, axis=1)], pred)
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))
    assert clf.n_outputs_ == (1 if len(labels) == 2 else len(labels))
    assert clf.out_activation_ == ("logistic" if len(labels) == 2 else "softmax")


@quiet
def test_regressor_fits(rng):
    X = rng.uniform(-1, 1, (150, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", learning_rate_init=0.01,
                       batch_size=16, max_iter=400, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (150,) and reg.score(X, y) > 0.9
    Y = np.stack([y, -y, X[:, 0]], axis=1)
    reg2 = clone(reg).fit(X, Y)
    assert reg2.predict(X).shape == (150, 3) and reg2.score(X, Y) > 0.9
    with pytest.raises(ValueError, match="outputs"):
        reg2.partial_fit(X, y)


def test_verbose_lines_as_sklearn(rng):
    X, y = blobs(rng, N=40)
    (_, _, out_ours), (_, _, out_theirs) = fit_both(
        "MLPClassifier", X, y, hidden_layer_sizes=(4,), max_iter=30, tol=0.1,
        n_iter_no_change=2, random_state=0, verbose=True)
    assert out_ours.startswith("Iteration 1, loss = ")
    assert out_ours.splitlines()[-1].endswith("Stopping.")
    assert out_ours == out_theirs


# ---- scikit-learn machinery, threads and processes -----------------------------------------------
@quiet
def test_pipeline_grid_search_over_alpha_in_parallel(rng):
    X, y = blobs(rng, N=120)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=60, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-2],
                               "mlpclassifier__learning_rate_init": [0.01, 0.05]}, cv=3,
                        n_jobs=2)
    grid.fit(X, y)
    serial = clone(grid).set_params(n_jobs=1).fit(X, y)
    np.testing.assert_allclose(grid.cv_results_["mean_test_score"],
                               serial.cv_results_["mean_test_score"])
    assert grid.best_score_ > 0.8
    scores = cross_val_score(MLPRegressor(hidden_layer_sizes=(8,), max_iter=50,
                                          learning_rate_init=0.02, random_state=0),
                             X, X[:, 0] - X[:, 1], cv=3)
    assert scores.shape == (3,) and (scores > 0.5).all()


def test_threadpool_limits_apply_to_fastbp():
    from threadpoolctl import threadpool_info, threadpool_limits
    infos = [i for i in threadpool_info() if i["user_api"] == "fastbp"]
    assert len(infos) == 1 and infos[0]["num_threads"] == fastbp.get_num_threads()
    before = fastbp.get_num_threads()
    with threadpool_limits(1):
        assert fastbp.get_num_threads() == 1
    with threadpool_limits({"fastbp": 1}):
        assert fastbp.get_num_threads() == 1
    assert fastbp.get_num_threads() == before
    assert fastbp.set_num_threads(None) is None  # the limit left no setting behind


def test_joblib_inner_max_num_threads_reaches_fastbp():
    from joblib import Parallel, delayed, parallel_config

    def threads_in_worker():
        import fastbp
        import fastbp.sklearn  # noqa: F401
        return fastbp.get_num_threads()

    with parallel_config(backend="loky", inner_max_num_threads=1):
        counts = Parallel(n_jobs=2)(delayed(threads_in_worker)() for _ in range(2))
    assert counts == [1, 1]


@quiet
def test_pickle_clone_and_save(rng, tmp_path):
    X, y = blobs(rng)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=10, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    back.partial_fit(X, y)  # the optimizer state came along
    fresh = clone(clf)
    assert not hasattr(fresh, "net_") and fresh.get_params() == clf.get_params()
    clf.net_.save(tmp_path / "net.npz")
    net = fastbp.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(net.predict_proba(X), clf.predict_proba(X))


def test_training_compiles_nothing_once_cached(rng):
    """The estimators run kernels only through the signatures of fastbp's cached kernel sets:
    a fresh process that fits and predicts (dense, sparse, weighted, float32, L-BFGS) loads
    them and compiles none (a compile there would cost every process seconds)."""
    code = """
import warnings, numpy as np, scipy.sparse as sp
from numba.core import event
names = []
class Compiles(event.Listener):
    def on_start(self, ev): names.append(ev.data["dispatcher"].py_func.__name__)
    def on_end(self, ev): pass
event.register("numba:compile", Compiles())
from fastbp.sklearn import MLPClassifier, MLPRegressor
warnings.simplefilter("ignore")
X = np.random.default_rng(0).standard_normal((40, 5)); y = (X[:, 0] > 0).astype(int)
for dt in (np.float64, np.float32):
    Xd = X.astype(dt)
    MLPClassifier((4,), max_iter=2, early_stopping=True).fit(Xd, y, sample_weight=np.ones(40))
    MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, solver="lbfgs").fit(Xd, X[:, 1]).predict(Xd)
    MLPClassifier((4,), max_iter=2, solver="sgd").fit(sp.csr_matrix(Xd), y).predict(Xd)
    MLPRegressor(hidden_layer_sizes=(4,), loss="poisson", max_iter=2).fit(Xd, y)
print(names)
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)  # may build
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("data", ["iris", "moons"])
def test_training_curves_example_as_sklearn(data):
    """scikit-learn's example "Compare Stochastic learning strategies for MLPClassifier"
    (plot_mlp_training_curves: its seven strategies, its warning filter), with each import:
    the same loss curves, scores and no warning shown."""
    from sklearn.datasets import load_iris, make_moons
    from sklearn.preprocessing import MinMaxScaler
    X, y = load_iris(return_X_y=True) if data == "iris" else make_moons(noise=0.3,
                                                                         random_state=0)
    X = MinMaxScaler().fit_transform(X)
    sgd = dict(solver="sgd", learning_rate_init=0.2)
    strategies = [dict(sgd, learning_rate=rate, momentum=m, nesterovs_momentum=nesterov)
                  for rate in ("constant", "invscaling")
                  for m, nesterov in ((0, True), (0.9, False), (0.9, True))]
    strategies.append(dict(solver="adam", learning_rate_init=0.01))
    for params in strategies:
        fits = []
        for mod in (fastbp.sklearn, skn):
            mlp = mod.MLPClassifier(random_state=0, max_iter=400, **params)
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                warnings.filterwarnings("ignore", category=ConvergenceWarning, module="sklearn")
                mlp.fit(X, y)
            assert seen == []
            fits.append(mlp)
        ours, theirs = fits
        assert ours.n_iter_ == theirs.n_iter_, params
        assert ours.score(X, y) == theirs.score(X, y)
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-9,
                                   err_msg=str(params))


def test_user_guide_examples_as_sklearn():
    """The examples of scikit-learn's user guide for neural networks, with each import."""
    results = []
    for mod in (fastbp.sklearn, skn):
        out = []
        X, y = [[0.0, 0.0], [1.0, 1.0]], [0, 1]
        clf = mod.MLPClassifier(solver="lbfgs", alpha=1e-5, hidden_layer_sizes=(5, 2),
                                random_state=1)
        out.append(repr(clf.fit(X, y)))
        out.append(clf.predict([[2.0, 2.0], [-1.0, -2.0]]))
        out.append([coef.shape for coef in clf.coefs_])
        out.append(clf.predict_proba([[2.0, 2.0], [1.0, 2.0]]))
        clf = mod.MLPClassifier(solver="lbfgs", alpha=1e-5, hidden_layer_sizes=(15,),
                                random_state=1)
        clf.fit(X, [[0, 1], [1, 1]])
        out.append(clf.predict([[1.0, 2.0]]))
        out.append(clf.predict([[0.0, 0.0]]))
        clf = mod.MLPClassifier(hidden_layer_sizes=(15,), random_state=1, max_iter=1,
                                warm_start=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(10):
                clf.fit(X, y)
        out.append(clf.loss_curve_)
        results.append(out)
    ours, theirs = results
    assert ours[0] == theirs[0]
    assert " ".join(ours[0].split()) == ("MLPClassifier(alpha=1e-05, hidden_layer_sizes=(5, 2), "
                                         "random_state=1, solver='lbfgs')")
    np.testing.assert_array_equal(ours[1], [1, 0])
    assert ours[2] == theirs[2] == [(2, 5), (5, 2), (2, 1)]
    np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(ours[4], [[1, 1]])
    np.testing.assert_array_equal(ours[5], [[0, 1]])
    np.testing.assert_allclose(ours[6], theirs[6], rtol=1e-9)
