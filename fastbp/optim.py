"""Optimizers and learning-rate schedules for ``MLP.fit`` / ``MLP.partial_fit``.

Optimizers: :class:`SGD` (optionally momentum, Nesterov), :class:`Adam` and :class:`AdamW`
(decoupled weight decay); every one takes an L2 ``weight_decay``. The update arithmetic is a
kernel (:mod:`fastbp.kernels.optim`): one flat loop over the parameter buffer. The formulas are
those of ``torch.optim`` (``SGD`` without dampening, ``Adam``, ``AdamW``); weight decay applies to
every parameter, biases included, as ``torch.optim`` does with a single parameter group.

Schedules give the learning rate of each epoch from the optimizer's base ``lr``:
:class:`ConstantLR`, :class:`StepLR`, :class:`ExponentialLR`, :class:`CosineLR` and
:class:`ReduceLROnPlateau` (which watches the training or validation loss).

    >>> from fastbp.optim import Adam, CosineLR
    >>> opt = Adam(lr=1e-3, schedule=CosineLR(T_max=30))
    >>> net.fit(X, y, epochs=30, batch_size=32, optimizer=opt)       # doctest: +SKIP

An optimizer passed to ``fit`` is a template: the model trains with a copy
(``net.optimizer_``), so one object can configure several models.

State as plain data (for saving and resuming):

* ``opt.get_config()``: a flat dict of scalars and strings, e.g.
  ``{"name": "adam", "lr": 0.001, ..., "schedule": "cosine", "schedule.T_max": 30, ...}``;
  :func:`make_optimizer` rebuilds an optimizer (with fresh state) from it.
* ``opt.state_arrays()``: a dict of NumPy arrays: ``"step"`` and ``"epoch"`` (0-d int64: updates
  and epochs taken), the buffers (``"velocity"``; ``"m"``, ``"v"``) once allocated, and a
  stateful schedule's values under ``"schedule.*"``. ``opt.load_state_arrays(d)`` restores them.
"""
import math
import numbers

import numpy as np

from . import _cache
from . import _validation as V
from .kernels import optim as kopt
from ._threads import kernel_scope


def _check_real(name, value, low=None, high=None, low_open=False, high_open=False):
    """A finite real number within [low, high] (or open ends); returns a Python float."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float64's range
        value = math.inf
    ok = math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise ValueError(f"{name} must be a finite number in {lo or '(-inf'}, {hi or 'inf)'}; "
                         f"got {value}")
    return value


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


# Counters above MAX_COUNT (2**62 steps or epochs) cannot come from training, and would
# overflow the kernels' int64 step arithmetic (Adam's bias correction) within an epoch.
MAX_COUNT = 2 ** 62


def check_state_array(key, arr):
    """Raise ``ValueError`` when the state entry ``key`` holds what no training produces:
    counters (``step``, ``epoch``) outside [0, MAX_COUNT], negative second moments ``v``
    (Adam's ``sqrt(v)`` would be NaN at the next step). Shapes and dtypes are checked apart."""
    arr = np.asarray(arr)
    if key in ("step", "epoch") and arr.shape == () and arr.dtype.kind in "iu":
        value = int(arr)
        if value < 0:
            raise ValueError(f"optimizer state {key!r} must be >= 0, got {value}")
        if value > MAX_COUNT:
            raise ValueError(f"optimizer state {key!r} must be at most 2**62 (no training "
                             f"counts that far), got {value}")
    elif key == "v" and arr.dtype.kind == "f" and arr.size and arr.min() < 0:
        raise ValueError(f"optimizer state 'v' (Adam's running mean of squared gradients) must be "
                         f">= 0, got a minimum of {arr.min()} at index {int(np.argmin(arr))}")


def _scalar(d, key, kind):
    """A 0-d array from a state dict as a Python int or float."""
    arr = np.asarray(d[key])
    if arr.shape != ():
        raise ValueError(f"state array {key!r} must be a scalar (0-d), got shape {arr.shape}")
    return int(arr) if kind == "int" else float(arr)


# ---- schedules -------------------------------------------------------------------------------
class Schedule:
    """A learning-rate schedule: ``lr(base_lr, epoch)`` is the learning rate of epoch ``epoch``
    (0-based, counted by the optimizer since its state was fresh); ``end_epoch(logs)`` sees the
    finished epoch's ``{"loss": ..., "val_loss": ...}`` (used by :class:`ReduceLROnPlateau`)."""

    name = None

    def lr(self, base_lr, epoch):
        raise NotImplementedError

    def end_epoch(self, logs):
        pass

    def reset(self):
        pass

    def get_config(self):
        return {"name": self.name}

    def state_arrays(self):
        return {}

    def load_state_arrays(self, state):
        pass

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None


class ConstantLR(Schedule):
    """The base learning rate in every epoch."""

    name = "constant"

    def lr(self, base_lr, epoch):
        return base_lr


class StepLR(Schedule):
    """``base_lr * gamma ** (epoch // step_size)`` (``torch.optim.lr_scheduler.StepLR``)."""

    name = "step"

    def __init__(self, step_size, gamma=0.1):
        self.step_size = V.check_int("step_size", step_size, low=1)
        self.gamma = _check_real("gamma", gamma, low=0.0, low_open=True)

    def lr(self, base_lr, epoch):
        return base_lr * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"name": self.name, "step_size": self.step_size, "gamma": self.gamma}


