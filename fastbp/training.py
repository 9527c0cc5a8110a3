"""The training loop behind ``MLP.fit`` and ``MLP.partial_fit``, in small pieces.

* :class:`Workspace`: every buffer of a fit, allocated once before the first epoch;
* an *epoch runner* per kernel path, chosen once when the fit starts (:func:`make_runner`):
  :class:`FusedSGD` (plain SGD, per-sample or mini-batch: ``kernels.network.sgd_epoch``),
  :class:`Hogwild` (lock-free per-sample SGD on every thread) and :class:`Segment` (momentum,
  weight decay, Adam, sample weights: ``kernels.train.train_segment``). ``run(order, lr)``
  trains one epoch in pieces and returns its mean loss and the optimizer's new step count;
* :class:`Snapshot`: the state at the start of an epoch, put back when the epoch diverges or is
  interrupted (Ctrl-C);
* :class:`Validation`: the validation loss and metric after each epoch;
* :func:`train`: the epoch loop that ties them together, with the history and the callbacks.

``fit`` and ``partial_fit`` validate their arguments and call :func:`train`. Scikit-learn's
``_fit_stochastic`` and Keras's ``Trainer.fit`` -> ``train_step`` have the same shape.
"""
import math
import time

import numpy as np

from . import _cache
from . import _validation as V
from ._threads import get_num_threads, kernel_scope
from .callbacks import Progress
from .kernels import network as knet
from .kernels import optim as kopt
from .kernels import train as ktrain
from .kernels.fused import sgd_hogwild

# Rows pushed through the network at once by forward/predict/loss: bounds their workspace.
PREDICT_CHUNK = 1024

# A progress bar is redrawn about this many times per epoch (the epoch runs in that many pieces).
PROGRESS_UPDATES = 20
# Compiled code cannot see a Ctrl-C: an epoch runs in pieces of about PIECE_SECONDS (sized from
# the speed of the last piece), so that Python gets control every few tens of milliseconds and
# raises KeyboardInterrupt (docs/robustness.md, "Ctrl-C"; the cost: docs/performance.md).
PIECE_SECONDS = 0.05

# Parameters and training workspaces start on a cache line: a thread's share of a row (the
# deferred first-layer region splits rows of W_1, a_0 and delta_0 between threads) then does
# not share a line with another thread's. On 784-128-10, batch 32, the region took 74 us with
# its buffers on a line and 81 us with them 16 bytes off.
CACHE_LINE = 64


def aligned_zeros(n, dtype):
    """A zero-filled 1-D array of ``n`` elements of ``dtype`` whose data starts on a
    ``CACHE_LINE`` boundary (a view into a slightly larger array)."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n + CACHE_LINE // dtype.itemsize, dtype=dtype)
    skip = (-raw.ctypes.data % CACHE_LINE) // dtype.itemsize
    return raw[skip:skip + n]


class _Pieces:
    """The sizes of an epoch's pieces: whole batches (pairs of samples at batch size 1, where
    the fused kernels flush their pending step), about ``PIECE_SECONDS`` each. The first piece
    of a fit is one unit; each next one follows the last one's speed, growing at most 4 times.
    Neither the weights nor the loss depend on the pieces (the kernels carry the loss sum on)."""

    def __init__(self, unit, cap):
        self.unit = unit
        self.cap = max(unit, cap // unit * unit)
        self.size = unit

    def update(self, n_done, seconds):
        want = n_done * PIECE_SECONDS / seconds if seconds > 0 else 4 * self.size
        want = min(int(want), 4 * self.size, self.cap)
        self.size = max(self.unit, want // self.unit * self.unit)


class Workspace:
    """The buffers of one fit over ``N`` samples in batches of ``B``, allocated once: gradients,
    the batch's inputs and targets, activations and deltas, sample weights of a batch."""

    def __init__(self, net, N, B, weighted):
        dtype, sizes = net.dtype, net.layer_sizes
        S = knet.workspace_size(net._layout)
        self.grads = aligned_zeros(net.params.shape[0], dtype)
        self.xbuf = aligned_zeros(B * sizes[0], dtype)
        self.ybuf = aligned_zeros(B * sizes[-1], dtype)
        # the per-sample path needs two samples, the deferred one a second a_0 (train_epoch)
        self.acts = aligned_zeros(max(B, 2) * S + B * sizes[1], dtype)
        self.deltas = aligned_zeros(B * S, dtype)
        self.wbuf = np.empty(B if weighted else 0, dtype=dtype)


