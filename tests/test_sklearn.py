"""fastbp.sklearn: scikit-learn's own estimator checks, plus the wrappers' behaviour (labels,
targets, partial_fit, early stopping, warm start, agreement with fastbp.MLP, pipelines)."""
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.model_selection import (GridSearchCV, cross_val_score,  # noqa: E402
                                     train_test_split)
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

quiet = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@quiet
@parametrize_with_checks([MLPClassifier(), MLPRegressor()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def blobs(rng, N=90, n=4, k=3, spread=0.6):
    centers = 2.0 * rng.standard_normal((k, n))
    y = rng.integers(0, k, N)
    X = centers[y] + spread * rng.standard_normal((N, n))
    return X, y


def test_import_fastbp_does_not_import_sklearn():
    code = ("import sys, fastbp; assert 'sklearn' not in sys.modules, 'imported'; "
            "fastbp.sklearn.MLPClassifier; assert 'sklearn' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- classifier ----------------------------------------------------------------------------------
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
    assert clf.n_features_in_ == 4 and clf.n_iter_ >= 1 and len(clf.loss_curve_) == clf.n_iter_
    assert clf.n_outputs_ == (1 if len(labels) == 2 else len(labels))
    assert clf.out_activation_ == ("logistic" if len(labels) == 2 else "softmax")


def test_classifier_multilabel(rng):
    X = rng.standard_normal((80, 5))
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0, X[:, 3] < 0.5], axis=1).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(20,), max_iter=200, learning_rate_init=0.02,
                            random_state=1).fit(X, Y)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    pred = clf.predict(X)
    assert pred.shape == Y.shape and set(np.unique(pred)) <= {0, 1}
    proba = clf.predict_proba(X)
    assert proba.shape == Y.shape and ((proba >= 0) & (proba <= 1)).all()
    assert clf.score(X, Y) > 0.8  # subset accuracy


def test_classifier_equals_fastbp_mlp(rng):
    """The wrapper is fastbp.MLP with scikit-learn's conventions: same seed, same config, same
    weights bitwise."""
    X, y = blobs(rng)
    clf = MLPClassifier(hidden_layer_sizes=(7, 5), activation="tanh", solver="sgd",
                        learning_rate_init=0.05, momentum=0.5, batch_size=10, max_iter=6,
                        tol=0.0, n_iter_no_change=100, random_state=3)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X, y)
    net = fastbp.MLP([4, 7, 5, 3], activation="tanh", loss="cross_entropy", dtype="float64",
                     seed=3)
    net.fit(X, y, epochs=6, batch_size=10,
            optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.5, "nesterov": True})
    np.testing.assert_array_equal(clf.net_.params, net.params)
    assert clf.loss_curve_ == net.loss_curve_
    for W, coef in zip(net.weights, clf.coefs_):
        np.testing.assert_array_equal(coef, W.T)
    for b, intercept in zip(net.biases, clf.intercepts_):
        np.testing.assert_array_equal(intercept, b)


@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_partial_fit_matches_fit(rng, solver):
    X, y = blobs(rng)
    params = dict(hidden_layer_sizes=(8,), solver=solver, batch_size=16, max_iter=4, tol=0.0,
                  n_iter_no_change=50, random_state=5, learning_rate_init=0.01)
    with pytest.warns(ConvergenceWarning):
        full = MLPClassifier(**params).fit(X, y)
    part = MLPClassifier(**params)
    with pytest.raises(ValueError, match="classes"):
        part.partial_fit(X, y)
    for _ in range(4):
        part.partial_fit(X, y, classes=[0, 1, 2])
    np.testing.assert_array_equal(part.net_.params, full.net_.params)
    assert part.n_iter_ == full.n_iter_ == 4 and part.loss_curve_ == full.loss_curve_
    with pytest.raises(ValueError, match="not in classes_"):
        part.partial_fit(X, np.where(y == 0, 9, y))
    with pytest.raises(ValueError, match="features"):
        part.partial_fit(X[:, :3], y)


def test_partial_fit_subset_of_classes_in_a_batch(rng):
    X, y = blobs(rng)
    clf = MLPClassifier(hidden_layer_sizes=(8,), random_state=0)
    clf.partial_fit(X[y != 2], y[y != 2], classes=[0, 1, 2])
    clf.partial_fit(X, y)
    assert clf.predict_proba(X).shape == (len(X), 3) and clf.n_iter_ == 2


def test_one_class_is_an_error(rng):
    X = rng.standard_normal((10, 3))
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier().fit(X, np.full(10, "a"))


