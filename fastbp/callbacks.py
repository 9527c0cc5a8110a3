"""Training history, callbacks, early stopping and progress display for ``MLP.fit``.

* :class:`History`: per-epoch records of a fit (``net.history_``).
* :class:`Callback`: hooks ``on_train_begin(model, history)``, ``on_epoch_end(epoch, history,
  model)`` (return ``True`` to stop training) and ``on_train_end(model, history)``. A plain
  function ``f(epoch, history, model)`` works as a callback too (a truthy return stops).
* :class:`EarlyStopping`: stop when a monitored value stops improving, restoring the best
  weights.
* Progress: ``fit(progress=True)`` shows a bar per epoch (tqdm when it is installed, a plain
  text bar otherwise); ``verbose=1`` prints one line per epoch.
"""
import inspect
import math
import numbers
import sys
import time

import numpy as np

from . import _validation as V


class History:
    """What happened in each epoch of a training run; lists indexed alike, one entry per epoch.

    * ``epoch``: the model's epoch number (1-based, counted over all of the model's training:
      ``net.n_epochs_`` after that epoch);
    * ``loss``: mean training loss over the epoch (each batch measured before its update;
      weighted by ``sample_weight`` when given);
    * ``val_loss``, ``val_metric``: loss and metric (``metric``: ``'accuracy'`` for the
      classification losses, ``'r2'`` for ``mse``) on the validation data, NaN without it;
    * ``lr``: the learning rate used in the epoch; ``seconds``: wall time of the epoch's
      training (validation not included); ``samples_per_s``: training samples per second.

    ``history["loss"]`` is ``history.loss``; ``stopped_epoch`` is the epoch at which a callback
    stopped training (``None`` if none did); ``best_epoch`` the epoch whose weights early stopping
    restored (``None`` if it restored none); ``diverged_epoch`` the epoch whose loss or weights
    became NaN or infinite when ``fit(on_divergence='stop')`` stopped there and undid it (``None``
    if none did). ``to_dict()`` / ``History.from_dict()`` convert to and from plain data.
    """

    KEYS = ("epoch", "loss", "val_loss", "val_metric", "lr", "seconds", "samples_per_s")

    def __init__(self, metric="accuracy"):
        self.metric = metric
        for key in self.KEYS:
            setattr(self, key, [])
        self.stopped_epoch = None
        self.best_epoch = None
        self.diverged_epoch = None

    def append(self, **row):
        if set(row) != set(self.KEYS):
            raise ValueError(f"a history row needs exactly the keys {self.KEYS}")
        for key in self.KEYS:
            value = row[key]
            getattr(self, key).append(int(value) if key == "epoch" else float(value))

    def __len__(self):
        return len(self.epoch)

    def __getitem__(self, key):
        if key not in self.KEYS:
            raise KeyError(f"{key!r} (history keys: {', '.join(self.KEYS)})")
        return getattr(self, key)

    def keys(self):
        return self.KEYS

    @property
    def has_validation(self):
        return len(self) > 0 and not math.isnan(self.val_loss[-1])

    def last(self):
        """The last epoch's record as a dict (``{}`` before the first epoch)."""
        if not len(self):
            return {}
        return {key: getattr(self, key)[-1] for key in self.KEYS}

    def to_dict(self):
        out = {key: list(getattr(self, key)) for key in self.KEYS}
        out.update(metric=self.metric, stopped_epoch=self.stopped_epoch,
                   best_epoch=self.best_epoch, diverged_epoch=self.diverged_epoch)
        return out

    @classmethod
    def from_dict(cls, data):
        """The History that ``to_dict()`` described; every entry is checked first, and an error
        names it (``history['loss'][3]``)."""
        if not isinstance(data, dict):
            raise TypeError(f"history must be a dict as History.to_dict() returns, got "
                            f"{type(data).__name__}")
        missing = [key for key in cls.KEYS if key not in data]
        if missing:
            raise ValueError(f"history lacks the columns {missing}")
        metric = data.get("metric", "accuracy")
        if not isinstance(metric, str):
            raise TypeError(f"history['metric'] must be a string, got {metric!r}")
        columns = {}
        for key in cls.KEYS:
            values = data[key]
            if not isinstance(values, (list, tuple, np.ndarray)):
                raise TypeError(f"history[{key!r}] must be a list, got {type(values).__name__}")
            kind = numbers.Integral if key == "epoch" else numbers.Real
            for k, v in enumerate(values):
                if not isinstance(v, kind) or isinstance(v, (bool, np.bool_)):
                    raise TypeError(f"history[{key!r}][{k}] must be "
                                    f"{'an integer' if key == 'epoch' else 'a real number'}, "
                                    f"got {v!r}")
            columns[key] = [int(v) if key == "epoch" else float(v) for v in values]
            if len(values) != len(columns["epoch"]):
                raise ValueError(f"history column {key!r} has {len(values)} entries, "
                                 f"'epoch' has {len(columns['epoch'])}")
        marks = {}
        for key in ("stopped_epoch", "best_epoch", "diverged_epoch"):
            value = data.get(key)
            if value is not None and (not isinstance(value, numbers.Integral)
                                      or isinstance(value, (bool, np.bool_))):
                raise TypeError(f"history[{key!r}] must be an integer or None, got {value!r}")
            marks[key] = None if value is None else int(value)
        hist = cls(metric)
        for key, values in {**columns, **marks}.items():
            setattr(hist, key, values)
        return hist

    def __repr__(self):
        if not len(self):
            return "History(no epochs)"
        last = self.last()
        text = f"History({len(self)} epochs, last: loss {last['loss']:.6g}"
        if self.has_validation:
            text += f", val_loss {last['val_loss']:.6g}, val_{self.metric} " \
                    f"{last['val_metric']:.4f}"
        return text + ")"