class Snapshot:
    """The parameters, the optimizer's buffers and step count and the model's generator at the
    start of an epoch; ``restore()`` puts them back (the last finite state)."""

    def __init__(self, params, opt, s1, s2, rng):
        self.params, self.opt, self.s1, self.s2, self.rng = params, opt, s1, s2, rng
        self._params, self._s1, self._s2 = (np.empty_like(params), np.empty_like(s1),
                                            np.empty_like(s2))
        self._step = self._rng_state = None

    def take(self):
        self._params[...] = self.params
        self._s1[...] = self.s1
        self._s2[...] = self.s2
        self._step, self._rng_state = self.opt.step_count, self.rng.bit_generator.state

    def restore(self):
        self.params[...] = self._params
        self.s1[...] = self._s1
        self.s2[...] = self._s2
        self.opt.step_count = self._step
        self.rng.bit_generator.state = self._rng_state


class _Runner:
    """An epoch in pieces: ``run(order, lr)`` -> (mean loss, the optimizer's step count after
    the epoch). ``show`` draws the progress bar (``advance(n, mean loss so far)``)."""

    def __init__(self, net, X, Y, ws, B, min_par, pieces, show):
        self.net, self.X, self.Y, self.ws, self.B = net, X, Y, ws, B
        self.min_par, self.pieces, self.show = min_par, pieces, show
        self.N = X.shape[0]

    def _pieces(self, train_piece):
        """Call ``train_piece(start, stop)`` over the epoch, piece by piece; returns what the
        last call returned (the running totals)."""
        start, result = 0, None
        while start < self.N:
            stop = min(start + self.pieces.size, self.N)
            t = time.perf_counter()
            result = train_piece(start, stop)
            self.pieces.update(stop - start, time.perf_counter() - t)
            start = stop
        return result


