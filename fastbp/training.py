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
import contextlib
import math
import os
import time

import numba
import numpy as np

from . import _cache
from . import _threads
from . import _validation as V
from ._threads import get_num_threads, kernel_scope
from .callbacks import Progress
from .kernels import network as knet
from .kernels import optim as kopt
from .kernels import train as ktrain
from .kernels.dataparallel import share_backward_layer, share_forward
from .kernels.layout import B_OFF, N_OUT, W_OFF
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
        self.N = self.n_samples = X.shape[0]  # this process's samples; all processes' samples

    def shuffle(self, order, identity):
        """A new random order of the epoch's samples, from the model's generator: a
        permutation of 0..N-1, not of last epoch's order (k runs of one epoch then equal one
        run of k epochs)."""
        order[:] = identity
        self.net._rng.shuffle(order)

    def synchronize(self, loss):
        """After an epoch: the state and loss every process of a distributed fit agrees on."""
        return loss

    def decide(self, stop):
        """Whether to stop, as every process of a distributed fit agrees."""
        return stop

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


class LocalComm:
    """A communicator of one process, with the few methods of an ``mpi4py`` communicator that
    :class:`DataParallel` uses: compiles the data-parallel kernels without MPI (``_cache``), and
    serves as ``comm`` in tests."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def bcast(self, obj, root=0):
        return obj

    def allreduce(self, obj, op=None):
        return obj


def _collectives(comm):
    """``(sum_in_place, isum_in_place, wait_all, bcast_in_place)`` for ``comm``: Allreduce(SUM)
    in place of a NumPy array, the same non-blocking (returns a request), waiting for such
    requests, and Bcast from rank 0 in place. No-ops for one process."""
    if comm.Get_size() == 1:
        def nothing(arr):
            return None
        return nothing, nothing, nothing, nothing
    from mpi4py import MPI
    return (lambda arr: comm.Allreduce(MPI.IN_PLACE, arr, op=MPI.SUM),
            lambda arr: comm.Iallreduce(MPI.IN_PLACE, arr, op=MPI.SUM),
            MPI.Request.Waitall,
            lambda arr: comm.Bcast(arr, root=0))


def _reduce(comm, value, op):
    """``value`` reduced over the ranks by MPI's ``op`` ('SUM', 'MAX'), on every rank."""
    if comm.Get_size() == 1:
        return value
    from mpi4py import MPI
    return comm.allreduce(value, op=getattr(MPI, op))