class Callback:
    """Base class of training callbacks; override the hooks you need."""

    def on_train_begin(self, model, history):
        pass

    def on_epoch_end(self, epoch, history, model):
        """Called after each epoch (and its validation). Return ``True`` to stop training."""
        return False

    def on_train_end(self, model, history):
        pass


def _check_signature(what, func, params):
    """``TypeError`` now when ``func`` cannot be called with the parameters ``params`` (names,
    passed by position): otherwise a wrong signature fails only when training calls it, after
    a whole epoch changed the weights. A function whose signature Python cannot read (some
    builtins) is not checked."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*params)
    except TypeError as exc:
        raise TypeError(f"{what} must take ({', '.join(params)}), but its signature is "
                        f"{sig} ({exc})") from None


class LambdaCallback(Callback):
    """Wraps a function ``f(epoch, history, model)`` called after each epoch; a truthy return
    stops training."""

    def __init__(self, func):
        if not callable(func):
            raise TypeError(f"a callback must be callable, got {type(func).__name__}")
        _check_signature("a callback function", func, ("epoch", "history", "model"))
        self.func = func

    def on_epoch_end(self, epoch, history, model):
        return bool(self.func(epoch, history, model))


MONITORS = {"loss": "min", "val_loss": "min", "val_metric": "max"}


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved by more than ``min_delta`` for
    ``patience`` epochs in a row, and then (if ``restore_best_weights``) put back the weights of
    the best epoch.

    monitor: ``'val_loss'``, ``'val_metric'`` (higher is better), ``'loss'``, or ``'auto'``
    (``'val_loss'`` when the fit has validation data, else ``'loss'``). Weights are restored at
    the end of training whenever the last epoch is not the best one, whether or not training
    stopped early. After the fit, ``best_epoch``, ``best`` and ``stopped_epoch`` tell what
    happened.
    """

    def __init__(self, monitor="auto", patience=10, min_delta=0.0, restore_best_weights=True):
        self.monitor = V.check_choice("monitor", monitor, ("auto", *MONITORS))
        self.patience = V.check_int("patience", patience, low=1)
        self.min_delta = V.check_positive_float("min_delta", min_delta, allow_zero=True)
        if not isinstance(restore_best_weights, (bool, np.bool_)):
            raise TypeError(f"restore_best_weights must be True or False, got "
                            f"{restore_best_weights!r}")
        self.restore_best_weights = bool(restore_best_weights)
        self._best_params = None

    def _key(self, history):
        if self.monitor != "auto":
            return self.monitor
        return "val_loss" if history.has_validation else "loss"

    def on_train_begin(self, model, history):
        self.best = math.nan
        self.best_epoch = None
        self.stopped_epoch = None
        self.wait = 0
        self._last_epoch = None
        if self.restore_best_weights:
            if self._best_params is None or self._best_params.shape != model.params.shape \
                    or self._best_params.dtype != model.params.dtype:
                self._best_params = np.empty_like(model.params)

    def on_epoch_end(self, epoch, history, model):
        key = self._key(history)
        value = history[key][-1]
        if math.isnan(value):
            raise ValueError(f"EarlyStopping(monitor={self.monitor!r}) needs {key!r}, which this "
                             "fit does not compute (give validation_data or validation_split)")
        self._last_epoch = epoch
        if MONITORS[key] == "min":
            improved = math.isnan(self.best) or value < self.best - self.min_delta
        else:
            improved = math.isnan(self.best) or value > self.best + self.min_delta
        if improved:
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            if self.restore_best_weights:
                self._best_params[...] = model.params
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, model, history):
        if (self.restore_best_weights and self.best_epoch is not None
                and self.best_epoch != self._last_epoch):
            model.params[...] = self._best_params
            history.best_epoch = self.best_epoch

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, patience={self.patience}, "
                f"min_delta={self.min_delta}, restore_best_weights={self.restore_best_weights})")


