"""scikit-learn estimators over :class:`fastbp.MLP`: :class:`MLPClassifier` and
:class:`MLPRegressor`, for pipelines, grid search and cross-validation.

Needs scikit-learn (``pip install fastbp[sklearn]``); ``import fastbp`` does not import it,
``fastbp.sklearn`` does on first use.

    >>> from fastbp.sklearn import MLPClassifier
    >>> from sklearn.model_selection import cross_val_score
    >>> clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=50, random_state=0)
    >>> cross_val_score(clf, X, y, cv=5)                               # doctest: +SKIP

The parameters follow ``sklearn.neural_network.MLPClassifier`` / ``MLPRegressor`` where fastbp
does the same thing, and differ where it does not:

* ``solver``: ``'adam'`` (default), ``'adamw'`` or ``'sgd'`` (with ``momentum`` and
  ``nesterovs_momentum``); no ``'lbfgs'``. ``schedule`` takes a :mod:`fastbp.optim` schedule
  (object, name or config dict) instead of ``learning_rate`` / ``power_t``.
* ``weight_decay`` (default 0) instead of ``alpha``: the L2 term ``weight_decay * p`` added to
  the gradient of every parameter, biases included, at every step (``torch.optim``'s
  convention; for ``'adamw'`` the decoupled decay); scikit-learn's ``alpha`` penalizes weights
  only and is divided by the batch size.
* ``dtype``: ``None`` (float32 when ``X`` is float32, else float64, as scikit-learn),
  ``'float32'`` or ``'float64'``: the precision of the network and of its training.
* Binary classification uses one logistic output unit, multiclass a softmax output, and a
  multilabel indicator ``y`` one logistic unit per label, as scikit-learn does.

Training: ``fit`` runs up to ``max_iter`` epochs of mini-batches (``batch_size='auto'`` is
``min(200, n_samples)``). Without ``early_stopping`` it stops when the training loss has not
improved by at least ``tol`` for more than ``n_iter_no_change`` consecutive epochs; with
``early_stopping=True`` it holds out ``validation_fraction`` of the data (stratified for
classifiers), stops on the validation score (accuracy or R^2) in the same way and keeps the
weights of the best epoch. Reaching ``max_iter`` first warns with ``ConvergenceWarning``.
``partial_fit`` runs one epoch and continues the optimizer. ``random_state`` (an int) seeds
the initial weights, the shuffling and the validation split: two fits with the same int give
identical models.

The fitted network is ``net_`` (a :class:`fastbp.MLP`): ``net_.save(path)`` stores it without
pickle; the estimators themselves pickle and ``copy.deepcopy`` as usual.
"""
import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError("fastbp.sklearn needs scikit-learn >= 1.6: pip install "
                      "'fastbp[sklearn]'") from exc

from .callbacks import Callback
from .model import MLP

__all__ = ["MLPClassifier", "MLPRegressor"]

_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "sigmoid": "sigmoid",
                "tanh": "tanh", "relu": "relu"}
_SOLVERS = ("adam", "adamw", "sgd")
_FLOATS = (np.float64, np.float32)


class _Convergence(Callback):
    """scikit-learn's stopping rule. Without early stopping: an epoch whose training loss is
    not below ``best_loss - tol`` counts as no improvement; with early stopping: an epoch whose
    validation score is not above ``best_score + tol``. Training stops when more than
    ``n_iter_no_change`` such epochs come in a row. With early stopping the weights of the best
    validation score are put back at the end."""

    def __init__(self, tol, n_iter_no_change, early_stopping):
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping

    def on_train_begin(self, model, history):
        self.best_loss = np.inf
        self.best_score = -np.inf
        self.best_params = None
        self.count = 0
        self.converged = False

    def on_epoch_end(self, epoch, history, model):
        if self.early_stopping:
            score = history.val_metric[-1]
            self.count = self.count + 1 if score < self.best_score + self.tol else 0
            if score > self.best_score:
                self.best_score = score
                self.best_params = model.params.copy()
        else:
            loss = history.loss[-1]
            self.count = self.count + 1 if loss > self.best_loss - self.tol else 0
            self.best_loss = min(self.best_loss, loss)
        if self.count > self.n_iter_no_change:
            self.converged = True
            return True
        return False

    def on_train_end(self, model, history):
        if self.early_stopping and self.best_params is not None:
            model.params[...] = self.best_params


def _check_flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def _check_int_param(name, value, low):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    return int(value)


