"""scikit-learn's ``MLPClassifier`` and ``MLPRegressor``, trained by fastbp's kernels.

Needs scikit-learn (``pip install fastbp[sklearn]``); ``import fastbp`` does not import it,
``fastbp.sklearn`` does on first use.

    >>> from fastbp.sklearn import MLPClassifier      # instead of sklearn.neural_network
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    >>> clf.fit(X, y).score(X_test, y_test)                              # doctest: +SKIP

Every parameter, fitted attribute and method of ``sklearn.neural_network.MLPClassifier`` /
``MLPRegressor`` is here with the same default and meaning, the same validation errors and
warnings, and the same training: the same initial weights and batches for the same
``random_state``, the same objective (``alpha``'s L2 term on the weights only, divided by the
batch's weight), the same SGD and Adam updates, learning-rate schedules and stopping rule, and
L-BFGS through SciPy. The differences (a few, deliberate) are in ``docs/sklearn.md``; the
training itself is in :mod:`fastbp._sklearn_solvers`.

fastbp's extras (keyword-only, after scikit-learn's parameters):

* ``dtype``: ``None`` (float32 when ``X`` is float32, else float64, as scikit-learn),
  ``'float32'`` or ``'float64'``: the precision of the network and of its training.
* ``weight_decay`` (default 0): fastbp's L2 term ``weight_decay * p`` on every parameter at
  every step of 'sgd' and 'adam' (torch's convention), on top of ``alpha``.
* ``schedule``: a :mod:`fastbp.optim` schedule (object, name or config dict) giving the
  learning rate of each epoch, for ``'sgd'`` and ``'adam'`` (with ``learning_rate='constant'``).

The fitted network is ``net_`` (a :class:`fastbp.MLP`; ``coefs_`` and ``intercepts_`` are
views into its parameters): ``net_.save(path)`` stores it without pickle. Its weights are the
estimator's; its own training records (``net_.loss_curve_``, ``net_.optimizer_``) are not
used (the estimator keeps scikit-learn's: ``loss_curve_``, ``_optimizer``). For
``MLPRegressor(loss='poisson')`` ``net_`` outputs the log of the mean (its identity output is
the estimator's ``exp`` output before the exponential).
"""
import numbers
from itertools import pairwise

import numpy as np

try:
    import scipy.sparse as sp
    import sklearn.neural_network as sklearn_mlp
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import check_random_state, column_or_1d
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import (_check_partial_fit_first_call, type_of_target,
                                          unique_labels)
    from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastbp.sklearn needs scikit-learn >= 1.6: pip install "
                      "'fastbp[sklearn]'") from exc

from . import _sklearn_solvers as solvers
from . import _threadpool
from .model import MLP, PREDICT_CHUNK

__all__ = ["MLPClassifier", "MLPRegressor"]

_threadpool.register()  # threadpoolctl's limits (joblib, threadpool_limits) reach fastbp

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_STOCHASTIC = ("sgd", "adam")
_FLOATS = (np.float64, np.float32)


def _stochastic_only(est):
    """``partial_fit`` exists for the stochastic solvers only (as in scikit-learn)."""
    if est.solver not in _STOCHASTIC:
        raise AttributeError(f"partial_fit is only available for stochastic optimizers. "
                             f"{est.solver} is not stochastic.")
    return True