class FusedSGD(_Runner):
    """Plain SGD without sample weights: the fused kernels of ``kernels.network.sgd_epoch``
    (the update folded into the backward pass)."""

    def __init__(self, net, X, Y, ws, B, min_par, pieces, show, opt):
        super().__init__(net, X, Y, ws, B, min_par, pieces, show)
        self.opt = opt
        self.n_tasks = 1 if min_par == knet.SERIAL_ONLY else get_num_threads()

    def run(self, order, lr):
        net, ws = self.net, self.ws
        lr_t = net.dtype.type(lr)
        path = knet.sgd_epoch_path(self.B, net._params, net._layout, ws.acts, self.min_par,
                                   order)
        totals = [0.0]

        def piece(start, stop):
            totals[0] = knet.sgd_epoch(path, net._params, self.X, self.Y, order[start:stop],
                                       self.B, lr_t, net._layout, net._loss_code, ws.xbuf,
                                       ws.ybuf, ws.acts, ws.deltas, self.min_par,
                                       self.n_tasks, totals[0])
            self.show.advance(stop - start, totals[0] / stop)

        self._pieces(piece)
        return totals[0] / self.N, self.opt.step_count + -(-self.N // self.B)


class Hogwild(FusedSGD):
    """Lock-free per-sample SGD ("Hogwild!"): each thread trains on its share of a piece, all
    updating the shared weights; one per-sample workspace per thread."""

    def __init__(self, net, X, Y, ws, B, min_par, pieces, show, opt):
        super().__init__(net, X, Y, ws, B, min_par, pieces, show, opt)
        T = max(1, min(get_num_threads(), self.N))
        S = knet.workspace_size(net._layout)
        self.acts = np.empty((T, 2, S), dtype=net.dtype)
        self.deltas = np.empty((T, S), dtype=net.dtype)

    def run(self, order, lr):
        net = self.net
        lr_t = net.dtype.type(lr)
        _cache.require("sgd-hogwild", net.dtype)
        totals = [0.0]

        def piece(start, stop):
            totals[0] += float(sgd_hogwild(net._params, self.X, self.Y, order[start:stop], lr_t,
                                           net._layout, net._loss_code, self.acts, self.deltas))

        self._pieces(piece)
        return totals[0] / self.N, self.opt.step_count + self.N


class Segment(_Runner):
    """The general optimizer path (momentum, weight decay, Adam, AdamW, sample weights):
    ``kernels.train.train_segment`` computes each batch's gradients and steps the optimizer."""

    def __init__(self, net, X, Y, ws, B, min_par, pieces, show, opt, sw, state):
        super().__init__(net, X, Y, ws, B, min_par, pieces, show)
        self.opt, self.sw = opt, sw
        self.kind, self.hp, self.s1, self.s2 = state
        self.sw_arr = np.empty(0, dtype=net.dtype) if sw is None else sw
        self.wtotal = float(self.N) if sw is None else float(sw.sum(dtype=np.float64))

    def run(self, order, lr):
        net, ws = self.net, self.ws
        self.hp[kopt.HP_LR] = lr
        _cache.require("train-segment", net.dtype)
        acc = {"total": 0.0, "step": self.opt.step_count, "seen": 0.0}

        def piece(start, stop):
            acc["total"], acc["step"] = ktrain.train_segment(
                net._params, ws.grads, self.X, self.Y, self.sw_arr, order, start, stop, self.B,
                net._layout, net._loss_code, self.kind, self.hp, self.s1, self.s2, acc["step"],
                acc["total"], ws.xbuf, ws.ybuf, ws.wbuf, ws.acts, ws.deltas, self.min_par)
            if self.show.enabled:
                acc["seen"] += stop - start if self.sw is None else float(
                    self.sw[order[start:stop]].sum(dtype=np.float64))
                self.show.advance(stop - start, acc["total"] / acc["seen"]
                                  if acc["seen"] > 0 else 0.0)

        self._pieces(piece)
        return float(acc["total"]) / self.wtotal, acc["step"]


def make_runner(net, X, Y, sw, ws, B, min_par, pieces, show, opt, hogwild, state):
    """The epoch runner of this fit's kernel path."""
    if opt.is_plain_sgd() and sw is None:
        if hogwild and min_par != knet.SERIAL_ONLY:
            return Hogwild(net, X, Y, ws, B, min_par, pieces, show, opt)
        return FusedSGD(net, X, Y, ws, B, min_par, pieces, show, opt)
    return Segment(net, X, Y, ws, B, min_par, pieces, show, opt, sw, state)


class Validation:
    """Loss and metric of the network on ``(Xv, Yv, swv)`` after an epoch, in buffers allocated
    once."""

    def __init__(self, net, val):
        self.net = net
        self.Xv, self.Yv, self.swv = val
        n = self.Xv.shape[0]
        self.out = np.empty((n, net.layer_sizes[-1]), dtype=net.dtype)
        self.chunk = min(n, PREDICT_CHUNK)
        self.acts = np.empty(self.chunk * knet.workspace_size(net._layout), dtype=net.dtype)
        self.sw_arr = np.empty(0, dtype=net.dtype) if self.swv is None else self.swv
        self.total = float(n) if self.swv is None else float(self.swv.sum(dtype=np.float64))

    def evaluate(self, min_par):
        net = self.net
        _cache.require("predict", net.dtype)
        knet.predict_into(self.out, self.Xv, net._params, net._layout, self.acts, self.chunk,
                          min_par)
        loss = float(ktrain.evaluate_loss(self.out, self.Yv, self.sw_arr, net._loss_code))
        return loss / self.total, net._metric(self.out, self.Yv, self.swv)


def _diverged(epoch, lr, loss):
    what = "loss" if not math.isfinite(loss) else "weights"
    return FloatingPointError(
        f"training diverged in epoch {epoch} (lr {lr:g}): the {what} became NaN or infinite. "
        "The weights and optimizer state are those from before that epoch (the last finite "
        "ones); lower the learning rate or scale the inputs (fit(..., on_divergence='stop') "
        "stops quietly)")


def train(net, X, Y, sw, val, epochs, callbacks, batch_size, shuffle, progress, verbose,
          deterministic, hogwild, on_divergence):
    """The epoch loop of ``fit`` and ``partial_fit`` (arguments checked by them): trains
    ``net`` with ``net.optimizer_``, appends to ``net.history_``; everything is allocated here,
    once, before the first epoch."""
    opt, hist, params = net.optimizer_, net.history_, net._params
    N = X.shape[0]
    B = min(batch_size, N)
    ws = Workspace(net, N, B, sw is not None)
    state = opt.kernel_args(params.shape[0], net.dtype)  # kind, hyper-parameters, s1, s2
    snapshot = Snapshot(params, opt, state[2], state[3], net._rng)
    identity = np.arange(N, dtype=np.int64)
    order = identity.copy()
    # An epoch runs in pieces (_Pieces), at least PROGRESS_UPDATES of them to draw a bar.
    n_batches = -(-N // B)
    cap = B * (-(-n_batches // PROGRESS_UPDATES) if progress else n_batches)
    pieces = _Pieces(2 if B == 1 else B, cap + cap % 2 if B == 1 else cap)
    validation = None if val is None else Validation(net, val)
    show = Progress(progress, verbose, net.metric_name)
    for cb in callbacks:
        cb.on_train_begin(net, hist)
    try:
        with kernel_scope(deterministic) as min_par:
            runner = make_runner(net, X, Y, sw, ws, B, min_par, pieces, show, opt, hogwild,
                                 state)
            for _ in range(epochs):
                lr = opt.current_lr()
                snapshot.take()
                if shuffle:  # a permutation of 0..N-1, not of last epoch's order: k runs of
                    order[:] = identity  # one epoch then equal one run of k epochs
                    net._rng.shuffle(order)
                show.begin_epoch(net.n_epochs_ + 1, N)
                t0 = time.perf_counter()
                try:
                    loss, step = runner.run(order, lr)
                    seconds = time.perf_counter() - t0
                    diverged = not math.isfinite(loss) or V._first_nonfinite(params) >= 0
                    val_loss = val_metric = math.nan
                    if validation is not None and not diverged:
                        val_loss, val_metric = validation.evaluate(min_par)
                except KeyboardInterrupt:  # back to the end of the last finished epoch
                    snapshot.restore()
                    raise
                if diverged:
                    snapshot.restore()  # the last finite state
                    if on_divergence == "stop":
                        hist.diverged_epoch = net.n_epochs_ + 1
                        break
                    raise _diverged(net.n_epochs_ + 1, lr, loss)
                if _end_epoch(net, opt, hist, show, callbacks, step, loss, val_loss, val_metric,
                              lr, seconds, N, val is not None):
                    hist.stopped_epoch = net.n_epochs_
                    break
    finally:
        show.close()
    for cb in callbacks:
        cb.on_train_end(net, hist)


def _end_epoch(net, opt, hist, show, callbacks, step, loss, val_loss, val_metric, lr, seconds,
               N, has_val):
    """Record a finished epoch (counters, loss curve, history, schedule) and run the callbacks;
    True when one of them asks to stop."""
    net.n_steps_ += step - opt.step_count
    opt.step_count = step
    net.n_epochs_ += 1
    net.loss_curve_.append(loss)
    row = {"epoch": net.n_epochs_, "loss": loss, "val_loss": val_loss, "val_metric": val_metric,
           "lr": lr, "seconds": seconds,
           "samples_per_s": N / seconds if seconds > 0 else math.inf}
    hist.append(**row)
    show.end_epoch(row)
    opt.end_epoch({"loss": loss, "lr": lr, "val_loss": val_loss if has_val else None})
    stop = False
    for cb in callbacks:
        stop = bool(cb.on_epoch_end(net.n_epochs_, hist, net)) or stop
    return stop
