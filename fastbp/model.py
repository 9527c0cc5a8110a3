"""``fastbp.MLP``: a multilayer perceptron over the flat-buffer kernels.

The Python layer validates, converts and allocates; the kernels in :mod:`fastbp.kernels` do the
arithmetic. All parameters live in one flat array ``params``; ``weights[l]`` (n_out, n_in) and
``biases[l]`` (n_out,) are views into it, and gradients use a twin buffer of the same layout.
"""
import contextlib
import copy
import functools
import math
import numbers
import threading

import numpy as np

from . import _cache
from . import _validation as V
from . import optim as _optim
from ._threads import get_num_threads, kernel_scope
from .callbacks import EarlyStopping, History, make_callbacks
from .kernels import network as knet
from .kernels.activations import ACTIVATIONS, RELU, SIGMOID
from .kernels.layout import make_layout
from .kernels.losses import BCE, CROSS_ENTROPY, LOSSES, loss_sum
from .training import CACHE_LINE, PREDICT_CHUNK, aligned_zeros, train

HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "identity")
OPTIMIZERS = tuple(_optim.OPTIMIZERS)

# A forward pass over many rows runs in pieces of about PIECE_WORK multiply-adds, so that Python
# gets control every few tens of milliseconds and raises KeyboardInterrupt (docs/robustness.md,
# "Ctrl-C"); an epoch runs in pieces too (fastbp.training).
PIECE_WORK = 1e9


class _TrainingGuard:
    """One model's training is one thread's at a time: ``fit``, ``partial_fit`` and every
    assignment to the model's state (weights, biases, training state, generator) take the
    guard without waiting, and a second thread gets a ``RuntimeError`` at once instead of
    interleaving its updates with the first's. The thread that holds it may still assign (a
    callback restoring the best weights), but not start another training inside its own.
    ``save``, pickling and copying take it too: from another thread they would pair the
    parameters of the middle of an epoch with the counters of the last one (a callback of the
    training thread saves between epochs). Reading (``predict``, ``forward``, ``loss``,
    ``gradients``, ``score``, ``get_training_state``) never takes it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owner = None  # the thread that holds the lock, and what it runs

    @contextlib.contextmanager
    def hold(self, what, trains):
        me = threading.get_ident()
        owner = self._owner
        if owner is not None and owner[0] == me:  # inside this thread's own training
            if trains:
                raise RuntimeError(f"{what}: called during this model's {owner[1]} (from a "
                                   f"callback?); a model trains one run at a time")
            yield
            return
        if not self._lock.acquire(blocking=False):
            running = owner[1] if owner is not None else "training"
            raise RuntimeError(f"{what}: this model is in {running} in another thread; a model "
                               f"is trained, assigned, saved or copied by one thread at a time "
                               f"(predict, forward, loss and gradients may run concurrently; "
                               f"save or copy from a callback of the training; train a copy "
                               f"(copy.deepcopy(net)) to train in parallel)")
        self._owner = (me, what)
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()


def _exclusive(what, trains=False):
    """Run the method under the model's ``_TrainingGuard`` (see there)."""
    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            with self._guard.hold(what, trains):
                return method(self, *args, **kwargs)
        return wrapper
    return decorate


class _ParamList(list):
    """The list behind ``net.weights`` / ``net.biases``: its items are views into the model's
    flat buffer, and ``net.weights[l] = W`` copies ``W`` into that view (after checking its
    shape) instead of replacing the item, under the model's training guard."""

    def __init__(self, guard, name):
        super().__init__()
        self._guard = guard
        self._name = name

    def __setitem__(self, index, value):
        with self._guard.hold(f"{self._name}[{index}] = ...", False):
            self._assign(index, value)

    def _fixed(self, *args, **kwargs):
        # one view per layer, in order: after a del, net.weights[0] = W would write layer 1
        raise TypeError(f"net.{self._name} has one array per layer: assign to its items "
                        f"(net.{self._name}[l] = ...), do not add, remove or reorder them")

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed

    def __reduce__(self):
        # a copy or pickle of the list is a plain list of the arrays (copy.deepcopy(net.weights)
        # snapshots the weights), not tied to the model's buffer and guard
        return list, (list(self),)

    def _assign(self, index, value):
        if not isinstance(index, (int, np.integer)) or isinstance(index, (bool, np.bool_)):
            raise TypeError("assign one layer at a time: net.weights[l] = W")
        view = list.__getitem__(self, index)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"layer {index} expects an array of shape {view.shape}, "
                             f"got {value.shape}")
        if value.dtype.kind not in "biuf":
            raise TypeError(f"layer {index}: values must be real numbers, got dtype "
                            f"{value.dtype}")
        with np.errstate(over="ignore"):
            cast = value.astype(view.dtype)
        if not np.isfinite(cast).all():
            raise ValueError(f"layer {index}: values must be finite in {view.dtype} (NaN, "
                             f"infinity or beyond the dtype's range)")
        view[...] = cast