class _LayerArrays(list):
    """``coefs_`` / ``intercepts_``: views into ``net_``'s parameters. ``coefs_[l] = A`` copies
    ``A`` into the network (scikit-learn's list would take ``A`` itself: the same model)."""

    def __init__(self, arrays, assign):
        super().__init__(arrays)
        self._assign = assign

    def __setitem__(self, index, value):
        if not isinstance(index, (int, np.integer)):
            raise TypeError("assign one layer at a time: coefs_[l] = A")
        self._assign(index, value)


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, initialization, training."""

    # scikit-learn's own constraint objects: the same checks, and the same error messages
    # (their sets of options print in their order), plus fastbp's extras
    _parameter_constraints: dict = {
        **sklearn_mlp.MLPClassifier._parameter_constraints,
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "schedule": "no_validation",  # fastbp.optim.make_schedule checks it at fit
        "dtype": [None, StrOptions({"float32", "float64"}),
                  Options(type, {np.float32, np.float64})],
    }

    def _store_init_params(self, params):
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    # ---- checks and conversions --------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if np.any(np.array(sizes) <= 0):
            raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
        # a TypeError, as scikit-learn's (numpy's, from the first layer's shape); not truncated
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
            raise TypeError(f"hidden_layer_sizes must hold integers, got {sizes}")
        return [int(s) for s in sizes]

    def _check_extras(self):
        """fastbp's own parameters, where a type constraint cannot say it all."""
        if self.solver not in ("lbfgs", *_STOCHASTIC):  # an option of a later scikit-learn
            raise ValueError(f"solver={self.solver!r} is not supported by fastbp.sklearn")
        if self.schedule is not None:
            from .optim import make_schedule
            make_schedule(self.schedule)  # raises on an invalid schedule, naming it
            if self.solver == "sgd" and self.learning_rate != "constant":
                raise ValueError(f"schedule={self.schedule!r} sets the learning rate of each "
                                 f"epoch; it cannot be combined with learning_rate="
                                 f"{self.learning_rate!r} (use 'constant')")

    def _model_dtype(self, X):
        if hasattr(self, "net_") and not self._first_pass:
            return self.net_.dtype
        return np.dtype(X.dtype if self.dtype is None else self.dtype)

    def _as_model_input(self, X, dtype):
        """Dense X as a kernel array, sparse X as CSR, both of ``dtype``."""
        if sp.issparse(X):
            return X.tocsr().astype(dtype, copy=False)
        return solvers.as_kernel_array(X, dtype)

    # ---- training ----------------------------------------------------------------------------
    def _fit(self, X, y, sample_weight, incremental):
        hidden = self._hidden_sizes()
        self._check_extras()
        self._first_pass = not hasattr(self, "net_") or (not self.warm_start
                                                         and not incremental)
        X, Y = self._validate_input(X, y, incremental, reset=self._first_pass)
        dtype = self._model_dtype(X)
        if sample_weight is not None:
            sample_weight = solvers.as_kernel_array(
                _check_sample_weight(sample_weight, X, dtype=dtype), dtype)
        X = self._as_model_input(X, dtype)
        Y = solvers.as_kernel_array(Y, dtype)
        self._random_state = check_random_state(self.random_state)
        if self._first_pass:
            self._initialize(X.shape[1], hidden, Y.shape[1], dtype)
        elif Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the network was fitted with "
                             f"{self.n_outputs_}")
        elif hidden != list(self.net_.layer_sizes[1:-1]):
            # scikit-learn goes on with the fitted layers (or fails deep inside) where
            # hidden_layer_sizes changed: a network the parameters do not describe
            raise ValueError(f"hidden_layer_sizes={self.hidden_layer_sizes!r} differs from "
                             f"the fitted network's {tuple(self.net_.layer_sizes[1:-1])}; to "
                             f"train a new network, fit with warm_start=False")
        self.net_ = self._network()
        if self.solver == "lbfgs":
            solvers.fit_lbfgs(self, X, Y, sample_weight)
        else:
            solvers.fit_stochastic(self, X, Y, sample_weight, incremental)
        if not np.isfinite(self.net_.params).all():
            raise ValueError("Solver produced non-finite parameter weights. The input data may "
                             "contain large values and need to be preprocessed.")
        return self

    def _network(self):
        """``net_``, or a copy with ``activation`` as set now if it was changed after fitting
        (the same parameters): scikit-learn reads it at every fit and prediction."""
        net = self.net_
        if net.activation == _ACTIVATIONS[self.activation]:
            return net
        other = MLP(net.layer_sizes, activation=_ACTIVATIONS[self.activation],
                    output_activation=net.output_activation, loss=net.loss_name,
                    dtype=net.dtype, seed=0)
        other.params[...] = net.params
        return other

    def _initialize(self, n_features, hidden, n_outputs, dtype):
        """A new network with scikit-learn's initial weights (Glorot's uniform range for every
        layer, biases included, ``factor`` 2 for logistic hidden units, else 6), drawn from
        ``_random_state`` in scikit-learn's order: the same ``random_state`` gives the same
        starting point as ``sklearn.neural_network``."""
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = n_outputs
        sizes = [n_features, *hidden, n_outputs]
        self.n_layers_ = len(sizes)
        self.out_activation_, output, loss = self._output_layer()
        self.net_ = MLP(sizes, activation=_ACTIVATIONS[self.activation],
                        output_activation=output, loss=loss, dtype=dtype, seed=0)
        factor = 2.0 if self.activation == "logistic" else 6.0
        for l, (fan_in, fan_out) in enumerate(pairwise(sizes)):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            self.net_.weights[l] = coef.astype(dtype).T
            self.net_.biases[l] = intercept.astype(dtype)
        self._best_params = self.net_.params.copy()
        self._optimizer = None
        if self.solver in _STOCHASTIC:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix ``X`` (dense or sparse CSR/CSC, (n_samples,
        n_features)) and targets ``y``, with optional ``sample_weight`` (n_samples,); returns
        ``self``."""
        return self._fit(X, y, sample_weight, incremental=False)

    # ---- prediction --------------------------------------------------------------------------
    def _output(self, X):
        """The output layer's activations for validated ``X`` (the exp output applied)."""
        net = self._network()
        if sp.issparse(X):
            X = X.tocsr()
            out = np.empty((X.shape[0], self.n_outputs_), dtype=net.dtype)
            for start in range(0, X.shape[0], PREDICT_CHUNK):
                stop = min(start + PREDICT_CHUNK, X.shape[0])
                out[start:stop] = net.forward(X[start:stop].toarray())
        else:
            out = net.forward(X)
        if self.out_activation_ == "exp":
            np.exp(out, out=out)
        return out

    def _check_predict_X(self, X):
        """``X`` of a prediction, checked as scikit-learn's MLPs check it (numbers only: strings
        raise), then of the network's dtype."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        return self._as_model_input(X, self.net_.dtype)

    def _forward(self, X):
        return self._output(self._check_predict_X(X))

    def _validation_score(self, X, y, sample_weight):
        """scikit-learn's validation score (accuracy or R^2); NaN for non-finite outputs."""
        pred = self._predict_validated(X)
        if np.issubdtype(pred.dtype, np.floating) and not np.isfinite(pred).all():
            return np.nan
        return self._score_function(y, pred, sample_weight=sample_weight)

    # ---- scikit-learn's view of the weights --------------------------------------------------
    @property
    def coefs_(self):
        """Per-layer weight matrices in scikit-learn's layout, ``coefs_[l]`` (n_in, n_out):
        views (transposed) into ``net_``'s parameters; ``coefs_[l] = A`` and ``coefs_ = [...]``
        copy the arrays in (of the fitted shapes)."""
        check_is_fitted(self, "net_")
        return _LayerArrays([W.T for W in self.net_.weights], self._set_coef)

    @coefs_.setter
    def coefs_(self, coefs):
        self._set_all(coefs, "coefs_", self.coefs_, self._set_coef)

    def _set_coef(self, l, coef):
        self.net_.weights[l] = np.asarray(coef).T

    @property
    def intercepts_(self):
        """Per-layer bias vectors: views into ``net_``'s parameters; assigning copies in."""
        check_is_fitted(self, "net_")
        return _LayerArrays(list(self.net_.biases), self._set_intercept)

    @intercepts_.setter
    def intercepts_(self, intercepts):
        self._set_all(intercepts, "intercepts_", self.intercepts_, self._set_intercept)

    def _set_intercept(self, l, b):
        self.net_.biases[l] = b

    @staticmethod
    def _set_all(arrays, name, current, assign):
        """``coefs_ = [...]`` / ``intercepts_ = [...]``: every array checked, then copied in
        (nothing changed when one does not fit)."""
        arrays = [np.asarray(a) for a in arrays]
        shapes = [a.shape for a in current]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(f"{name} must be {len(shapes)} arrays of shapes {shapes} (the "
                             f"fitted network's), got {[a.shape for a in arrays]}")
        for l, a in enumerate(arrays):
            assign(l, a)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: ``sklearn.neural_network.MLPClassifier``'s
    parameters, attributes and training on fastbp's kernels (see :mod:`fastbp.sklearn`).

    Binary targets train one logistic output unit, multiclass targets a softmax output, a
    multilabel indicator matrix one logistic unit per label, all with the log-loss.
    """

    loss = "log_loss"

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 weight_decay=0.0, schedule=None, dtype=None):
        self._store_init_params(locals())

    def _output_layer(self):
        if self._label_binarizer.y_type_ == "multiclass":
            return "softmax", "softmax", "cross_entropy"
        return "logistic", "sigmoid", "bce"

    def _stratify_validation(self):
        return self.n_outputs_ == 1  # scikit-learn stratifies one-column targets only

    def _labels_of(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    _score_function = staticmethod(accuracy_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=_FLOATS, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(f"warm_start can only be used where `y` has the same "
                                     f"classes as in the previous call to fit. Previously got "
                                     f"{self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y)

    @available_if(_stochastic_only)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``(X, y)`` that continues the network and its optimizer. The first
        call needs ``classes``: every label that will occur."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict_validated(self, X):
        out = self._output(X)
        if self.n_outputs_ == 1:
            out = out.ravel()
        return self._label_binarizer.inverse_transform(out)

    def predict(self, X):
        """Predicted labels (values of ``classes_``; an indicator matrix for multilabel)."""
        return self._predict_validated(self._check_predict_X(X))

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order (for
        multilabel: each label's probability)."""
        out = self._forward(X)
        if self.n_outputs_ == 1:
            p = out.ravel()
            return np.vstack([1 - p, p]).T
        return out

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: ``sklearn.neural_network.MLPRegressor``'s parameters,
    attributes and training on fastbp's kernels (see :mod:`fastbp.sklearn`).

    ``loss='squared_error'`` (identity output) or ``'poisson'`` (exponential output, half the
    Poisson deviance); ``y`` (n_samples,) or (n_samples, n_targets).
    """

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints,
                                    "loss": sklearn_mlp.MLPRegressor._parameter_constraints[
                                        "loss"]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 weight_decay=0.0, schedule=None, dtype=None):
        self._store_init_params(locals())

    def _output_layer(self):
        # Poisson: the network's identity output is z, the estimator's output exp(z)
        return ("exp" if self.loss == "poisson" else "identity"), "identity", "mse"

    def _stratify_validation(self):
        return False

    def _labels_of(self, Y):
        return Y

    _score_function = staticmethod(r2_score)

    def _validate_input(self, X, y, incremental, reset):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=_FLOATS, reset=reset)
        if not np.issubdtype(y.dtype, np.number):  # scikit-learn's fails on them (numpy's
            # TypeError, in its first loss): strings are not converted to numbers
            raise TypeError(f"y must hold numbers for regression, got dtype {y.dtype}")
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return X, (y.reshape(-1, 1) if y.ndim == 1 else y)

    @available_if(_stochastic_only)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)`` that continues the network and its optimizer."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _predict_validated(self, X):
        out = self._output(X)
        return out.ravel() if out.shape[1] == 1 else out

    def predict(self, X):
        """Predicted targets: (n_samples,) for one target, else (n_samples, n_targets)."""
        return self._predict_validated(self._check_predict_X(X))