def make_callbacks(callbacks, early_stopping):
    """The callback list of a fit: the given ``callbacks`` (Callback objects or functions)
    followed by early stopping (``None``/``False``: none; ``True``: ``EarlyStopping()``; an int:
    its patience; or an :class:`EarlyStopping`)."""
    if callbacks is None:
        callbacks = ()
    if isinstance(callbacks, (Callback, str)) or callable(callbacks):
        callbacks = (callbacks,)
    try:
        items = list(callbacks)
    except TypeError:
        raise TypeError("callbacks must be a sequence of fastbp.callbacks.Callback objects or "
                        f"functions f(epoch, history, model), got {type(callbacks).__name__}"
                        ) from None
    out = []
    for k, cb in enumerate(items):
        if isinstance(cb, Callback):
            for hook, params in (("on_train_begin", ("model", "history")),
                                 ("on_epoch_end", ("epoch", "history", "model")),
                                 ("on_train_end", ("model", "history"))):
                _check_signature(f"callbacks[{k}].{hook}", getattr(cb, hook, None), params)
            out.append(cb)
        elif callable(cb):
            try:
                out.append(LambdaCallback(cb))
            except TypeError as exc:
                raise TypeError(f"callbacks[{k}]: {exc}") from None
        else:
            raise TypeError(f"callbacks[{k}] must be a Callback or a function f(epoch, history, "
                            f"model), got {type(cb).__name__}")
    if early_stopping is None or early_stopping is False:
        pass
    elif early_stopping is True:
        out.append(EarlyStopping())
    elif isinstance(early_stopping, EarlyStopping):
        out.append(early_stopping)
    elif isinstance(early_stopping, (int, np.integer)) and not isinstance(early_stopping,
                                                                            (bool, np.bool_)):
        out.append(EarlyStopping(patience=early_stopping))
    else:
        raise TypeError("early_stopping must be None, True, a patience (int) or an "
                        f"EarlyStopping, got {early_stopping!r}")
    return out


# ---- progress --------------------------------------------------------------------------------
def _format_rate(rate):
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def epoch_line(row, metric):
    """The one-line summary ``verbose=1`` prints for an epoch record ``row``."""
    text = f"epoch {row['epoch']}  loss {row['loss']:.6g}"
    if not math.isnan(row["val_loss"]):
        text += f"  val_loss {row['val_loss']:.6g}  val_{metric} {row['val_metric']:.4f}"
    text += (f"  lr {row['lr']:.4g}  {row['seconds']:.3f} s  "
             f"{_format_rate(row['samples_per_s'])} samples/s")
    return text


class _PlainBar:
    """A text progress bar on stderr, redrawn in place with ``\\r``."""

    WIDTH = 30

    def __init__(self, total, desc, stream):
        self.total = total
        self.desc = desc
        self.stream = stream
        self.n = 0
        self.postfix = ""
        self.t0 = time.perf_counter()
        self._draw()

    def update(self, n):
        self.n += n
        self._draw()

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text
        if refresh:
            self._draw()

    def _draw(self):
        filled = int(self.WIDTH * self.n / max(self.total, 1))
        bar = "#" * filled + "-" * (self.WIDTH - filled)
        seconds = time.perf_counter() - self.t0
        rate = self.n / seconds if seconds > 0 else 0.0
        self.stream.write(f"\r{self.desc} [{bar}] {self.n}/{self.total}  "
                          f"{_format_rate(rate)} samples/s  {self.postfix}")
        self.stream.flush()

    def close(self):
        self.stream.write("\n")
        self.stream.flush()


class Progress:
    """Progress display of a fit: ``enabled`` draws one bar per epoch, over its samples, with
    the running loss and samples/s (tqdm when importable, else a text bar); ``verbose`` prints
    one line per finished epoch to ``stream`` (stdout by default)."""

    def __init__(self, enabled, verbose, metric, stream=None):
        self.enabled = bool(enabled)
        self.verbose = int(verbose)
        self.metric = metric
        self.stream = stream
        self._bar = None
        self._tqdm = None
        if self.enabled:
            try:
                from tqdm import tqdm
                self._tqdm = tqdm
            except ImportError:
                self._tqdm = None

    def begin_epoch(self, epoch, n_samples):
        """Start the bar of epoch number ``epoch`` (the model's count) over ``n_samples``."""
        if not self.enabled:
            return
        desc = f"epoch {epoch}"
        if self._tqdm is not None:
            self._bar = self._tqdm(total=n_samples, desc=desc, unit="samples", leave=True,
                                   file=self.stream or sys.stderr)
        else:
            self._bar = _PlainBar(n_samples, desc, self.stream or sys.stderr)

    def advance(self, n_done, loss_so_far):
        if self._bar is None:
            return
        self._bar.set_postfix_str(f"loss {loss_so_far:.5g}", refresh=False)
        self._bar.update(n_done)

    def end_epoch(self, row):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.verbose:
            print(epoch_line(row, self.metric), file=self.stream or sys.stdout,
                  flush=True)

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