def _check_float_param(name, value, low, high=None, low_open=False, high_open=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    ok = np.isfinite(value) and (value > low if low_open else value >= low)
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        span = ("(" if low_open else "[") + f"{low}, " + (
            "inf)" if high is None else f"{high}" + (")" if high_open else "]"))
        raise ValueError(f"{name} must be in {span}, got {value}")
    return value


class _BaseMLP(BaseEstimator):
    """What the classifier and the regressor share: parameters, the optimizer, training."""

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 weight_decay=0.0, batch_size="auto", learning_rate_init=0.001, schedule=None,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True,
                 early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, dtype=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.schedule = schedule
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.dtype = dtype

    # ---- parameters --------------------------------------------------------------------------
    def _hidden_sizes(self):
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
            sizes = [sizes]
        try:
            sizes = list(sizes)
        except TypeError:
            raise TypeError("hidden_layer_sizes must be an integer or a sequence of integers, "
                            f"got {self.hidden_layer_sizes!r}") from None
        return [_check_int_param(f"hidden_layer_sizes[{k}]", s, 1) for k, s in enumerate(sizes)]

    def _check_params(self):
        """Validate the parameters (at fit time, as scikit-learn estimators do)."""
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{self.activation!r}")
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            _check_int_param("batch_size", self.batch_size, 1)
        _check_int_param("max_iter", self.max_iter, 1)
        _check_int_param("n_iter_no_change", self.n_iter_no_change, 1)
        _check_float_param("tol", self.tol, 0.0)
        _check_float_param("validation_fraction", self.validation_fraction, 0.0, 1.0,
                           low_open=True, high_open=True)
        for name in ("shuffle", "warm_start", "early_stopping", "nesterovs_momentum"):
            _check_flag(name, getattr(self, name))
        if not isinstance(self.verbose, (bool, np.bool_)):
            _check_int_param("verbose", self.verbose, 0)
        if self.dtype is not None and self.dtype not in ("float32", "float64", np.float32,
                                                         np.float64):
            raise ValueError(f"dtype must be None, 'float32' or 'float64', got {self.dtype!r}")
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.RandomState) or (
                isinstance(rs, numbers.Integral) and not isinstance(rs, (bool, np.bool_)))):
            raise TypeError("random_state must be None, an int or a numpy RandomState, got "
                            f"{rs!r}")
        self._optimizer_config()  # fastbp.optim checks the optimizer's parameters

    def _optimizer_config(self):
        if self.solver == "sgd":
            config = {"name": "sgd", "lr": self.learning_rate_init, "momentum": self.momentum,
                      "nesterov": bool(self.nesterovs_momentum) and self.momentum > 0,
                      "weight_decay": self.weight_decay}
        else:
            config = {"name": self.solver, "lr": self.learning_rate_init, "beta1": self.beta_1,
                      "beta2": self.beta_2, "eps": self.epsilon,
                      "weight_decay": self.weight_decay}
        if self.schedule is not None:
            config["schedule"] = self.schedule
        from .optim import make_optimizer
        make_optimizer(config)  # raises on invalid values, naming the parameter
        return config

    def _batch_size(self, n_samples):
        if isinstance(self.batch_size, str):
            return min(200, n_samples)
        return min(int(self.batch_size), n_samples)

    def _model_dtype(self, X):
        if self.dtype is None:
            return X.dtype if X.dtype in _FLOATS else np.dtype(np.float64)
        return np.dtype(self.dtype)

    # ---- training ----------------------------------------------------------------------------
    def _make_net(self, n_features, n_outputs, loss, output_activation, dtype, rng):
        sizes = [n_features, *self._hidden_sizes(), n_outputs]
        rs = self.random_state
        if rs is None:
            seed = None
        elif isinstance(rs, numbers.Integral):
            seed = int(rs)
        else:
            seed = int(rng.randint(np.iinfo(np.int32).max))
        return MLP(sizes, activation=_ACTIVATIONS[self.activation],
                   output_activation=output_activation, loss=loss, dtype=dtype, seed=seed)

    def _fit_net(self, X, Y, sample_weight, split_on):
        """``max_iter`` epochs with the stopping rule, on a new network or (warm start) the
        fitted one. ``Y`` is what the network trains on; ``split_on`` stratifies the
        validation split (None: not stratified)."""
        self._check_params()
        rng = check_random_state(self.random_state)
        if not (self.warm_start and hasattr(self, "net_")):
            self.net_ = self._new_net(X, Y, rng)
        val = None
        if self.early_stopping:
            parts = train_test_split(X, Y, *([] if sample_weight is None else [sample_weight]),
                                     test_size=self.validation_fraction, random_state=rng,
                                     stratify=split_on)
            X, Xv, Y, Yv = parts[:4]
            sample_weight, swv = (None, None) if sample_weight is None else parts[4:]
            val = (Xv, Yv) if swv is None else (Xv, Yv, swv)
        stop = _Convergence(float(self.tol), int(self.n_iter_no_change),
                            bool(self.early_stopping))
        self.net_.fit(X, Y, epochs=int(self.max_iter), batch_size=self._batch_size(X.shape[0]),
                      optimizer=self._optimizer_config(), shuffle=bool(self.shuffle),
                      validation_data=val, callbacks=[stop], sample_weight=sample_weight,
                      verbose=int(self.verbose))
        self._record(stop)
        if not stop.converged:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning)
        return self

    def _partial_fit_net(self, X, Y, sample_weight):
        self.net_.partial_fit(X, Y, batch_size=self._batch_size(X.shape[0]),
                              optimizer=self._optimizer_config(), shuffle=bool(self.shuffle),
                              sample_weight=sample_weight, verbose=int(self.verbose))
        self._record(None)
        return self

    def _record(self, stop):
        net = self.net_
        self.n_iter_ = int(net.n_epochs_)
        self.t_ = int(net.n_steps_)
        self.loss_curve_ = list(net.loss_curve_)
        self.n_layers_ = len(net.layer_sizes)
        self.n_outputs_ = int(net.layer_sizes[-1])
        self.out_activation_ = {"sigmoid": "logistic"}.get(net.output_activation,
                                                          net.output_activation)
        if stop is not None and stop.early_stopping:
            self.validation_scores_ = list(net.history_.val_metric)
            self.best_validation_score_ = float(stop.best_score)
            self.best_loss_ = None
        else:
            self.validation_scores_ = None
            self.best_validation_score_ = None
            self.best_loss_ = float(min(self.loss_curve_))

    def _forward(self, X):
        check_is_fitted(self, "net_")
        X = validate_data(self, X, reset=False, dtype=_FLOATS)
        return self.net_.forward(X)

    # ---- scikit-learn's view of the weights --------------------------------------------------
    @property
    def coefs_(self):
        """Per-layer weight matrices in scikit-learn's layout, ``coefs_[l]`` (n_in, n_out)
        (copies; the network stores (n_out, n_in))."""
        check_is_fitted(self, "net_")
        return [W.T.copy() for W in self.net_.weights]

    @property
    def intercepts_(self):
        """Per-layer bias vectors (copies)."""
        check_is_fitted(self, "net_")
        return [b.copy() for b in self.net_.biases]


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multilayer perceptron classifier trained by fastbp (see :mod:`fastbp.sklearn` for the
    parameters). Labels may be any values ``np.unique`` orders; ``classes_`` holds them.

    Attributes: ``classes_``, ``net_`` (the :class:`fastbp.MLP`), ``n_features_in_``,
    ``loss_curve_``, ``n_iter_`` (epochs trained), ``t_`` (optimizer steps), ``best_loss_``,
    ``validation_scores_``, ``best_validation_score_``, ``n_layers_``, ``n_outputs_``,
    ``out_activation_``, ``coefs_``, ``intercepts_``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags

    def _check_targets(self, y):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected. Please "
                          "change the shape of y to (n_samples,), for example using ravel().",
                          DataConversionWarning, stacklevel=3)
            y = y.ravel()
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"MLPClassifier supports binary, multiclass and multilabel-"
                             f"indicator targets, got {kind!r}")
        return y, kind

    def _encode(self, y):
        """Targets for the network: label indices (softmax), a 0/1 column (one logistic
        unit) or the indicator matrix (multilabel)."""
        if self._multilabel:
            if y.ndim != 2 or y.shape[1] != self.classes_.shape[0]:
                raise ValueError(f"y must be a multilabel indicator matrix with "
                                 f"{self.classes_.shape[0]} columns, as in the first fit")
            return np.asarray(y, dtype=np.float64)
        if y.ndim != 1:
            raise ValueError("y must be 1-D class labels, as in the first fit")
        idx = np.searchsorted(self.classes_, y)
        idx = np.minimum(idx, self.classes_.shape[0] - 1)
        unseen = self.classes_[idx] != y
        if unseen.any():
            raise ValueError(f"y has classes not in classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unseen]).tolist()}")
        if self.classes_.shape[0] == 2:
            return idx.astype(np.float64).reshape(-1, 1)
        return idx

    def _set_classes(self, y, kind, classes=None):
        self._multilabel = kind == "multilabel-indicator"
        if self._multilabel:
            self.classes_ = np.arange(y.shape[1])
        else:
            self.classes_ = np.unique(y if classes is None else np.asarray(classes))
        n = self.classes_.shape[0]
        if n < 2 and not self._multilabel:
            raise ValueError(f"MLPClassifier needs samples of at least 2 classes, but y holds "
                             f"only one class: {self.classes_.tolist()}")

    def _new_net(self, X, Y, rng):
        n = self.classes_.shape[0]
        if self._multilabel or n == 2:
            loss, act, n_out = "bce", "sigmoid", (n if self._multilabel else 1)
        else:
            loss, act, n_out = "cross_entropy", "softmax", n
        return self._make_net(X.shape[1], n_out, loss, act, self._model_dtype(X), rng)

    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n_samples, n_features) and labels ``y`` (n_samples,) or a multilabel
        indicator matrix (n_samples, n_labels); returns ``self``."""
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True,
                             reset=not (self.warm_start and hasattr(self, "net_")))
        y, kind = self._check_targets(y)
        if self.warm_start and hasattr(self, "net_"):
            if (kind == "multilabel-indicator") != self._multilabel or (
                    not self._multilabel and not np.isin(y, self.classes_).all()):
                raise ValueError("warm_start=True needs the classes of the first fit, "
                                 f"{self.classes_.tolist()}")
        else:
            self._set_classes(y, kind)
        Y = self._encode(y)
        split_on = None if self._multilabel else y
        return self._fit_net(X, Y, sample_weight, split_on)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)``, continuing the network and its optimizer. The first call
        needs ``classes`` (all labels that will occur), unless ``y`` is a multilabel indicator
        matrix."""
        first = not hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, reset=first)
        y, kind = self._check_targets(y)
        if first:
            self._check_params()
            if classes is None and kind != "multilabel-indicator":
                raise ValueError("classes must be given to the first call of partial_fit (all "
                                 "labels that will occur)")
            self._set_classes(y, kind, classes)
            self.net_ = self._new_net(X, None, check_random_state(self.random_state))
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={np.unique(classes).tolist()} differs from the classes "
                             f"of the first call, {self.classes_.tolist()}")
        return self._partial_fit_net(X, self._encode(y), sample_weight)

    def predict_proba(self, X):
        """Class probabilities, (n_samples, n_classes), columns in ``classes_`` order (for
        multilabel: each label's probability)."""
        out = self._forward(X)
        if out.shape[1] == 1 and not self._multilabel:
            p = out[:, 0]
            return np.stack([1 - p, p], axis=1)
        return out

    def predict_log_proba(self, X):
        """Logarithm of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X):
        """Predicted labels (values of ``classes_``; a 0/1 indicator matrix for multilabel)."""
        out = self._forward(X)
        if self._multilabel:
            return (out > 0.5).astype(np.int64)
        if out.shape[1] == 1:
            return self.classes_[(out[:, 0] > 0.5).astype(np.intp)]
        return self.classes_[np.argmax(out, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multilayer perceptron regressor (squared error, identity output) trained by fastbp (see
    :mod:`fastbp.sklearn` for the parameters). ``y`` may be (n_samples,) or
    (n_samples, n_targets); predictions have shape (n_samples,) when there is one target.

    Attributes: ``net_`` (the :class:`fastbp.MLP`), ``n_features_in_``, ``loss_curve_``,
    ``n_iter_``, ``t_``, ``best_loss_``, ``validation_scores_``, ``best_validation_score_``,
    ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``coefs_``, ``intercepts_``.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, y):
        y = np.asarray(y, dtype=np.float64)
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _new_net(self, X, Y, rng):
        return self._make_net(X.shape[1], self._n_targets, "mse", "identity",
                              self._model_dtype(X), rng)

    def fit(self, X, y, sample_weight=None):
        """Train on ``X`` (n_samples, n_features) and targets ``y``; returns ``self``."""
        warm = self.warm_start and hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, y_numeric=True,
                             reset=not warm)
        Y = self._targets(y)
        if warm and Y.shape[1] != self._n_targets:
            raise ValueError(f"warm_start=True needs {self._n_targets} targets as in the first "
                             f"fit, got {Y.shape[1]}")
        self._n_targets = Y.shape[1]
        return self._fit_net(X, Y, sample_weight, None)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``, continuing the network and its optimizer."""
        first = not hasattr(self, "net_")
        X, y = validate_data(self, X, y, dtype=_FLOATS, multi_output=True, y_numeric=True,
                             reset=first)
        Y = self._targets(y)
        if first:
            self._check_params()
            self._n_targets = Y.shape[1]
            self.net_ = self._new_net(X, Y, check_random_state(self.random_state))
        elif Y.shape[1] != self._n_targets:
            raise ValueError(f"y has {Y.shape[1]} targets, but the first call had "
                             f"{self._n_targets}")
        return self._partial_fit_net(X, Y, sample_weight)

    def predict(self, X):
        """Predicted targets: (n_samples,) for one target, else (n_samples, n_targets)."""
        out = self._forward(X)
        return out[:, 0] if self._n_targets == 1 else out
