"""``fastbp.MLP``: a multilayer perceptron over the flat-buffer kernels.

The Python layer validates, converts and allocates; the kernels in :mod:`fastbp.kernels` do the
arithmetic. All parameters live in one flat array ``params``; ``weights[l]`` (n_out, n_in) and
``biases[l]`` (n_out,) are views into it, and gradients use a twin buffer of the same layout.
"""
import numpy as np

from . import _validation as V
from .kernels import network as knet
from .kernels.activations import ACTIVATIONS, IDENTITY, RELU, SIGMOID, SOFTMAX, TANH
from .kernels.losses import BCE, CROSS_ENTROPY, LOSSES, MSE, loss_sum

# Rows pushed through the network at once by forward/predict/loss: bounds their workspace.
PREDICT_CHUNK = 1024

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
OPTIMIZERS = ("sgd",)


class _ParamList(list):
    """The list behind ``net.weights`` / ``net.biases``: its items are views into the model's
    flat buffer, and ``net.weights[l] = W`` copies ``W`` into that view (after checking its
    shape) instead of replacing the item."""

    def __setitem__(self, index, value):
        if not isinstance(index, (int, np.integer)):
            raise TypeError("assign one layer at a time: net.weights[l] = W")
        view = list.__getitem__(self, index)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"layer {index} expects an array of shape {view.shape}, "
                             f"got {value.shape}")
        if value.dtype.kind not in "biuf" or not np.isfinite(value).all():
            raise ValueError(f"layer {index}: values must be finite real numbers")
        view[...] = value