class DataParallel(_Runner):
    """Synchronous data-parallel training over the processes ("ranks") of an MPI communicator
    (mpi4py). Every rank holds the same model and takes its share of each global batch of
    ``B`` samples; ``kernels.dataparallel.share_gradient`` sums its share's gradients, one
    in-place Allreduce sums them (and the loss and weight sums) over the ranks, and every rank
    applies the same optimizer step (``kernels.optim.apply_update``) to the exact mean gradient
    of the global batch, however unevenly it was split.

    Data given whole (every rank the same ``X``): global batch ``k`` is rows ``order[kB:(k+1)B]``
    of the shared shuffle, split in contiguous shares, the remainder to the first ranks: the
    same batches as one process. Sharded (each rank its own rows): rank ``r`` takes ``B //
    size`` rows (one more for the first ``B % size`` ranks) of its own shuffled rows per step,
    for as many steps as the rank that needs the most; a rank out of rows adds nothing.
    At each epoch's end rank 0's parameters, optimizer state, loss and stop decision are
    broadcast, so every rank stays bitwise the same whatever the reduction order.

    ``OVERLAP``: each layer's gradient starts its reduction (``Iallreduce``) as soon as the
    backward pass has produced it, while the layers below are computed; False: one
    ``Allreduce`` after the whole backward pass (docs/mpi.md has both timed).
    """

    OVERLAP = True

    def __init__(self, net, X, Y, ws, B, min_par, pieces, show, opt, sw, state, comm, sharded):
        super().__init__(net, X, Y, ws, B, min_par, pieces, show)
        self.opt, self.sw, self.comm, self.sharded = opt, sw, comm, sharded
        self.kind, self.hp, self.s1, self.s2 = state
        self.sw_arr = np.empty(0, dtype=net.dtype) if sw is None else sw
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        # The same model on every rank, or the collectives below would mix buffers of other
        # sizes (a crash or a hang): checked on every rank, raised on every rank.
        mine = (tuple(net.layer_sizes), net.dtype.name, opt.get_config())
        every = comm.allgather(mine) if self.size > 1 else [mine]
        if any(other != mine for other in every):
            raise ValueError(f"data-parallel training needs the same network and optimizer on "
                             f"every rank; rank {self.rank} has {mine}, the ranks have "
                             f"{sorted(set(map(str, every)))}")
        self.sum_in_place, self.isum_in_place, self.wait_all, self.bcast_in_place = \
            _collectives(comm)
        layout = net._layout  # each layer's W_l and b_l, contiguous in the gradient buffer
        self.layer_grads = [ws.grads[layout[l, W_OFF]:layout[l, B_OFF] + layout[l, N_OUT]]
                            for l in range(layout.shape[0])]
        self.sums = np.zeros(2)  # loss and weight sums of a step, float64
        if sharded:
            self.share = B // self.size + (self.rank < B % self.size)
            own = -(-self.N // self.share) if self.share else 0
            self.n_steps = _reduce(comm, own, "MAX")
            self.n_samples = _reduce(comm, self.N, "SUM")
        else:
            self.n_steps = -(-self.N // B)
        # every rank starts from rank 0's model, optimizer state and generator
        self._broadcast_state()
        net._rng.bit_generator.state = comm.bcast(net._rng.bit_generator.state, root=0)
        opt.step_count = comm.bcast(opt.step_count, root=0)

    def _broadcast_state(self):
        for arr in (self.net._params, self.s1, self.s2):
            if arr.size:
                self.bcast_in_place(arr)

    def shuffle(self, order, identity):
        if not self.sharded:
            return super().shuffle(order, identity)
        # one draw from the shared generator (which stays the same on every rank), then a
        # permutation of this rank's rows from a generator of its own
        key = int(self.net._rng.integers(2 ** 63))
        order[:] = np.random.default_rng([key, self.rank]).permutation(self.N)

    def _rows(self, order, k):
        """This rank's rows of global step ``k``."""
        if self.sharded:
            return order[k * self.share:min((k + 1) * self.share, self.N)]
        start = k * self.B
        n = min(self.B, self.N - start)
        lo = self.rank * (n // self.size) + min(self.rank, n % self.size)
        hi = lo + n // self.size + (self.rank < n % self.size)
        return order[start + lo:start + hi]

    def run(self, order, lr):
        net, ws = self.net, self.ws
        self.hp[kopt.HP_LR] = lr
        _cache.require("data-parallel", net.dtype)
        _cache.require("optimizer-step", net.dtype)
        step, total, wtotal = self.opt.step_count, 0.0, 0.0
        L = net._layout.shape[0]
        for k in range(self.n_steps):
            rows = self._rows(order, k)
            B = rows.shape[0]
            if B:
                loss, wsum = share_forward(
                    net._params, self.X, self.Y, self.sw_arr, rows, net._layout, net._loss_code,
                    ws.xbuf, ws.ybuf, ws.wbuf, ws.acts, ws.deltas, self.min_par)
            else:  # this rank has no rows in this step (sharded, or a batch smaller than size)
                loss = wsum = 0.0
            requests = []
            for l in range(L - 1, -1, -1):
                if B:
                    share_backward_layer(ws.grads, ws.deltas, ws.acts, ws.xbuf, net._params,
                                         net._layout, l, B, self.min_par)
                else:
                    self.layer_grads[l][:] = 0
                if self.OVERLAP:
                    requests.append(self.isum_in_place(self.layer_grads[l]))
            self.sums[0], self.sums[1] = loss, wsum
            self.sum_in_place(self.sums)
            if self.OVERLAP:
                self.wait_all(requests)
            else:
                self.sum_in_place(ws.grads)
            # the mean over the global batch; a batch of zero weight gets a zero gradient (its
            # step still happens, as in one process: momentum and weight decay still act)
            ws.grads *= net.dtype.type(1.0 / self.sums[1] if self.sums[1] > 0 else 0.0)
            step += 1
            kopt.apply_update(net._params, ws.grads, self.kind, self.hp, self.s1, self.s2, step,
                              self.min_par)
            total += self.sums[0]
            wtotal += self.sums[1]
            if self.show.enabled:
                self.show.advance(rows.shape[0] * self.size, total / wtotal if wtotal else 0.0)
        return total / wtotal if wtotal > 0 else 0.0, step

    def synchronize(self, loss):
        self._broadcast_state()
        return self.comm.bcast(loss, root=0)

    def decide(self, stop):
        return self.comm.bcast(stop, root=0)


def _rank_threads(comm):
    """With several ranks on a node, fastbp's threads per rank so that ranks x threads <= its
    cores (a rank waiting in a collective spins a core), unless the thread count was set
    (``fastbp.set_num_threads``, ``fastbp.threads``)."""
    if comm is None or comm.Get_size() == 1 or _threads._process_threads is not None \
            or getattr(_threads._local, "threads", None) is not None:
        return contextlib.nullcontext()
    from mpi4py import MPI
    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        per_node = node.Get_size()
    finally:
        node.Free()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return _threads.threads(max(1, min((cores or 1) // per_node, numba.config.NUMBA_NUM_THREADS)))


def make_runner(net, X, Y, sw, ws, B, min_par, pieces, show, opt, hogwild, state, comm=None,
                sharded=False):
    """The epoch runner of this fit's kernel path."""
    if comm is not None:
        return DataParallel(net, X, Y, ws, B, min_par, pieces, show, opt, sw, state, comm,
                            sharded)
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
          deterministic, hogwild, on_divergence, comm=None, sharded=False):
    """The epoch loop of ``fit`` and ``partial_fit`` (arguments checked by them): trains
    ``net`` with ``net.optimizer_``, appends to ``net.history_``; everything is allocated here,
    once, before the first epoch. ``comm``: an MPI communicator for data-parallel training
    (:class:`DataParallel`), ``sharded``: each rank has its own rows."""
    opt, hist, params = net.optimizer_, net.history_, net._params
    N = X.shape[0]
    B = min(batch_size, _reduce(comm, N, "SUM") if sharded else N)
    # a batch's weights: sample weights, or a data-parallel share's (ones without weights)
    ws = Workspace(net, N, B, sw is not None or comm is not None)
    state = opt.kernel_args(params.shape[0], net.dtype)  # kind, hyper-parameters, s1, s2
    snapshot = Snapshot(params, opt, state[2], state[3], net._rng)
    identity = np.arange(N, dtype=np.int64)
    order = identity.copy()
    # An epoch runs in pieces (_Pieces), at least PROGRESS_UPDATES of them to draw a bar.
    n_batches = -(-N // B)
    cap = B * (-(-n_batches // PROGRESS_UPDATES) if progress else n_batches)
    pieces = _Pieces(2 if B == 1 else B, cap + cap % 2 if B == 1 else cap)
    validation = None if val is None else Validation(net, val)
    lead = comm is None or comm.Get_rank() == 0  # progress and verbose lines from rank 0 only
    show = Progress(progress and lead, verbose if lead else 0, net.metric_name)
    for cb in callbacks:
        cb.on_train_begin(net, hist)
    try:
        with _rank_threads(comm), kernel_scope(deterministic) as min_par:
            runner = make_runner(net, X, Y, sw, ws, B, min_par, pieces, show, opt, hogwild,
                                 state, comm, sharded)
            for _ in range(epochs):
                lr = opt.current_lr()
                snapshot.take()
                try:  # from here (the shuffle draws from the model's generator) to the epoch's end
                    if shuffle:
                        runner.shuffle(order, identity)
                    show.begin_epoch(net.n_epochs_ + 1, runner.n_samples)
                    t0 = time.perf_counter()
                    loss, step = runner.run(order, lr)
                    seconds = time.perf_counter() - t0
                    loss = runner.synchronize(loss)
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
                if runner.decide(_end_epoch(net, opt, hist, show, callbacks, step, loss,
                                            val_loss, val_metric, lr, seconds,
                                            runner.n_samples, val is not None)):
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