def _architecture(name, key, doc, convert=None):
    """A read-only attribute of the architecture, stored as ``_<name>``: the layout table, the
    parameter buffer and its views are built from it once, so assigning it (or deleting it)
    raises ``AttributeError`` instead of leaving the kernels on a stale layout (out-of-bounds
    reads, since numba does not bounds-check) and ``save`` writing a file ``load`` rejects.
    ``convert``: applied to the stored value on each read (``list`` of a tuple: a fresh copy)."""
    attr = "_" + name

    def get(self):
        value = getattr(self, attr)
        return value if convert is None else convert(value)

    def refuse(self, value=None):
        raise AttributeError(f"MLP.{name} is read-only: the network's layout and parameters "
                             f"were built for it; build another network, e.g. "
                             f"MLP(**dict(net.get_config(), {key}=...))")

    return property(get, refuse, refuse, doc)


def _generator(state, name):
    """A ``np.random.Generator`` restored from ``state`` (a ``bit_generator.state`` dict);
    errors name ``name`` and say what NumPy refused."""
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise TypeError(f"{name} must be a dict as numpy's bit_generator.state, got "
                        f"{type(state).__name__}")
    kind = state["bit_generator"]
    if not isinstance(kind, str) or kind not in ("PCG64", "PCG64DXSM", "MT19937", "Philox",
                                                 "SFC64"):
        raise ValueError(f"{name}: unknown bit generator {kind!r}")
    bitgen = getattr(np.random, kind)()
    try:
        bitgen.state = copy.deepcopy(state)
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        error = TypeError if isinstance(exc, TypeError) else ValueError
        raise error(f"{name} is not a valid {kind} state: {type(exc).__name__}: {exc}") from None
    return np.random.Generator(bitgen)