class MLP:
    """A multilayer perceptron trained by backpropagation.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_inputs, hidden_1, ..., n_outputs]``, at least two entries.
    activation : {'sigmoid', 'tanh', 'relu', 'identity'}
        Activation of the hidden layers.
    output_activation : {'sigmoid', 'tanh', 'relu', 'identity', 'softmax'} or None
        Activation of the output layer. ``None`` means: the hidden ``activation`` for
        ``loss='mse'`` (the seed network: sigmoid everywhere), ``'sigmoid'`` for ``'bce'`` and
        ``'softmax'`` for ``'cross_entropy'``. Those two losses require those outputs.
    loss : {'mse', 'bce', 'cross_entropy'}
        Per-sample loss: ``1/2 ||a - y||^2``, binary cross-entropy summed over the outputs, or
        categorical cross-entropy. Batch losses are means over the samples.
    dtype : 'float32' or 'float64'
        Precision of parameters, workspaces and results.
    seed : int or None
        Seeds the initial weights and the shuffling in ``fit``.

    Initialization: weights are drawn uniformly from ``[-r, r]`` in float64 and then rounded to
    ``dtype`` (so both dtypes start from the same network), with Glorot's
    ``r = sqrt(6 / (fan_in + fan_out))`` for tanh and identity, ``sqrt(2 / (fan_in + fan_out))``
    for sigmoid (as scikit-learn), ``sqrt(6 / fan_in)`` for relu (He), and
    ``sqrt(6 / (fan_in + fan_out))`` for the softmax output. Biases start at zero.
    """

    def __init__(self, layer_sizes, activation="sigmoid", output_activation=None, loss="mse",
                 dtype="float32", seed=0):
        sizes = V.check_layer_sizes(layer_sizes)
        V.check_choice("activation", activation, HIDDEN_ACTIVATIONS)
        V.check_choice("loss", loss, tuple(LOSSES))
        if output_activation is None:
            output_activation = {"mse": activation, "bce": "sigmoid",
                                 "cross_entropy": "softmax"}[loss]
        V.check_choice("output_activation", output_activation, tuple(ACTIVATIONS))
        required = {"bce": "sigmoid", "cross_entropy": "softmax"}.get(loss)
        if required is not None and output_activation != required:
            raise ValueError(f"loss={loss!r} needs output_activation={required!r} (or None), "
                             f"got {output_activation!r}")
        if output_activation == "softmax" and loss != "cross_entropy":
            raise ValueError("output_activation='softmax' is only supported with "
                             f"loss='cross_entropy', got loss={loss!r}")
        if output_activation == "softmax" and sizes[-1] < 2:
            raise ValueError("a softmax output needs at least 2 units, got layer_sizes[-1] = "
                             f"{sizes[-1]}")
        if seed is not None:
            V.check_int("seed", seed, low=0)
        self.layer_sizes = sizes
        self.activation = activation
        self.output_activation = output_activation
        self.loss_name = loss
        self.dtype = V.check_dtype(dtype)
        self.seed = seed
        codes = [ACTIVATIONS[activation]] * (len(sizes) - 2) + [ACTIVATIONS[output_activation]]
        self._layout, n_params = knet.make_layout(sizes, codes)
        self._loss_code = LOSSES[loss]
        self._rng = np.random.default_rng(seed)
        self._params = np.zeros(n_params, dtype=self.dtype)
        self._make_views()
        self._initialize()

    # ---- parameters ------------------------------------------------------------------------
    def _make_views(self):
        self._weights = _ParamList()
        self._biases = _ParamList()
        for l in range(len(self.layer_sizes) - 1):
            self._weights.append(self._layer_slice(self._params, l)[0])
            self._biases.append(self._layer_slice(self._params, l)[1])

    def _layer_slice(self, buf, l):
        n_in, n_out, w_off, b_off, _ = self._layout[l]
        return (buf[w_off:w_off + n_in * n_out].reshape(n_out, n_in),
                buf[b_off:b_off + n_out])

    def _initialize(self):
        for l, W in enumerate(self._weights):
            n_out, n_in = W.shape
            act = self._layout[l, knet.ACT]
            if act == RELU:
                r = np.sqrt(6.0 / n_in)
            elif act == SIGMOID:
                r = np.sqrt(2.0 / (n_in + n_out))
            else:
                r = np.sqrt(6.0 / (n_in + n_out))
            W[...] = self._rng.uniform(-r, r, size=W.shape)
            self._biases[l][...] = 0

    @property
    def weights(self):
        """Per-layer weights, ``weights[l]`` of shape (n_out, n_in): writable views."""
        return self._weights

    @property
    def biases(self):
        """Per-layer biases, ``biases[l]`` of shape (n_out,): writable views."""
        return self._biases

    @property
    def params(self):
        """The flat parameter buffer (every weight and bias is a view into it)."""
        return self._params

    @property
    def n_layers(self):
        return len(self.layer_sizes) - 1

    @property
    def is_classifier(self):
        return self._loss_code in (BCE, CROSS_ENTROPY)

    def __repr__(self):
        return (f"MLP({self.layer_sizes}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, loss={self.loss_name!r}, "
                f"dtype={self.dtype.name!r}, seed={self.seed!r})")

    # ---- pickling: the views are rebuilt from the flat buffer ------------------------------
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_weights"], state["_biases"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_views()

    # ---- inputs ----------------------------------------------------------------------------
    def _check_X(self, X):
        return V.check_X(X, self.layer_sizes[0], self.dtype)

    def _check_targets(self, Y, n_samples):
        """Targets as a C-contiguous float array (N, n_outputs). 1-D integer labels become
        one-hot rows when the network has more than one output."""
        m = self.layer_sizes[-1]
        arr = np.asarray(Y)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Y must hold real numbers or integer labels, got dtype {arr.dtype}")
        if arr.ndim == 1 and m > 1:
            if arr.shape[0] != n_samples:
                raise ValueError(f"Y has {arr.shape[0]} labels but X has {n_samples} samples")
            if not np.isfinite(arr).all() or np.any(arr != np.round(arr)):
                raise ValueError("Y given as 1-D must hold integer class labels 0.."
                                 f"{m - 1} (the network has {m} outputs)")
            labels = arr.astype(np.int64)
            if labels.min() < 0 or labels.max() >= m:
                raise ValueError(f"Y holds labels from {labels.min()} to {labels.max()}, but "
                                 f"the network has {m} outputs (labels 0..{m - 1})")
            out = np.zeros((n_samples, m), dtype=self.dtype)
            out[np.arange(n_samples), labels] = 1
            return out
        if arr.ndim == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2:
            raise ValueError(f"Y must be 1-D labels or 2-D targets (N, {m}), got shape "
                             f"{arr.shape}")
        if arr.shape[0] != n_samples:
            raise ValueError(f"Y has {arr.shape[0]} samples but X has {n_samples}")
        if arr.shape[1] != m:
            raise ValueError(f"Y has {arr.shape[1]} columns but the network has {m} outputs")
        out = V.as_float_array("Y", arr, self.dtype, (2,))
        if self.is_classifier and (out.min() < 0 or out.max() > 1):
            raise ValueError(f"loss={self.loss_name!r} needs targets in [0, 1], got values "
                             f"from {out.min()} to {out.max()}")
        return out

    # ---- inference -------------------------------------------------------------------------
    def _forward_checked(self, X):
        chunk = min(X.shape[0], PREDICT_CHUNK)
        acts = np.empty(chunk * knet.workspace_size(self._layout), dtype=self.dtype)
        out = np.empty((X.shape[0], self.layer_sizes[-1]), dtype=self.dtype)
        knet.predict_into(out, X, self._params, self._layout, acts, chunk,
                          knet.parallel_threshold())
        return out

    def forward(self, X):
        """Output activations: X (B, n) -> (B, m), or (n,) -> (m,)."""
        X, single = self._check_X(X)
        out = self._forward_checked(X)
        return out[0] if single else out

    def predict(self, X):
        """Outputs for ``loss='mse'``; class labels for the classification losses (argmax of a
        softmax output; ``output > 0.5`` for a sigmoid output with ``bce``)."""
        out = self.forward(X)
        if self._loss_code == CROSS_ENTROPY:
            return np.argmax(out, axis=-1)
        if self._loss_code == BCE:
            labels = (out > 0.5).astype(np.int64)
            return labels[..., 0] if out.shape[-1] == 1 else labels
        return out

    def loss(self, X, Y):
        """Mean over samples of the per-sample loss (a Python float)."""
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        return float(loss_sum(self._forward_checked(X), Y, self._loss_code) / X.shape[0])

    def gradients(self, X, Y):
        """Gradients of ``self.loss(X, Y)``: ``(dWs, dbs)`` shaped like weights and biases."""
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        B = X.shape[0]
        S = knet.workspace_size(self._layout)
        acts = np.empty(B * S, dtype=self.dtype)
        deltas = np.empty(B * S, dtype=self.dtype)
        grads = np.empty_like(self._params)
        min_par = knet.parallel_threshold()
        knet.forward_batch(acts, X, self._params, self._layout, min_par)
        knet.backward_batch(grads, deltas, acts, X, Y, self._params, self._layout,
                            self._loss_code, min_par)
        pairs = [self._layer_slice(grads, l) for l in range(self.n_layers)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    # ---- training --------------------------------------------------------------------------
    def fit(self, X, Y, epochs=1, batch_size=1, lr=0.1, optimizer="sgd", shuffle=True):
        """Train by mini-batch gradient descent; returns ``self``.

        X (N, n); Y (N, m) targets or (N,) integer labels; ``batch_size`` samples per step
        (1: per-sample SGD, the seed algorithm); ``lr`` the learning rate; samples are visited
        in a new random order each epoch when ``shuffle`` (drawn from the model's seeded
        generator), in order otherwise. The workspace is allocated once per call.
        """
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        epochs = V.check_int("epochs", epochs, low=1)
        batch_size = V.check_int("batch_size", batch_size, low=1)
        lr = V.check_positive_float("lr", lr)
        V.check_choice("optimizer", optimizer, OPTIMIZERS)
        N = X.shape[0]
        B = min(batch_size, N)
        S = knet.workspace_size(self._layout)
        grads = np.empty_like(self._params)
        xbuf = np.empty(B * self.layer_sizes[0], dtype=self.dtype)
        ybuf = np.empty(B * self.layer_sizes[-1], dtype=self.dtype)
        acts = np.empty(max(B, 2) * S, dtype=self.dtype)  # batch size 1 needs two samples
        deltas = np.empty(B * S, dtype=self.dtype)
        order = np.arange(N, dtype=np.int64)
        lr_t = self.dtype.type(lr)
        self.loss_curve_ = getattr(self, "loss_curve_", [])
        for _ in range(epochs):
            if shuffle:  # a permutation of 0..N-1, not of last epoch's order: k fits of one
                order[:] = np.arange(N)  # epoch then equal one fit of k epochs
                self._rng.shuffle(order)
            epoch_loss = knet.train_epoch(self._params, grads, X, Y, order, B, lr_t,
                                          self._layout, self._loss_code, xbuf, ybuf, acts,
                                          deltas, knet.parallel_threshold())
            self.loss_curve_.append(float(epoch_loss))
        return self