def test_early_stopping_keeps_the_best_epoch(rng):
    X, y = blobs(rng, N=200, spread=1.5)
    clf = MLPClassifier(hidden_layer_sizes=(30,), early_stopping=True, validation_fraction=0.25,
                        n_iter_no_change=3, max_iter=300, learning_rate_init=0.05,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ < 300
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None
    # the held-out split is reproducible from random_state (stratified, as scikit-learn's),
    # and the kept weights are those of the best epoch, not of the last one
    _, X_val, _, y_val = train_test_split(X, y, test_size=0.25, stratify=y,
                                          random_state=np.random.RandomState(0))
    assert clf.score(X_val, y_val) == clf.best_validation_score_
    assert int(np.argmax(clf.validation_scores_)) < clf.n_iter_ - 1


def test_convergence_stops_and_warns(rng):
    X, y = blobs(rng)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf = MLPClassifier(hidden_layer_sizes=(10,), tol=1e-2, n_iter_no_change=2,
                            max_iter=500, learning_rate_init=0.05, random_state=0).fit(X, y)
    assert clf.n_iter_ < 500 and clf.best_loss_ == min(clf.loss_curve_)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        MLPClassifier(max_iter=3, random_state=0).fit(X, y)


@quiet
def test_warm_start_continues(rng):
    X, y = blobs(rng)
    params = dict(hidden_layer_sizes=(8,), max_iter=3, tol=0.0, random_state=2)
    warm = MLPClassifier(warm_start=True, **params).fit(X, y)
    first = warm.net_.params.copy()
    warm.fit(X, y)
    assert warm.n_iter_ == 6 and len(warm.loss_curve_) == 6
    assert not np.array_equal(warm.net_.params, first)
    cold = MLPClassifier(**params).fit(X, y)
    cold.fit(X, y)
    assert cold.n_iter_ == 3
    np.testing.assert_array_equal(cold.net_.params, first)
    with pytest.raises(ValueError, match="classes of the first fit"):
        warm.fit(X, np.where(y == 2, 7, y))


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
    assert clf.net_.dtype == np.dtype(expected)
    assert clf.predict_proba(X).dtype == np.dtype(expected)
    reg = MLPRegressor(hidden_layer_sizes=(6,), max_iter=5, dtype=dtype, random_state=0)
    assert reg.fit(X, y.astype(float)).predict(X).dtype == np.dtype(expected)


@pytest.mark.parametrize("params,match", [
    (dict(activation="swish"), "activation"),
    (dict(solver="lbfgs"), "solver"),
    (dict(hidden_layer_sizes=(10, 0)), "hidden_layer_sizes"),
    (dict(batch_size=0), "batch_size"),
    (dict(max_iter=0), "max_iter"),
    (dict(learning_rate_init=-1.0), "lr"),
    (dict(momentum=1.5, solver="sgd"), "momentum"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(dtype="float16"), "dtype"),
    (dict(schedule="bogus"), "schedule"),
])
def test_invalid_params_raise_at_fit(rng, params, match):
    X, y = blobs(rng, N=20)
    clf = MLPClassifier(**params)  # never in __init__
    with pytest.raises((ValueError, TypeError), match=match):
        clf.fit(X, y)


def test_not_fitted(rng):
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((2, 3)))
    with pytest.raises(NotFittedError):
        MLPRegressor().coefs_


# ---- regressor -----------------------------------------------------------------------------------
def test_regressor_targets_and_fit(rng):
    X = rng.uniform(-1, 1, (150, 3))
    y = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2]
    reg = MLPRegressor(hidden_layer_sizes=(32,), activation="tanh", learning_rate_init=0.01,
                       batch_size=16, max_iter=400, random_state=0).fit(X, y)
    assert reg.predict(X).shape == (150,) and reg.score(X, y) > 0.9
    assert reg.out_activation_ == "identity" and reg.n_outputs_ == 1
    Y = np.stack([y, -y, X[:, 0]], axis=1)
    reg2 = clone(reg).fit(X, Y)
    assert reg2.predict(X).shape == (150, 3) and reg2.score(X, Y) > 0.9
    with pytest.raises(ValueError, match="targets"):
        reg2.partial_fit(X, y)


def test_regressor_partial_fit_matches_fit(rng):
    X = rng.standard_normal((40, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    params = dict(hidden_layer_sizes=(5,), batch_size=8, max_iter=3, tol=0.0, random_state=4)
    with pytest.warns(ConvergenceWarning):
        full = MLPRegressor(**params).fit(X, y)
    part = MLPRegressor(**params)
    for _ in range(3):
        part.partial_fit(X, y)
    np.testing.assert_array_equal(part.net_.params, full.net_.params)
    np.testing.assert_array_equal(part.predict(X), full.predict(X))


def test_sample_weight_is_used(rng):
    X, y = blobs(rng, N=60, k=2, spread=3.0)
    w = np.where(y == 1, 5.0, 0.2)
    params = dict(hidden_layer_sizes=(5,), max_iter=20, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = MLPClassifier(**params).fit(X, y)
        b = MLPClassifier(**params).fit(X, y, sample_weight=w)
        c = MLPClassifier(**params).fit(X, y, sample_weight=np.ones(60))
    assert not np.allclose(a.predict_proba(X), b.predict_proba(X))
    np.testing.assert_allclose(a.predict_proba(X), c.predict_proba(X), rtol=1e-9)
    # weighting class 1 up moves the predicted probabilities towards class 1
    assert b.predict_proba(X)[:, 1].mean() > a.predict_proba(X)[:, 1].mean()


# ---- scikit-learn machinery ----------------------------------------------------------------------
@quiet
def test_pipeline_grid_search_and_cross_validation(rng):
    X, y = blobs(rng, N=120)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=60, random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(4,), (16,)],
                               "mlpclassifier__learning_rate_init": [0.01, 0.05]}, cv=3)
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    assert set(grid.best_params_) == {"mlpclassifier__hidden_layer_sizes",
                                      "mlpclassifier__learning_rate_init"}
    scores = cross_val_score(MLPRegressor(hidden_layer_sizes=(8,), max_iter=50,
                                          learning_rate_init=0.02, random_state=0),
                             X, X[:, 0] - X[:, 1], cv=3)
    assert scores.shape == (3,) and (scores > 0.5).all()


@quiet
def test_pickle_clone_and_save(rng, tmp_path):
    X, y = blobs(rng)
    clf = MLPClassifier(hidden_layer_sizes=(6,), max_iter=10, random_state=0).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    fresh = clone(clf)
    assert not hasattr(fresh, "net_") and fresh.get_params() == clf.get_params()
    clf.net_.save(tmp_path / "net.npz")
    net = fastbp.load(tmp_path / "net.npz")
    np.testing.assert_array_equal(net.predict_proba(X), clf.predict_proba(X))