class ExponentialLR(Schedule):
    """``base_lr * gamma ** epoch`` (``torch.optim.lr_scheduler.ExponentialLR``)."""

    name = "exponential"

    def __init__(self, gamma):
        self.gamma = _check_real("gamma", gamma, low=0.0, low_open=True)

    def lr(self, base_lr, epoch):
        return base_lr * self.gamma ** epoch

    def get_config(self):
        return {"name": self.name, "gamma": self.gamma}


class CosineLR(Schedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs, then ``eta_min``:
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2`` for epoch <= T_max
    (``torch.optim.lr_scheduler.CosineAnnealingLR`` up to ``T_max``; torch's keeps following
    the cosine back up after it, this one stays at ``eta_min``)."""

    name = "cosine"

    def __init__(self, T_max, eta_min=0.0):
        self.T_max = V.check_int("T_max", T_max, low=1)
        self.eta_min = _check_real("eta_min", eta_min, low=0.0)

    def lr(self, base_lr, epoch):
        if epoch >= self.T_max:
            return self.eta_min
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch
                                                                       / self.T_max)) / 2

    def get_config(self):
        return {"name": self.name, "T_max": self.T_max, "eta_min": self.eta_min}


class ReduceLROnPlateau(Schedule):
    """Multiply the learning rate by ``factor`` when the monitored loss has not improved for more
    than ``patience`` epochs, as ``torch.optim.lr_scheduler.ReduceLROnPlateau`` in its default
    ``mode='min', threshold_mode='rel'``: an epoch improves when
    ``value < best * (1 - threshold)``; after a reduction, ``cooldown`` epochs pass before bad
    epochs count again; the rate never goes below ``min_lr`` (and changes smaller than
    ``1e-8`` are skipped, as torch's ``eps``).

    monitor: ``'val_loss'``, ``'loss'`` (training loss) or ``'auto'`` (the validation loss when
    the fit has validation data, else the training loss).
    """

    name = "plateau"

    def __init__(self, factor=0.1, patience=10, threshold=1e-4, cooldown=0, min_lr=0.0,
                 monitor="auto"):
        self.factor = _check_real("factor", factor, low=0.0, high=1.0, low_open=True,
                                  high_open=True)
        self.patience = V.check_int("patience", patience, low=0)
        self.threshold = _check_real("threshold", threshold, low=0.0)
        self.cooldown = V.check_int("cooldown", cooldown, low=0)
        self.min_lr = _check_real("min_lr", min_lr, low=0.0)
        self.monitor = V.check_choice("monitor", monitor, ("auto", "loss", "val_loss"))
        self.reset()

    def reset(self):
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.current_lr = None  # None: the base lr (no reduction yet)

    def lr(self, base_lr, epoch):
        return base_lr if self.current_lr is None else self.current_lr

    def monitored(self, logs):
        key = self.monitor
        if key == "auto":
            key = "val_loss" if logs.get("val_loss") is not None else "loss"
        value = logs.get(key)
        if value is None:
            raise ValueError(f"ReduceLROnPlateau(monitor={self.monitor!r}) needs {key!r}, which "
                             "this fit does not compute (give validation_data or "
                             "validation_split, or monitor='loss')")
        return float(value)

    def end_epoch(self, logs):
        value = self.monitored(logs)
        lr_now = logs["lr"]
        if value < self.best * (1.0 - self.threshold) or (math.isinf(self.best)
                                                            and value < self.best):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            new_lr = max(lr_now * self.factor, self.min_lr)
            if lr_now - new_lr > 1e-8:
                self.current_lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_config(self):
        return {"name": self.name, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "cooldown": self.cooldown, "min_lr": self.min_lr,
                "monitor": self.monitor}

    def state_arrays(self):
        return {"best": np.array(self.best, dtype=np.float64),
                "num_bad_epochs": np.array(self.num_bad_epochs, dtype=np.int64),
                "cooldown_counter": np.array(self.cooldown_counter, dtype=np.int64),
                "current_lr": np.array(np.nan if self.current_lr is None else self.current_lr,
                                       dtype=np.float64)}

    def load_state_arrays(self, state):
        self.best = _scalar(state, "best", "float")
        self.num_bad_epochs = _scalar(state, "num_bad_epochs", "int")
        self.cooldown_counter = _scalar(state, "cooldown_counter", "int")
        lr = _scalar(state, "current_lr", "float")
        self.current_lr = None if math.isnan(lr) else lr


SCHEDULES = {cls.name: cls for cls in (ConstantLR, StepLR, ExponentialLR, CosineLR,
                                        ReduceLROnPlateau)}


def _named_config(what, spec, registry, expected):
    """A name or a config dict ``{"name": ..., **params}`` -> (name, a copy of the params),
    the name checked against ``registry``; ``expected`` says what else was accepted."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise TypeError(f"{what} must be {expected}, got {type(spec).__name__}")
    spec = dict(spec)
    name = spec.pop("name", None)
    V.check_choice(what, name, tuple(registry))
    return name, spec


def make_schedule(spec):
    """A schedule from ``None`` (constant), a :class:`Schedule` (copied), a name whose
    parameters all have defaults (``'constant'``, ``'plateau'``), or a config dict
    ``{"name": "step", "step_size": 10, "gamma": 0.5}``."""
    if spec is None:
        return ConstantLR()
    if isinstance(spec, Schedule):
        return make_schedule(spec.get_config())
    name, spec = _named_config("schedule", spec, SCHEDULES,
                               "None, a fastbp.optim schedule object, a name or a config dict")
    try:
        return SCHEDULES[name](**spec)
    except TypeError as exc:
        raise ValueError(f"schedule {name!r}: {exc}") from None


# ---- optimizers ------------------------------------------------------------------------------
class Optimizer:
    """Base class: a base learning rate ``lr``, an L2 ``weight_decay``, a ``schedule``, and the
    state (step and epoch counters, buffers twin to the parameter buffer).

    ``step(params, grads)`` applies one update to a flat parameter buffer (what ``MLP.fit`` does
    after every batch, inside its kernel driver); ``end_epoch(logs)`` advances the schedule.
    """

    name = None
    _kind = None
    _buffers = ()  # names of the state buffers twin to the parameters

    def __init__(self, lr, weight_decay=0.0, schedule=None):
        self.lr = _check_real("lr", lr, low=0.0, low_open=True)
        self.weight_decay = _check_real("weight_decay", weight_decay, low=0.0)
        self.schedule = make_schedule(schedule)
        self.reset()

    # -- state --
    def reset(self):
        """Fresh state: counters at zero, buffers dropped (re-created as zeros on first use)."""
        self.step_count = 0
        self.epoch_count = 0
        self._state = {}
        self.schedule.reset()

    def _bind(self, n_params, dtype):
        """Make the state buffers for ``n_params`` parameters of ``dtype`` (zeros when fresh)."""
        dtype = np.dtype(dtype)
        for key in self._needed_buffers():
            buf = self._state.get(key)
            if buf is None:
                self._state[key] = np.zeros(n_params, dtype=dtype)
            elif buf.shape != (n_params,):
                raise ValueError(f"optimizer state {key!r} has {buf.shape[0]} entries, but the "
                                 f"network has {n_params} parameters")
            elif buf.dtype != dtype:
                raise TypeError(f"optimizer state {key!r} is {buf.dtype}, but the network's "
                                f"parameters are {dtype}")
            elif not (buf.flags.writeable and buf.flags.c_contiguous and buf.flags.aligned):
                # e.g. unpickled as a read-only memory map: the kernels write it
                self._state[key] = np.array(buf, order="C", copy=True)

    def _needed_buffers(self):
        return self._buffers

    def state_arrays(self):
        """The state as a dict of NumPy arrays (copies)."""
        out = {"step": np.array(self.step_count, dtype=np.int64),
               "epoch": np.array(self.epoch_count, dtype=np.int64)}
        for key, buf in self._state.items():
            out[key] = buf.copy()
        for key, arr in self.schedule.state_arrays().items():
            out["schedule." + key] = arr
        return out

    def load_state_arrays(self, state):
        """Restore what :meth:`state_arrays` returned (the arrays are copied)."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        missing = {"step", "epoch"} - set(state)
        if missing:
            raise ValueError(f"optimizer state lacks {sorted(missing)}")
        known = {"step", "epoch", *self._buffers}
        unknown = [k for k in state if k not in known and not k.startswith("schedule.")]
        if unknown:
            raise ValueError(f"unknown optimizer state arrays for {self.name!r}: {unknown}")
        step = _scalar(state, "step", "int")
        epoch = _scalar(state, "epoch", "int")
        if step < 0 or epoch < 0:
            raise ValueError(f"optimizer counters must be >= 0, got step={step}, epoch={epoch}")
        if max(step, epoch) > MAX_COUNT:
            raise ValueError(f"optimizer counters must be at most 2**62 (no training counts "
                             f"that far), got step={step}, epoch={epoch}")
        buffers = {}
        for key in self._buffers:
            if key in state:
                arr = np.asarray(state[key])
                if arr.ndim != 1 or arr.dtype.kind != "f" or not np.isfinite(arr).all():
                    raise ValueError(f"optimizer state {key!r} must be a finite 1-D float "
                                     "array")
                check_state_array(key, arr)
                buffers[key] = np.array(arr, copy=True, order="C")
        sched = {k[len("schedule."):]: v for k, v in state.items() if k.startswith("schedule.")}
        if sched:
            self.schedule.load_state_arrays(sched)
        self.step_count = step
        self.epoch_count = epoch
        self._state = buffers

    # -- configuration --
    def _hyper(self):
        return {}

    def get_config(self):
        """Hyperparameters as a flat dict of scalars and strings (no state)."""
        config = {"name": self.name, "lr": self.lr, "weight_decay": self.weight_decay}
        config.update(self._hyper())
        for key, value in self.schedule.get_config().items():
            config["schedule" if key == "name" else "schedule." + key] = value
        return config

    def copy(self):
        """A new optimizer with this one's configuration and fresh state."""
        return make_optimizer(self.get_config())

    def __repr__(self):
        config = self.get_config()
        args = [f"lr={self.lr!r}"]
        args += [f"{k}={v!r}" for k, v in config.items() if k not in ("name", "lr")
                 and not k.startswith("schedule")]
        if not isinstance(self.schedule, ConstantLR):
            args.append(f"schedule={self.schedule!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    # -- use --
    def current_lr(self):
        """The learning rate of the current epoch (``epoch_count``), from the schedule."""
        return float(self.schedule.lr(self.lr, self.epoch_count))

    def end_epoch(self, logs=None):
        """Advance to the next epoch; ``logs`` (``{"loss", "val_loss", "lr"}``) feeds a plateau
        schedule."""
        logs = dict(logs or {})
        logs.setdefault("lr", self.current_lr())
        self.schedule.end_epoch(logs)
        self.epoch_count += 1

    def _hp(self, lr):
        """The float64 hyperparameter vector of ``kernels.optim.apply_update``."""
        hp = np.zeros(kopt.HP_SIZE, dtype=np.float64)
        hp[kopt.HP_LR] = lr
        hp[kopt.HP_WEIGHT_DECAY] = self.weight_decay
        return hp

    def kernel_args(self, n_params, dtype, lr=None):
        """``(kind, hp, s1, s2)`` for the kernel drivers, buffers made if needed."""
        self._bind(n_params, dtype)
        empty = np.zeros(0, dtype=dtype)
        bufs = [self._state.get(k, empty) for k in self._needed_buffers()]
        bufs += [empty] * (2 - len(bufs))
        return self._kind, self._hp(self.current_lr() if lr is None else lr), bufs[0], bufs[1]

    def step(self, params, grads):
        """One update of the flat buffer ``params`` (1-D, float32 or float64, C-contiguous,
        changed in place) by ``grads`` (same shape and dtype), at the current epoch's lr."""
        for name, arr in (("params", params), ("grads", grads)):
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 \
                    or arr.dtype.name not in ("float32", "float64"):
                what = (f"a {arr.ndim}-D {arr.dtype} array" if isinstance(arr, np.ndarray)
                        else type(arr).__name__)
                raise TypeError(f"{name} must be a 1-D float32 or float64 NumPy array, got "
                                f"{what}")
            if not arr.flags.c_contiguous:
                raise ValueError(f"{name} must be C-contiguous")
            if not arr.dtype.isnative or not arr.flags.aligned:
                raise ValueError(f"{name} must be aligned and in the machine's byte order, got "
                                 f"dtype {arr.dtype.str}, aligned={arr.flags.aligned}")
        if not params.flags.writeable:
            raise ValueError("params must be writable (it is updated in place)")
        V.check_dtype(params.dtype)
        if grads.shape != params.shape or grads.dtype != params.dtype:
            raise ValueError(f"grads must match params: {params.shape} {params.dtype}, got "
                             f"{grads.shape} {grads.dtype}")
        if not np.isfinite(grads).all():
            raise ValueError("grads contains NaN or infinity")
        if not grads.flags.writeable:  # read only: one compiled kernel type for grads
            grads = grads.copy()
        kind, hp, s1, s2 = self.kernel_args(params.shape[0], params.dtype)
        self.step_count += 1
        _cache.require("optimizer-step", params.dtype)
        with kernel_scope() as min_par:
            kopt.apply_update(params, grads, kind, hp, s1, s2, self.step_count, min_par)

    def is_plain_sgd(self):
        """True for SGD without momentum or weight decay (the fused fast path applies)."""
        return False


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (heavy ball, or Nesterov's):
    ``g = grad + weight_decay * p``; ``v = momentum * v + g``; ``p -= lr * v`` (Nesterov:
    ``p -= lr * (g + momentum * v)``); plain ``p -= lr * g`` when ``momentum == 0``."""

    name = "sgd"
    _kind = kopt.SGD

    def __init__(self, lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, schedule=None):
        self.momentum = _check_real("momentum", momentum, low=0.0, high=1.0, high_open=True)
        self.nesterov = _check_bool("nesterov", nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        super().__init__(lr, weight_decay, schedule)

    _buffers = ("velocity",)

    def _needed_buffers(self):
        return ("velocity",) if self.momentum > 0 else ()

    def _hyper(self):
        return {"momentum": self.momentum, "nesterov": self.nesterov}

    def _hp(self, lr):
        hp = super()._hp(lr)
        hp[kopt.HP_MOMENTUM] = self.momentum
        hp[kopt.HP_NESTEROV] = float(self.nesterov)
        return hp

    def is_plain_sgd(self):
        return self.momentum == 0 and self.weight_decay == 0


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, as ``torch.optim.Adam``; ``weight_decay`` is
    an L2 term added to the gradient (use :class:`AdamW` for decoupled decay)."""

    name = "adam"
    _kind = kopt.ADAM
    _buffers = ("m", "v")
    _decoupled = False

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                 schedule=None):
        self.beta1 = _check_real("beta1", beta1, low=0.0, high=1.0, high_open=True)
        self.beta2 = _check_real("beta2", beta2, low=0.0, high=1.0, high_open=True)
        self.eps = _check_real("eps", eps, low=0.0, low_open=True)
        super().__init__(lr, weight_decay, schedule)

    def _hyper(self):
        return {"beta1": self.beta1, "beta2": self.beta2, "eps": self.eps}

    def _hp(self, lr):
        hp = super()._hp(lr)
        hp[kopt.HP_BETA1] = self.beta1
        hp[kopt.HP_BETA2] = self.beta2
        hp[kopt.HP_EPS] = self.eps
        hp[kopt.HP_DECOUPLED] = float(self._decoupled)
        return hp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter), as ``torch.optim.AdamW``: each
    step first shrinks ``p *= 1 - lr * weight_decay``, then takes the Adam step on the plain
    gradient."""

    name = "adamw"
    _decoupled = True

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 schedule=None):
        super().__init__(lr, beta1, beta2, eps, weight_decay, schedule)


OPTIMIZERS = {cls.name: cls for cls in (SGD, Adam, AdamW)}


def make_optimizer(config, lr=None):
    """An optimizer with fresh state from a name (``'sgd'``, ``'adam'``, ``'adamw'``), a config
    dict as :meth:`Optimizer.get_config` returns, or an optimizer object (copied).

    ``lr``, when given, sets the base learning rate (only with a name or a dict without ``lr``).
    """
    if isinstance(config, Optimizer):
        if lr is not None:
            raise ValueError("lr was given together with an optimizer object; set the learning "
                             f"rate on the object instead ({type(config).__name__}(lr=...))")
        return make_optimizer(config.get_config())
    name, config = _named_config("optimizer", config, OPTIMIZERS,
                                 "a name ('sgd', 'adam', 'adamw'), a fastbp.optim optimizer or "
                                 "a config dict")
    if lr is not None:
        if "lr" in config:
            raise ValueError("lr was given twice: as the lr argument and in the optimizer config")
        config["lr"] = lr
    sched = {k[len("schedule."):]: config.pop(k) for k in list(config)
             if k.startswith("schedule.")}
    sched_name = config.pop("schedule", None)
    if sched_name is not None and not isinstance(sched_name, str):
        config["schedule"] = sched_name  # an object or dict given directly
        if sched:
            raise ValueError("give schedule parameters either flat ('schedule.x') or in the "
                             "schedule object, not both")
    elif sched_name is not None or sched:
        config["schedule"] = {"name": sched_name or "constant", **sched}
    try:
        return OPTIMIZERS[name](**config)
    except TypeError as exc:
        if "unexpected keyword" in str(exc) or "positional argument" in str(exc):
            raise ValueError(f"optimizer {name!r}: {exc}") from None
        raise