def _check_config(layer_sizes, activation, output_activation, loss, dtype, seed):
    """The constructor's arguments checked: ``(sizes, output_activation, dtype)`` with the
    default output activation filled in and the dtype as a ``np.dtype``."""
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
    return sizes, output_activation, V.check_dtype(dtype)


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

    Notes
    -----
    Initialization: weights are drawn uniformly from ``[-r, r]`` in float64 and then rounded to
    ``dtype`` (so both dtypes start from the same network), with Glorot's
    ``r = sqrt(6 / (fan_in + fan_out))`` for tanh and identity, ``sqrt(2 / (fan_in + fan_out))``
    for sigmoid (as scikit-learn), ``sqrt(6 / fan_in)`` for relu (He), and
    ``sqrt(6 / (fan_in + fan_out))`` for the softmax output. Biases start at zero.
    """

    def __init__(self, layer_sizes, activation="sigmoid", output_activation=None, loss="mse",
                 dtype="float32", seed=0):
        sizes, output_activation, dtype = _check_config(layer_sizes, activation,
                                                        output_activation, loss, dtype, seed)
        # the architecture, read-only: the layout and the parameter buffer are built from it
        self._layer_sizes = tuple(sizes)
        self._activation = activation
        self._output_activation = output_activation
        self._loss_name = loss
        self._dtype = dtype
        self._seed = seed
        codes = [ACTIVATIONS[activation]] * (len(sizes) - 2) + [ACTIVATIONS[output_activation]]
        pairs = list(zip(sizes[:-1], sizes[1:]))
        n_params = sum(a * b + b for a, b in pairs)  # Python ints: no overflow
        V.check_memory(n_params * self.dtype.itemsize + max(a * b for a, b in pairs) * 8,
                       f"MLP({sizes}) with {n_params:,} {self.dtype.name} parameters")
        self._layout, n_params = make_layout(sizes, codes)
        self._loss_code = LOSSES[loss]
        self._rng = np.random.default_rng(seed)
        self._guard = _TrainingGuard()
        self._params = aligned_zeros(n_params, self.dtype)
        self._make_views()
        self._initialize()
        self._reset_training_state()

    # ---- the architecture, read-only (see _architecture) -------------------------------------
    # a new list at each access: changing it in place cannot reach the layout
    layer_sizes = _architecture("layer_sizes", "layer_sizes",
                                "``[n_inputs, hidden_1, ..., n_outputs]`` (a new list each time).",
                                convert=list)
    activation = _architecture("activation", "activation", "Activation of the hidden layers.")
    output_activation = _architecture("output_activation", "output_activation",
                                      "Activation of the output layer.")
    loss_name = _architecture("loss_name", "loss", "The loss: 'mse', 'bce' or 'cross_entropy'.")
    dtype = _architecture("dtype", "dtype", "The ``np.dtype`` of parameters and results.")
    seed = _architecture("seed", "seed", "The seed the network was built with (or None).")

    def _check_consistent(self):
        """Raise ``ValueError`` unless the architecture attributes (what ``get_config()``
        writes) describe this network's layout and parameter buffer: they can disagree only
        through private attributes, and ``save`` must not write a config that ``load`` rejects
        or rebuilds as another network."""
        config = {key: getattr(self, "_" + name) for key, name in (
            ("layer_sizes", "layer_sizes"), ("activation", "activation"),
            ("output_activation", "output_activation"), ("loss", "loss_name"),
            ("dtype", "dtype"), ("seed", "seed"))}
        try:
            sizes, output, dtype = _check_config(**config)
            codes = [ACTIVATIONS[config["activation"]]] * (len(sizes) - 2) + [ACTIVATIONS[output]]
            layout, n_params = make_layout(sizes, codes)
            if (output != config["output_activation"] or dtype != self._params.dtype
                    or LOSSES[config["loss"]] != self._loss_code
                    or n_params != self._params.shape[0]
                    or not np.array_equal(layout, self._layout)):
                raise ValueError("they describe another layout or parameter buffer")
        except (TypeError, ValueError) as exc:
            raise ValueError(f"cannot save this network: its configuration {config} does not "
                             f"describe its layout and parameters ({exc}); were private "
                             "attributes assigned?") from None

    # ---- parameters ------------------------------------------------------------------------
    def _make_views(self):
        self._weights = _ParamList(self._guard, "weights")
        self._biases = _ParamList(self._guard, "biases")
        for l in range(len(self._layer_sizes) - 1):
            list.append(self._weights, self._layer_slice(self._params, l)[0])
            list.append(self._biases, self._layer_slice(self._params, l)[1])

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

    def _check_finite_params(self, what):
        """``ValueError`` naming the first layer and entry that is NaN or infinite: writes
        through the views (``net.weights[l][...] = x``, ``net.params[...] = x``) are not
        checked, and the kernels would turn such a value into silent garbage (labels of 0) or
        into a divergence blamed on training. A vectorized scan, at the entry of a call."""
        k = V._first_nonfinite(self._params)
        if k < 0:
            return
        for l in range(self.n_layers):
            n_in, n_out, w_off, b_off, _ = (int(v) for v in self._layout[l])
            if k < b_off + n_out:
                break
        if k < b_off:
            part, where = "weights", divmod(k - w_off, n_in)
        else:
            part, where = "biases", (k - b_off,)
        raise ValueError(f"{what}: the {part} of layer {l} must be finite (no NaN or "
                         f"infinity), but net.{part}[{l}] holds {self._params[k]} at index "
                         f"{where} (written through a view or net.params? net.{part}[{l}] = ... "
                         f"checks the values it assigns)")

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
        return len(self._layer_sizes) - 1

    @property
    def is_classifier(self):
        return self._loss_code in (BCE, CROSS_ENTROPY)

    def __repr__(self):
        return (f"MLP({self.layer_sizes}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, loss={self.loss_name!r}, "
                f"dtype={self.dtype.name!r}, seed={self.seed!r})")

    def get_config(self):
        """The constructor arguments as plain data: ``MLP(**net.get_config())`` builds a network
        of the same architecture (freshly initialized)."""
        return {"layer_sizes": list(self.layer_sizes), "activation": self.activation,
                "output_activation": self.output_activation, "loss": self.loss_name,
                "dtype": self.dtype.name, "seed": self.seed}

    # ---- persistence (fastbp.io): an .npz without pickled objects ---------------------------
    def save(self, path, metadata=None, comm=None):
        """Write the network (parameters, architecture, dtype, optimizer state, history) to
        ``path`` atomically; ``fastbp.load(path)`` restores it, and ``partial_fit`` on the
        loaded network continues training exactly. ``metadata``: an optional dict of plain data
        kept in the file (:func:`fastbp.io.load_metadata`). ``comm``: after data-parallel
        training, rank 0 writes and every rank returns once the file is there. See
        :mod:`fastbp.io`. While another thread trains this model, ``save`` raises
        ``RuntimeError`` (the file would pair mid-epoch parameters with the last epoch's
        counters): save from a callback (``fit(callbacks=[lambda e, h, m: m.save(path)])``),
        which runs between epochs, or after training."""
        from . import io
        if comm is None or comm.Get_rank() == 0:
            io.save(self, path, metadata)
        if comm is not None and comm.Get_size() > 1:
            comm.Barrier()

    # ---- pickling: the views are rebuilt from the flat buffer ------------------------------
    def _snapshot(self, memo=None):
        """The state to pickle or copy, deep-copied under the training guard: another thread's
        training cannot run meanwhile (parameters of the middle of an epoch with the counters of
        the last one), nor start before the copy is taken."""
        with self._guard.hold("copying or pickling the model", False):
            state = {key: value for key, value in self.__dict__.items()
                     if key not in ("_weights", "_biases", "_guard")}
            return copy.deepcopy(state, memo)

    def __getstate__(self):
        return self._snapshot()

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__setstate__(self._snapshot(memo))
        return new

    def __setstate__(self, state):
        # pickles of fastbp before the architecture became read-only hold it as public names
        for name in ("layer_sizes", "activation", "output_activation", "loss_name", "dtype",
                     "seed"):
            if name in state:
                state["_" + name] = state.pop(name)
        state["_layer_sizes"] = tuple(state["_layer_sizes"])
        self.__dict__.update(state)
        self._guard = _TrainingGuard()
        # Unpickling can hand back read-only arrays (joblib and scikit-learn load them as
        # read-only memory maps): the kernels write the parameters, and take one array type.
        for name in ("_params", "_layout"):
            arr = getattr(self, name)
            if not (arr.flags.writeable and arr.flags.c_contiguous and arr.flags.aligned):
                setattr(self, name, np.array(arr, order="C", copy=True))
        if self._params.ctypes.data % CACHE_LINE:
            params = aligned_zeros(self._params.shape[0], self._params.dtype)
            params[...] = self._params
            self._params = params
        self._make_views()

    # ---- inputs ----------------------------------------------------------------------------
    def _check_X(self, X):
        return V.check_X(X, self._layer_sizes[0], self._dtype)

    def _check_targets(self, Y, n_samples):
        """Targets as a C-contiguous float array (N, n_outputs). 1-D integer labels become
        one-hot rows when the network has more than one output."""
        m = self._layer_sizes[-1]
        if isinstance(Y, np.ma.MaskedArray) and np.ma.is_masked(Y):
            raise ValueError("Y has masked entries; fill them first (Y.filled(value))")
        try:
            arr = np.asarray(Y)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"Y must be an array of numbers or integer labels, got "
                            f"{type(Y).__name__}: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"Y must hold real numbers or integer labels, got dtype {arr.dtype}")
        if arr.ndim == 1 and m > 1:
            if arr.shape[0] != n_samples:
                raise ValueError(f"Y has {arr.shape[0]} labels but X has {n_samples} samples")
            if arr.dtype.kind == "f" and (not np.isfinite(arr).all()
                                          or np.any(arr != np.round(arr))):
                raise ValueError("Y given as 1-D must hold integer class labels 0.."
                                 f"{m - 1} (the network has {m} outputs)")
            low, high = arr.min(), arr.max()  # compared before any cast: no wrap-around
            if low < 0 or high >= m:
                raise ValueError(f"Y holds labels from {low} to {high}, but the network has "
                                 f"{m} outputs (labels 0..{m - 1})")
            labels = arr.astype(np.int64)
            V.check_memory(n_samples * m * self.dtype.itemsize,
                           f"one-hot targets for {n_samples:,} labels of {m:,} classes")
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
        S = knet.workspace_size(self._layout)
        m = self._layer_sizes[-1]
        V.check_memory((chunk * S + X.shape[0] * m) * self.dtype.itemsize,
                       f"the forward pass of {X.shape[0]:,} samples ({X.shape[0]:,} x "
                       f"{m:,} outputs, {chunk:,} x {S:,} activations)")
        acts = np.empty(chunk * S, dtype=self.dtype)
        out = np.empty((X.shape[0], m), dtype=self.dtype)
        _cache.require("predict", self.dtype)
        # whole chunks, about PIECE_WORK multiply-adds a call (Ctrl-C; the rows are independent)
        rows = chunk * max(1, int(PIECE_WORK / self._params.shape[0]) // chunk)
        with kernel_scope() as min_par:
            for start in range(0, X.shape[0], rows):
                stop = min(start + rows, X.shape[0])
                knet.predict_into(out[start:stop], X[start:stop], self._params, self._layout,
                                  acts, chunk, min_par)
        return out

    def forward(self, X):
        """Output activations: X (B, n) -> (B, m), or (n,) -> (m,)."""
        X, single = self._check_X(X)
        out = self._forward_checked(X)
        return out[0] if single else out

    def predict(self, X):
        """Outputs for ``loss='mse'``; class labels for the classification losses (argmax of a
        softmax output; ``output > 0.5`` for a sigmoid output with ``bce``)."""
        self._check_finite_params("MLP.predict")
        out = self.forward(X)
        if self._loss_code == CROSS_ENTROPY:
            return np.argmax(out, axis=-1)
        if self._loss_code == BCE:
            labels = (out > 0.5).astype(np.int64)
            return labels[..., 0] if out.shape[-1] == 1 else labels
        return out

    def loss(self, X, Y):
        """Mean over samples of the per-sample loss (a Python float)."""
        self._check_finite_params("MLP.loss")
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        return float(loss_sum(self._forward_checked(X), Y, self._loss_code) / X.shape[0])

    def gradients(self, X, Y):
        """Gradients of ``self.loss(X, Y)``: ``(dWs, dbs)`` shaped like weights and biases."""
        self._check_finite_params("MLP.gradients")
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        B = X.shape[0]
        S = knet.workspace_size(self._layout)
        V.check_memory((2 * B * S + self._params.shape[0]) * self.dtype.itemsize,
                       f"gradients of a batch of {B:,} samples ({B:,} x {S:,} activations and "
                       f"as many deltas, {self._params.shape[0]:,} gradients)")
        acts = np.empty(B * S, dtype=self.dtype)
        deltas = np.empty(B * S, dtype=self.dtype)
        grads = np.empty_like(self._params)
        _cache.require("gradients", self.dtype)
        with kernel_scope() as min_par:
            knet.forward_batch(acts, X, self._params, self._layout, min_par)
            knet.backward_batch(grads, deltas, acts, X, Y, self._params, self._layout,
                                self._loss_code, min_par)
        pairs = [self._layer_slice(grads, l) for l in range(self.n_layers)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    # ---- classification and regression scores --------------------------------------------
    def predict_proba(self, X):
        """Class probabilities, for the classification losses: the softmax outputs (B, m) for
        ``cross_entropy``; for ``bce`` with one output ``[1 - p, p]`` (B, 2) (as scikit-learn),
        with several outputs the per-output probabilities (B, m)."""
        if not self.is_classifier:
            raise ValueError("predict_proba needs a classification loss ('bce' or "
                             f"'cross_entropy'); this network has loss={self.loss_name!r}")
        self._check_finite_params("MLP.predict_proba")
        out = self.forward(X)
        if self._loss_code == BCE and out.shape[-1] == 1:
            p = out[..., 0]
            return np.stack([1 - p, p], axis=-1)
        return out

    def score(self, X, Y, sample_weight=None):
        """Accuracy for the classification losses (``cross_entropy``: argmax against the labels
        or the argmax of one-hot ``Y``; ``bce``: every output thresholded at 0.5 must match, i.e.
        subset accuracy), R^2 for ``mse`` (averaged uniformly over the outputs, as scikit-learn's
        ``r2_score``); weighted by ``sample_weight`` when given. Returns a Python float."""
        self._check_finite_params("MLP.score")
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        return self._metric(self._forward_checked(X), Y, sw)

    @property
    def metric_name(self):
        """What ``score`` and the validation metric measure: ``'accuracy'`` or ``'r2'``."""
        return "accuracy" if self.is_classifier else "r2"

    def _metric(self, out, Y, sw):
        """Accuracy or R^2 of outputs ``out`` against checked targets ``Y`` (N, m)."""
        if self._loss_code == CROSS_ENTROPY:
            correct = np.argmax(out, axis=1) == np.argmax(Y, axis=1)
        elif self._loss_code == BCE:
            correct = np.all((out > 0.5) == (Y > 0.5), axis=1)
        else:
            return _r2(out, Y, sw)
        return float(np.average(correct, weights=sw))

    # ---- training --------------------------------------------------------------------------
    def _reset_training_state(self):
        """Counters and records of training (see ``get_training_state``)."""
        self.n_epochs_ = 0  # epochs trained, over all fits
        self.n_steps_ = 0  # optimizer updates (batches), over all fits
        self.loss_curve_ = []  # training loss of every epoch, over all fits
        self.optimizer_ = None  # the live optimizer of the last fit / partial_fit
        self.history_ = None  # History of the last fit (partial_fit appends to it)

    @_exclusive("MLP.fit", trains=True)
    def fit(self, X, Y, epochs=1, batch_size=1, lr=None, optimizer="sgd", shuffle=True, *,
            random_state=None, validation_data=None, validation_split=0.0, early_stopping=None,
            callbacks=(), sample_weight=None, progress=False, verbose=0, deterministic=False,
            hogwild=False, on_divergence="raise", comm=None, sharded=False):
        """Train from the current weights by mini-batch gradient descent; returns a
        :class:`~fastbp.callbacks.History` (also kept as ``net.history_``).

        Parameters
        ----------
        X : (N, n) array
            The inputs.
        Y : (N, m) array or (N,) integer array
            Targets, or integer class labels (one-hot encoded inside).
        epochs : int
            Passes over the data.
        batch_size : int
            Samples per update (1: per-sample SGD, the seed algorithm; the last batch of an
            epoch may be smaller).
        lr : float or None
            The base learning rate with an optimizer given by name; ``None``: the optimizer's
            default (0.1 for 'sgd', 0.001 for 'adam' and 'adamw').
        optimizer : str, Optimizer or dict
            'sgd', 'adam', 'adamw', a :mod:`fastbp.optim` optimizer object (used as a
            template: training uses a copy with fresh state, ``net.optimizer_``) or a config
            dict such as ``{"name": "sgd", "momentum": 0.9}``. Each ``fit`` starts the optimizer
            afresh (its moments, step count and schedule); ``partial_fit`` continues it.
        shuffle : bool
            Visit the samples in a new random order each epoch, drawn from the model's
            generator (seeded by ``MLP(seed=...)``, or by ``random_state``).
        random_state : int or None
            An int reseeds the model's generator before training (so the shuffles and the
            validation split are reproducible); None continues it.
        validation_data : tuple or None
            ``(X_val, Y_val)`` or ``(X_val, Y_val, sample_weight_val)``, evaluated after each
            epoch (loss and metric into the history).
        validation_split : float
            Fraction in [0, 1) of the samples held out (chosen at random from the model's
            generator) as validation data; not with ``validation_data``.
        early_stopping : None, bool, int or EarlyStopping
            None, True (``EarlyStopping()``: patience 10 on the validation loss, or the
            training loss without validation data, restoring the best weights), an int (the
            patience) or a :class:`~fastbp.callbacks.EarlyStopping`.
        callbacks : sequence
            Callbacks (:class:`~fastbp.callbacks.Callback` objects or functions
            ``f(epoch, history, model)``) called after each epoch; a truthy return stops.
        sample_weight : (N,) array or None
            Non-negative weights of each sample's loss: a batch's loss is
            ``sum_b w_b loss_b / sum_b w_b`` (scikit-learn's convention).
        progress : bool
            Draw a progress bar per epoch (tqdm if installed, else a text bar).
        verbose : int
            1 prints one line per epoch.
        deterministic : bool
            Results that cannot depend on the thread count. Every kernel splits its
            work among threads by ownership (no atomics, no cross-thread reductions), so results
            already do not depend on the number of threads; what the thread count does change
            is whether a small layer runs its serial or its threaded compilation (with 1 thread:
            always serial). The two compile the same loops and agree bitwise in the tests, but
            that is the compiler's choice; ``deterministic=True`` makes the choice by work size
            only, whatever the thread count, so that no result depends on it.
        hogwild : bool
            Lock-free parallel per-sample SGD ("Hogwild!", Niu et al. 2011): with
            ``batch_size=1`` and plain SGD, each of fastbp's threads trains on its own share of
            the epoch's samples, all updating the shared weights without locks. Faster on
            several cores, but not reproducible (updates of different threads may overwrite
            each other). With one thread it is the ordinary per-sample path.
        on_divergence : {'raise', 'stop'}
            What happens when an epoch ends with a NaN or infinite loss or weights. Either way
            the epoch is undone: the weights, the optimizer state and the model's generator go
            back to what they were when that epoch began (the last finite ones), and the epoch
            is not recorded. ``'raise'`` (the default) then raises
            ``FloatingPointError``; ``'stop'`` ends training quietly and sets
            ``history.diverged_epoch`` to that epoch's number.
        comm : mpi4py communicator or None
            Data-parallel training over the communicator's processes (``MPI.COMM_WORLD``;
            ``mpiexec -n 4 python -m mpi4py train.py``): every rank calls ``fit`` with the same
            arguments, takes its share of each global batch of ``batch_size`` samples, the
            gradients are averaged over all ranks (weighted by sample counts or weights: the
            exact mean of the global batch) and every rank takes the same step; the weights stay
            the same on every rank (rank 0's model is the start). ``None``: this process alone.
            See the user guide's page on MPI.
        sharded : bool
            With ``comm``: each rank passes only its own rows (sizes may differ) instead of the
            whole data set on every rank.

        Returns
        -------
        History
            The per-epoch records of this fit, also ``net.history_``.

        Notes
        -----
        Reproducibility: with the same seed/random_state and arguments, two fits give bitwise
        identical weights. Results change with the dtype, with the batch size, with the kernel
        path (plain SGD runs the fused kernels of ``kernels.network.train_epoch``; momentum,
        weight decay, Adam or sample weights run ``kernels.train.train_segment``) and may
        change across CPUs (vector width) and numba/LLVM versions, as the compiler may reorder
        sums (fastmath ``reassoc``).
        """
        self._check_finite_params("MLP.fit")
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        epochs = V.check_int("epochs", epochs, low=1)
        run = self._check_run_options(batch_size, shuffle, progress, verbose, deterministic,
                                      hogwild, on_divergence, comm, sharded)
        opt = _optim.make_optimizer(optimizer, lr=lr)
        if run["comm"] is not None and (run["hogwild"] or validation_split and run["sharded"]):
            raise ValueError("with comm: no hogwild, and no validation_split of sharded data "
                             "(give validation_data)")
        if run["hogwild"] and (run["batch_size"] != 1 or not opt.is_plain_sgd()
                               or sw is not None or run["progress"]):
            raise ValueError("hogwild=True needs batch_size=1 and plain SGD (no momentum, "
                             "weight decay or schedule), without sample_weight or progress")
        if isinstance(validation_split, (bool, np.bool_)):
            raise TypeError(f"validation_split must be a fraction in [0, 1), got "
                            f"{validation_split!r}")
        validation_split = V.check_positive_float("validation_split", validation_split,
                                                  allow_zero=True)
        if validation_split >= 1:
            raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
        if validation_split > 0 and validation_data is not None:
            raise ValueError("give validation_data or validation_split, not both")
        val = None
        if validation_data is not None:
            val = self._check_validation_data(validation_data)
        callbacks = make_callbacks(callbacks, early_stopping)
        if random_state is not None:
            V.check_int("random_state", random_state, low=0)
        # The generator becomes the model's only once every check has passed: a rejected call
        # leaves the model's state (generator included) as it was.
        rng = self._rng if random_state is None else np.random.default_rng(random_state)
        rng_state = rng.bit_generator.state
        try:
            if validation_split > 0:
                N = X.shape[0]
                n_val = math.ceil(N * validation_split)
                if n_val >= N:
                    raise ValueError(f"validation_split={validation_split} leaves no training "
                                     f"samples out of {N}")
                perm = rng.permutation(N)
                vi, ti = np.sort(perm[:n_val]), np.sort(perm[n_val:])
                val = (X[vi], Y[vi], None if sw is None else sw[vi])
                X, Y, sw = X[ti], Y[ti], (None if sw is None else sw[ti])
                if sw is not None and not sw.sum() > 0:
                    raise ValueError("sample_weight is zero on every training sample left "
                                     "after validation_split")
            self._check_training(X, sw, val, callbacks, opt, run)
        except BaseException:
            rng.bit_generator.state = rng_state
            raise
        self._rng = rng
        self.optimizer_ = opt
        self.history_ = History(self.metric_name)
        train(self, X, Y, sw, val, epochs, callbacks, **run)
        return self.history_

    @_exclusive("MLP.partial_fit", trains=True)
    def partial_fit(self, X, Y, *, batch_size=1, lr=None, optimizer=None, shuffle=True,
                    sample_weight=None, validation_data=None, callbacks=(), progress=False,
                    verbose=0, deterministic=False, on_divergence="raise", comm=None,
                    sharded=False):
        """One epoch over (X, Y) that continues the training state; returns ``self``.

        The optimizer in ``net.optimizer_`` continues (its moments, step and epoch counters, the
        schedule), shuffling continues the model's generator, and the epoch is appended to
        ``net.history_``: ``k`` calls give bitwise the weights of one ``fit`` of ``k`` epochs
        with the same arguments (from the same starting state, same dtype).

        Parameters
        ----------
        optimizer : None, str, Optimizer or dict
            None continues ``net.optimizer_`` (the first call starts SGD, or what ``lr``
            says); an optimizer (name, object or dict) whose configuration equals the current
            one's also continues it; a different one starts fresh.
        lr : float or None
            With ``optimizer=None``, sets the base learning rate of the continuing optimizer
            (its state is kept); with a name, as in ``fit``.
        X, Y, batch_size, shuffle, sample_weight, validation_data, callbacks
            As in :meth:`fit`.
        progress, verbose, deterministic, on_divergence, comm, sharded
            As in :meth:`fit`.

        Returns
        -------
        MLP
            ``self``.
        """
        self._check_finite_params("MLP.partial_fit")
        X, _ = self._check_X(X)
        Y = self._check_targets(Y, X.shape[0])
        sw = self._check_sample_weight(sample_weight, X.shape[0])
        run = self._check_run_options(batch_size, shuffle, progress, verbose, deterministic,
                                      on_divergence=on_divergence, comm=comm, sharded=sharded)
        current, new_lr = self.optimizer_, None
        if optimizer is None:
            if current is None:
                current = _optim.make_optimizer("sgd", lr=lr)
            elif lr is not None:  # set below, once every argument has passed its checks
                new_lr = _optim._check_real("lr", lr, low=0.0, low_open=True)
        else:
            new = _optim.make_optimizer(optimizer, lr=lr)
            if current is None or new.get_config() != current.get_config():
                current = new
        val = None
        if validation_data is not None:
            val = self._check_validation_data(validation_data)
        callbacks = make_callbacks(callbacks, None)
        self._check_training(X, sw, val, callbacks, current, run, new_lr)
        if new_lr is not None:
            current.lr = new_lr
        self.optimizer_ = current
        if self.history_ is None:
            self.history_ = History(self.metric_name)
        train(self, X, Y, sw, val, 1, callbacks, **run)
        return self

    # ---- training state as plain data -------------------------------------------------------
    @property
    def rng_state(self):
        """State of the model's generator (shuffling, validation splits) as a plain dict
        (NumPy's ``bit_generator.state``); assign such a dict to restore it."""
        return copy.deepcopy(self._rng.bit_generator.state)

    @rng_state.setter
    @_exclusive("MLP.rng_state = ...")
    def rng_state(self, state):
        self._rng = _generator(state, "rng_state")

    def get_training_state(self):
        """Everything besides ``params`` that training continues from, as plain data:
        ``n_epochs``, ``n_steps`` (ints), ``rng_state`` (dict), ``loss_curve`` (list),
        ``optimizer_config`` (flat dict of scalars and strings, or None),
        ``optimizer_state`` (dict of NumPy arrays) and ``history`` (dict of lists, or None).
        ``set_training_state`` of that (on a network with the same params) resumes exactly."""
        opt = self.optimizer_
        return {"n_epochs": int(self.n_epochs_), "n_steps": int(self.n_steps_),
                "rng_state": self.rng_state, "loss_curve": list(self.loss_curve_),
                "optimizer_config": None if opt is None else opt.get_config(),
                "optimizer_state": {} if opt is None else opt.state_arrays(),
                "history": None if self.history_ is None else self.history_.to_dict()}

    @_exclusive("MLP.set_training_state")
    def set_training_state(self, state):
        """Restore what ``get_training_state`` returned. Every field is checked before any is
        assigned: a rejected state leaves the model's training state as it was, and the error
        names the field."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        missing = {"n_epochs", "n_steps", "rng_state", "optimizer_config",
                   "optimizer_state"} - set(state)
        if missing:
            raise ValueError(f"training state lacks {sorted(missing)}")
        n_epochs = V.check_int("n_epochs", state["n_epochs"], low=0)
        n_steps = V.check_int("n_steps", state["n_steps"], low=0)
        rng = _generator(state["rng_state"], "rng_state")
        opt = None
        if state["optimizer_config"] is not None:
            try:
                opt = _optim.make_optimizer(state["optimizer_config"])
            except (TypeError, ValueError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"optimizer_config: {exc}") from None
            try:
                opt.load_state_arrays(dict(state["optimizer_state"]))
                opt._bind(self._params.shape[0], self.dtype)
            except (TypeError, ValueError, OverflowError) as exc:
                kind = TypeError if isinstance(exc, TypeError) else ValueError
                raise kind(f"optimizer_state: {exc}") from None
        curve = state.get("loss_curve", [])
        if not isinstance(curve, (list, tuple, np.ndarray)):
            raise TypeError(f"loss_curve must be a list of numbers, got {type(curve).__name__}")
        for k, value in enumerate(curve):
            if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
                raise TypeError(f"loss_curve[{k}] must be a real number, got {value!r}")
        hist = state.get("history")
        hist = None if hist is None else History.from_dict(hist)
        # everything checked: assign
        self._rng = rng
        self.n_epochs_, self.n_steps_ = n_epochs, n_steps
        self.optimizer_ = opt
        self.loss_curve_ = [float(v) for v in curve]
        self.history_ = hist

    # ---- training internals -----------------------------------------------------------------
    def _check_sample_weight(self, sample_weight, n_samples, name="sample_weight"):
        """None, or (N,) non-negative finite weights of the model's dtype, not all zero."""
        if sample_weight is None:
            return None
        sw = V.as_float_array(name, sample_weight, self.dtype, (1,))
        if sw.shape[0] != n_samples:
            raise ValueError(f"{name} has {sw.shape[0]} entries but X has {n_samples} samples")
        if (sw < 0).any():
            raise ValueError(f"{name} must be >= 0, got a minimum of {sw.min()}")
        if not sw.sum(dtype=np.float64) > 0:
            raise ValueError(f"{name} is zero everywhere; at least one sample needs weight")
        return sw

    def _check_validation_data(self, data):
        if not isinstance(data, (tuple, list)) or len(data) not in (2, 3):
            raise TypeError("validation_data must be a tuple (X_val, Y_val) or (X_val, Y_val, "
                            f"sample_weight_val), got {type(data).__name__}")
        try:
            Xv, _ = self._check_X(data[0])
            Yv = self._check_targets(data[1], Xv.shape[0])
            swv = self._check_sample_weight(data[2] if len(data) == 3 else None, Xv.shape[0])
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"validation_data: {exc}") from None
        return Xv, Yv, swv

    def _check_run_options(self, batch_size, shuffle, progress, verbose, deterministic,
                           hogwild=False, on_divergence="raise", comm=None, sharded=False):
        batch_size = V.check_int("batch_size", batch_size, low=1)
        for name, value in (("shuffle", shuffle), ("progress", progress),
                            ("deterministic", deterministic), ("hogwild", hogwild),
                            ("sharded", sharded)):
            if not isinstance(value, (bool, np.bool_)):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        if not isinstance(verbose, (bool, np.bool_)):
            V.check_int("verbose", verbose, low=0)
        V.check_choice("on_divergence", on_divergence, ("raise", "stop"))
        if comm is not None and not all(hasattr(comm, m) for m in ("Get_rank", "Get_size",
                                                                    "bcast", "allreduce")):
            raise TypeError("comm must be an MPI communicator (mpi4py, e.g. MPI.COMM_WORLD) or "
                            f"None, got {type(comm).__name__}")
        if sharded and comm is None:
            raise ValueError("sharded=True needs comm (an MPI communicator)")
        return {"batch_size": batch_size, "shuffle": bool(shuffle), "progress": bool(progress),
                "verbose": int(verbose), "deterministic": bool(deterministic),
                "hogwild": bool(hogwild), "on_divergence": on_divergence, "comm": comm,
                "sharded": bool(sharded)}

    def _check_training(self, X, sw, val, callbacks, opt, run, lr=None):
        """The checks that need the whole training setup, made before ``fit``/``partial_fit``
        change any state: the rate (``lr``, or the optimizer's) in the network's dtype,
        validation data for the callbacks and schedule that watch it, and the memory of the
        training buffers (``fastbp.training``): ``MemoryError`` before anything is
        allocated."""
        lr = opt.lr if lr is None else lr
        if self.dtype.type(lr) == 0:  # positive, checked; but below the dtype's least number
            raise ValueError(f"lr={lr!r} is 0 in {self.dtype} (its least positive number is "
                             f"{float(np.finfo(self.dtype).smallest_subnormal):.2g}): no step would "
                             f"change the parameters")
        if val is None:
            needs = [f"EarlyStopping(monitor={cb.monitor!r})" for cb in callbacks
                     if isinstance(cb, EarlyStopping) and cb.monitor.startswith("val")]
            if isinstance(opt.schedule, _optim.ReduceLROnPlateau) and \
                    opt.schedule.monitor == "val_loss":
                needs.append("ReduceLROnPlateau(monitor='val_loss')")
            if needs:
                raise ValueError(f"{needs[0]} needs validation data: give validation_data or "
                                 "validation_split")
        N = X.shape[0]
        sizes = self._layer_sizes
        P, n0, m = self._params.shape[0], sizes[0], sizes[-1]
        B = min(run["batch_size"], N)
        S = knet.workspace_size(self._layout)
        weighted, hogwild = sw is not None, run["hogwild"]
        n_buf = len(opt._needed_buffers())
        fresh = sum(1 for k in opt._needed_buffers() if opt._state.get(k) is None)
        elems = (P * (2 + n_buf + fresh)  # gradients, snapshots, new optimizer state
                 + B * (n0 + m + sizes[1]) + max(B, 2) * S + B * S
                 + (B if weighted else 0)
                 + (3 * S * max(1, min(get_num_threads(), N)) if hogwild else 0))
        if val is not None:
            elems += val[0].shape[0] * m + min(val[0].shape[0], PREDICT_CHUNK) * S
        V.check_memory(elems * self.dtype.itemsize + 16 * N,
                       f"training {self.layer_sizes} ({P:,} parameters) on {N:,} samples in "
                       f"batches of {B:,} ({S:,} activations per sample)")


def _r2(pred, Y, sw):
    """Coefficient of determination, averaged uniformly over the outputs (scikit-learn's
    ``r2_score`` with ``multioutput='uniform_average'``); a constant target column scores 1 when
    predicted exactly, else 0."""
    pred = np.asarray(pred, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    w = np.ones(Y.shape[0]) if sw is None else np.asarray(sw, dtype=np.float64)
    w = w[:, None]
    mean = (w * Y).sum(axis=0) / w.sum()
    ss_res = (w * (Y - pred) ** 2).sum(axis=0)
    ss_tot = (w * (Y - mean) ** 2).sum(axis=0)
    scores = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1),
                      np.where(ss_res == 0, 1.0, 0.0))
    return float(scores.mean())
