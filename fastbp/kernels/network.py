"""Whole-network passes: they only slice buffers and call the layer kernels in order.

The network is described by a ``layout`` table (see :mod:`fastbp.kernels.layout`). Workspaces are flat buffers that these functions
slice per batch, so a training epoch allocates nothing.
"""
import numpy as np
from numba import get_num_threads, types
from numba.extending import overload

from .._config import jit
from .dense import (deferred_sweep, dense_backward, dense_backward_serial, dense_forward,
                    dense_forward_serial, dense_grad, dense_grad_serial, use_forward_panels)
from .fused import sgd_per_sample
from .layout import ACT, N_OUT, layer_params, layer_rows, workspace_size
from .losses import loss_sum, output_delta

# Below this many multiply-adds a layer kernel runs on the calling thread: waking the thread
# pool costs more than the work. Every driver below takes this threshold as its ``min_par``
# argument (``parallel_threshold()`` gives the value for the current thread count; numba's
# thread count is not read inside the kernels, which keeps them cacheable). ``min_par=None``
# runs every layer on the calling thread and leaves the threaded kernels out of the build (the
# deferred region's upper layers, which ``defer_first_step`` keeps unshared: 2.7 s of its
# compile time, docs/performance.md).
PARALLEL_MIN_WORK = 1 << 15
SERIAL_ONLY = np.iinfo(np.int64).max


# ``train_epoch`` defers the first two layers' steps (``train_epoch_deferred``) when the first
# layer is shared between threads, every later layer runs on the calling thread, and half of
# ``W_0`` plus two batches of input take at most this many bytes (each of two threads then
# reads both batches for every 4-row block of its half of ``W_0``: they must stay in its L2
# cache). Measured with the first version, which deferred only ``W_0``'s step (the two-layer
# region runs 0.96 to 0.97 of its time at 784-128-10 batch 32; docs/performance.md), deferred
# epoch time over plain-loop time, paired runs, float32 unless said, 2 threads:
# 784-128-10: batch 17 0.885, 32 0.93 on a quiet machine (0.99 to 1.02 in busy phases), 64
# 0.95, 96 0.96, 128 1.0, 256 1.07; float64 batch 17 0.94, 24 0.97, 32 1.03 to 1.04;
# 784-512-10 batch 32 0.94 and 1.05; 256-256-10 batch 64 (second layer threaded) 1.03, 1.04.
# The two-layer region over the plain loop (784-128-10, medians of 9 pairs): float32 batch 64
# 0.95, 96 0.97, 128 0.99, 256 1.02; float64 batch 17 1.01, 32 1.11, 64 1.15. Float32 batch 96
# and float64 batch 32 take the same bytes, so the rule stays where it was.
DEFER_MAX_BYTES = 640 << 10
# ``deferred_epoch`` copies batches whose rows are a multiple of 4 KiB long into rows this
# much longer (one cache line)
PAD_BYTES = 64

# A mini-batch layer kernel needs BATCH_FACTOR times that much work: its threads split the
# layer into 4-row blocks, and a narrow layer has too few of them to pay for the pool (on
# 784-128-10 with batch 32 the 128->10 layer, 41k multiply-adds in 3 row blocks, is faster on
# the calling thread: 86 against 91 us per step, measured with 2 threads).
BATCH_FACTOR = 4


@jit()
def batch_threaded(B, weight, min_par):
    """Whether a mini-batch layer kernel on ``B`` samples and ``weight`` shares its work."""
    return B * weight.shape[0] * weight.shape[1] // BATCH_FACTOR >= min_par


def parallel_threshold():
    """``min_par`` for the drivers: ``PARALLEL_MIN_WORK``, or never when numba has 1 thread."""
    return PARALLEL_MIN_WORK if get_num_threads() > 1 else SERIAL_ONLY


@jit(driver=True)
def layer_forward(out, a, params, layout, l, min_par):
    """One layer's forward pass, on the calling thread or shared, by the size of the work."""
    w, b = layer_params(params, layout, l)
    if min_par is not None and batch_threaded(a.shape[0], w, min_par):
        dense_forward(out, a, w, b, layout[l, ACT])
    else:
        dense_forward_serial(out, a, w, b, layout[l, ACT])


@jit(driver=True)
def forward_batch(acts, x, params, layout, min_par):
    """Forward pass of a batch; every ``a_l`` is kept in ``acts`` for the backward pass.

    acts (>= B * sum_l n_out_l,) workspace, x (B, n_0) -> view of a_L (B, n_L).
    """
    a = layer_rows(acts, layout, 0, x.shape[0])
    layer_forward(a, x, params, layout, 0, min_par)
    return forward_upper(acts, a, params, layout, min_par)


@jit(driver=True)
def forward_upper(acts, a, params, layout, min_par):
    """``forward_batch`` above the first layer, from its output ``a`` = a_0 (B, n_1) (in its
    slot of ``acts`` or elsewhere): a_1 .. a_L of the B samples in ``acts`` -> view of a_L (B,
    n_L); ``a`` itself when there is one layer."""
    B = a.shape[0]
    for l in range(1, layout.shape[0]):
        out = layer_rows(acts, layout, l, B)
        layer_forward(out, a, params, layout, l, min_par)
        a = out
    return a


@jit(driver=True)
def layer_backward(grads, d_prev, d, a_prev, params, layout, l, scale, min_par):
    """One layer's backward pass: its gradients from ``d`` = delta_l and ``a_prev`` = a_{l-1},
    and, unless ``l == 0``, ``d_prev`` = delta_{l-1} (computed with W_l before any update)."""
    dw, db = layer_params(grads, layout, l)
    w, _ = layer_params(params, layout, l)
    threads = batch_threaded(a_prev.shape[0], w, min_par)
    # ``accumulate`` passed, not left to its default: one build of dense_grad for both calls
    if threads:
        dense_grad(dw, db, d, a_prev, scale, False)
    else:
        dense_grad_serial(dw, db, d, a_prev, scale, False)
    if l > 0:
        if threads:
            dense_backward(d_prev, d, w, a_prev, layout[l - 1, ACT])
        else:
            dense_backward_serial(d_prev, d, w, a_prev, layout[l - 1, ACT])


@jit(driver=True)
def backward_batch(grads, deltas, acts, x, y, params, layout, loss, min_par):
    """Backward pass of a batch after ``forward_batch``: gradients of the mean loss into ``grads``.

    grads (P,) twin of params, deltas workspace like acts, acts as left by forward_batch,
    x (B, n_0), y (B, n_L) targets, params (P,), layout (L, 5), loss: loss code.
    """
    B = x.shape[0]
    L = layout.shape[0]
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    backward_from_delta(grads, deltas, acts, x, params, layout,
                        params.dtype.type(1.0) / params.dtype.type(B), min_par)


@jit(driver=True)
def backward_from_delta(grads, deltas, acts, x, params, layout, scale, min_par):
    """The layers' backward passes once the output delta is in its slot of ``deltas``:
    ``grads`` gets ``scale * sum_b`` of each layer's outer products."""
    B = x.shape[0]
    L = layout.shape[0]
    d = layer_rows(deltas, layout, L - 1, B)
    for l in range(L - 1, 0, -1):
        d_prev = layer_rows(deltas, layout, l - 1, B)
        layer_backward(grads, d_prev, d, layer_rows(acts, layout, l - 1, B), params, layout, l,
                       scale, min_par)
        d = d_prev
    layer_backward(grads, d, d, x, params, layout, 0, scale, min_par)


@jit(driver=True)
def backward_sgd_batch(deltas, acts, x, y, params, layout, loss, lr, min_par):
    """Backward pass of a batch after ``forward_batch``, with the plain SGD step fused into the
    gradient kernel: ``W_l -= (lr / B) delta_l^T a_{l-1}`` layer by layer, each ``delta_{l-1}``
    computed before ``W_l`` changes. No gradient buffer is written.
    """
    B = x.shape[0]
    step = -lr / params.dtype.type(B)
    backward_sgd_upper(deltas, acts, y, params, layout, loss, step, min_par, 1)
    w, b = layer_params(params, layout, 0)
    d = layer_rows(deltas, layout, 0, B)
    if batch_threaded(B, w, min_par):
        dense_grad(w, b, d, x, step, True)
    else:
        dense_grad_serial(w, b, d, x, step, True)


@jit(driver=True)
def backward_sgd_upper(deltas, acts, y, params, layout, loss, step, min_par, l_low):
    """``backward_sgd_batch`` short of the lowest layers' steps: the output delta, then for
    ``l = L-1 .. l_low`` delta_{l-1} and the step ``W_l += step * delta_l^T a_{l-1}``. Leaves
    delta_{l_low - 1} (the output delta when ``l_low = L``) in its slot of ``deltas``
    (y (B, n_L); step = -lr / B; 1 <= l_low <= L)."""
    B = y.shape[0]
    L = layout.shape[0]
    d = layer_rows(deltas, layout, L - 1, B)
    output_delta(d, layer_rows(acts, layout, L - 1, B), y, loss, layout[L - 1, ACT])
    for l in range(L - 1, l_low - 1, -1):
        w, b = layer_params(params, layout, l)
        a_prev = layer_rows(acts, layout, l - 1, B)
        d_prev = layer_rows(deltas, layout, l - 1, B)
        if min_par is not None and batch_threaded(B, w, min_par):
            dense_backward(d_prev, d, w, a_prev, layout[l - 1, ACT])
            dense_grad(w, b, d, a_prev, step, True)
        else:
            dense_backward_serial(d_prev, d, w, a_prev, layout[l - 1, ACT])
            dense_grad_serial(w, b, d, a_prev, step, True)
        d = d_prev


@jit()
def predict_into(out, X, params, layout, acts, chunk, min_par):
    """out (N, n_L) <- network output for X (N, n_0), ``chunk`` rows at a time through ``acts``
    (>= chunk * sum_l n_out_l)."""
    N = X.shape[0]
    for start in range(0, N, chunk):
        stop = min(start + chunk, N)
        a = forward_batch(acts, X[start:stop], params, layout, min_par)
        out[start:stop] = a


@jit()
def batch_rows(X, Y, order, start, B, xbuf, ybuf):
    """Views ``(x (B, n_0), y (B, n_L))`` of the batch ``order[start:start + B]``: into X and Y
    when it is a run of consecutive samples (no copy), else gathered into xbuf, ybuf."""
    n0 = X.shape[1]
    m = Y.shape[1]
    first = order[start]
    for r in range(1, B):
        if order[start + r] != first + r:
            x = xbuf[:B * n0].reshape((B, n0))
            y = ybuf[:B * m].reshape((B, m))
            gather_rows(x, X, order, start)
            gather_rows(y, Y, order, start)
            return x, y
    return X[first:first + B], Y[first:first + B]


@jit(noalias=True)
def gather_rows(dst, src, order, start):
    """``dst[k, :n] = src[order[start + k]]`` for every row ``k`` of ``dst`` (dst (B, >= n)
    must not overlap src (N, n); a padded batch has longer rows). Element loops: numba
    compiles them to a vectorized copy, where a row-slice assignment ``dst[k] = src[i]`` took
    twice as long (32 shuffled rows of 784 float32 from a 100 MB array: 11.0 against 21.6
    us)."""
    n = src.shape[1]
    for k in range(dst.shape[0]):
        i = order[start + k]
        for j in range(n):
            dst[k, j] = src[i, j]


@jit()
def train_epoch(params, grads, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts,
                deltas, min_par, n_tasks):
    """One epoch of plain mini-batch SGD (``grads`` is not used: the step is fused into the
    gradient kernels); returns the mean training loss (each batch's
    loss measured before its update, as scikit-learn's ``loss_curve_``).

    params, grads (P,); X (N, n_0), Y (N, n_L); order (n,) int64: the samples to train on, in
    the order they are visited (a permutation of 0..N-1 for a whole epoch; a slice of one for
    a part of it: the epoch's batches that start at multiples of ``batch_size`` in ``order``);
    lr of params' dtype; workspaces xbuf (>= batch_size * n_0), ybuf (>= batch_size * n_L),
    acts (>= max(batch_size, 2) * S + batch_size * n_1 with S = sum_l n_out_l), deltas
    (>= batch_size * S); the deferred path below needs the extra ``batch_size * n_1`` of
    ``acts``, and is skipped without it. ``n_tasks``: the number of threads the deferred path
    splits its region into (the results do not depend on it). Batch size 1 takes the fused per-sample path (:mod:`fastbp.kernels.fused`); where
    ``defer_first_step`` says so, the first two layers' steps are deferred
    (``train_epoch_deferred``).
    """
    N = order.shape[0]
    S = workspace_size(layout)
    if batch_size == 1:
        return sgd_per_sample(params, X, Y, order, 0, N, lr, layout, loss,
                              acts[:2 * S].reshape((2, S)), deltas[:S], min_par, 0.0) / N
    if (acts.shape[0] >= batch_size * (S + layout[0, N_OUT])
            and defer_first_step(batch_size, params, layout, min_par)):
        return train_epoch_deferred(params, X, Y, order, batch_size, lr, layout, loss, ybuf,
                                    acts, deltas, min_par, n_tasks) / N
    return train_batches(params, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts,
                         deltas, min_par, 0.0) / N


@jit()
def train_batches(params, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts, deltas,
                  min_par, total):
    """``train_epoch``'s plain loop (no deferred step): forward, loss, backward with the fused
    step, batch after batch; returns ``total`` (float64) plus the batches' loss sums, added one
    by one (as ``sgd_per_sample``)."""
    N = order.shape[0]
    for start in range(0, N, batch_size):
        x, y = batch_rows(X, Y, order, start, min(batch_size, N - start), xbuf, ybuf)
        out = forward_batch(acts, x, params, layout, min_par)
        total += loss_sum(out, y, loss)
        backward_sgd_batch(deltas, acts, x, y, params, layout, loss, lr, min_par)
    return total


def sgd_epoch_path(batch_size, params, layout, acts, min_par, order=None):
    """Which of ``train_epoch``'s paths an epoch of plain SGD takes, decided in Python so that
    each compiles (and is cached) alone: ``'sgd-per-sample'``, ``'sgd-deferred'`` (batches read
    through their rows), ``'sgd-deferred-slices'`` (when the epoch's ``order`` is given and
    every batch is a run of consecutive samples, read as slices of X) or ``'sgd-batches'``
    (the names of :mod:`fastbp._cache`'s kernel sets)."""
    if batch_size == 1:
        return "sgd-per-sample"
    S = workspace_size(layout)
    if (acts.shape[0] >= batch_size * (S + layout[0, N_OUT])
            and defer_first_step(batch_size, params, layout, min_par)):
        if order is not None and batches_are_slices(order, batch_size):
            return "sgd-deferred-slices"
        return "sgd-deferred"
    return "sgd-batches"


def sgd_epoch(path, params, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts, deltas,
              min_par, n_tasks, total=0.0):
    """``train_epoch`` from Python along ``path`` (``sgd_epoch_path``): the same kernels on the
    same arguments, and the numbers of each kernel's own build (``train_epoch`` builds its
    callees into itself: the same numbers up to rounding). Returns ``total`` plus the loss sum
    of these samples, added one by one (an epoch run in pieces, each given the last one's
    total, gives one call's numbers bit for bit). The path's kernel set is compiled (or
    loaded) on its first use (:mod:`fastbp._cache`)."""
    total = float(total)
    from .. import _cache  # (here, not at the top: the kernels' digests leave _cache.py out)
    _cache.require(path, params.dtype)
    N = order.shape[0]
    if path == "sgd-per-sample":
        S = workspace_size(layout)
        return sgd_per_sample(params, X, Y, order, 0, N, lr, layout, loss,
                              acts[:2 * S].reshape((2, S)), deltas[:S], min_par, total)
    if path == "sgd-deferred":
        return deferred_epoch(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts,
                              deltas, min_par, n_tasks, order, total)
    if path == "sgd-deferred-slices":
        return deferred_epoch(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts,
                              deltas, min_par, n_tasks, None, total)
    return train_batches(params, X, Y, order, batch_size, lr, layout, loss, xbuf, ybuf, acts,
                         deltas, min_par, total)


@jit()
def defer_first_step(B, params, layout, min_par):
    """Whether ``train_epoch`` defers the first two layers' steps for batches of ``B``: the first
    layer's kernels are threaded, no later layer's are, and half of ``W_0`` plus two batches of
    input fit in ``DEFER_MAX_BYTES``."""
    w0, _ = layer_params(params, layout, 0)
    if not batch_threaded(B, w0, min_par):
        return False
    for l in range(1, layout.shape[0]):
        w, _ = layer_params(params, layout, l)
        if batch_threaded(B, w, min_par):
            return False
    # and only where ``dense_forward`` takes the tiles ``deferred_sweep`` takes, not the
    # packed panels: the deferred steps give the plain loop's numbers, bit for bit
    return ((w0.size // 2 + 2 * B * w0.shape[1]) * params.itemsize <= DEFER_MAX_BYTES
            and not use_forward_panels(B, w0.shape[0]))


@jit()
def train_epoch_deferred(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts, deltas,
                         min_par, n_tasks):
    """``train_epoch``'s batches with the steps of the first two layers deferred: batch ``t``'s
    delta propagation to the first layer, its step on ``W_1`` and on ``W_0``, and batch
    ``t + 1``'s first-layer forward pass with its activation all run in one threaded region
    (``deferred_sweep``, ``n_tasks`` tasks), the only one of a step; the layers above run on the
    calling thread. The numbers are ``train_epoch``'s plain loop's, bit for bit: batch ``t + 1``
    still sees every update of batch ``t`` (layers above the second are stepped at once, as
    before, and ``a_1`` is computed after the region). The last batch's steps are applied at
    the end. The region reads each batch's rows of ``X`` in place (no gathered copy; only the
    targets are gathered, into ``ybuf``): as a slice of ``X`` when every batch of the epoch is
    a run of consecutive samples, else through its indices in ``order`` (``batch_input``), and
    ``a_0`` alternates between its slot of ``acts`` and the ``batch_size * n_1`` after
    ``acts``' layer slots (the previous batch's activations are still needed). Returns the loss
    sum.
    """
    if consecutive_batches(order, batch_size):
        return deferred_epoch(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts,
                              deltas, min_par, n_tasks, None, 0.0)
    return deferred_epoch(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts, deltas,
                          min_par, n_tasks, order, 0.0)


@jit()
def consecutive_batches(order, batch_size):
    """Whether every batch ``order[start:start + batch_size]`` is a run of consecutive samples."""
    N = order.shape[0]
    for start in range(0, N, batch_size):
        first = order[start]
        for r in range(1, min(batch_size, N - start)):
            if order[start + r] != first + r:
                return False
    return True


def batches_are_slices(order, batch_size):
    """``consecutive_batches`` in NumPy, for Python callers (no kernel to compile)."""
    steps = np.diff(order) == 1
    steps[batch_size - 1::batch_size] = True  # the step from one batch to the next is free
    return bool(steps.all())


def batch_input(X, order, start, B, by_rows):
    """The batch ``order[start:start + B]`` as ``deferred_sweep`` reads it: ``(X[first:first +
    B], None)`` (a run of consecutive samples, by_rows None) or ``(X, by_rows[start:start +
    B])`` (its rows, read through their indices). Chosen when compiling, by ``by_rows``' type."""
    if by_rows is None:
        first = order[start] if B > 0 else 0
        return X[first:first + B], None
    return X, by_rows[start:start + B]


@overload(batch_input)
def _batch_input(X, order, start, B, by_rows):
    if isinstance(by_rows, types.NoneType):
        def in_place(X, order, start, B, by_rows):
            first = order[start] if B > 0 else 0
            return X[first:first + B], None
        return in_place
    return lambda X, order, start, B, by_rows: (X, by_rows[start:start + B])


def padded_batch(buf, X, order, start, B, by_rows, ident):
    """``batch_input``'s batch copied into the rows of ``buf`` (B' >= B, n_in + pad), which are
    longer than ``X``'s by a cache line: the batch, of the same types, as ``(buf[:B], None)``
    or ``(buf, ident[:B])`` (``ident`` = 0, 1, ...). Chosen when compiling, as
    ``batch_input``."""
    if by_rows is None:
        return buf[:B], None
    return buf, ident[:B]


@overload(padded_batch)
def _padded_batch(buf, X, order, start, B, by_rows, ident):
    if isinstance(by_rows, types.NoneType):
        def in_rows(buf, X, order, start, B, by_rows, ident):
            gather_rows(buf[:B], X, order, start)
            return buf[:B], None
        return in_rows

    def by_index(buf, X, order, start, B, by_rows, ident):
        gather_rows(buf[:B], X, order, start)
        return buf, ident[:B]
    return by_index


@jit()
def deferred_epoch(params, X, Y, order, batch_size, lr, layout, loss, ybuf, acts, deltas,
                   min_par, n_tasks, by_rows, total):
    """``train_epoch_deferred``'s loop, compiled once for batches that are slices of ``X``
    (``by_rows`` None) and once for batches read through their rows (``by_rows`` = order).
    Returns ``total`` (float64) plus the batches' loss sums, added one by one."""
    N = order.shape[0]
    L = layout.shape[0]
    S = workspace_size(layout)
    n1 = layout[0, N_OUT]
    n_y = Y.shape[1]
    w0, b0 = layer_params(params, layout, 0)
    # the next layer's parameters, or empty ones for a one-layer network (``deferred_sweep``
    # then takes delta_0, the output delta, as given)
    w1, b1 = layer_params(params, layout, min(1, L - 1))
    m = w1.shape[0] if L > 1 else 0
    w1 = w1[:m]
    b1 = b1[:m]
    # no batch (before the first one, and after the last), then the previous batch: its input,
    # a_0, and delta_0 and delta_1 in their slots of ``deltas``
    no_inp, no_rows = batch_input(X, order, 0, 0, by_rows)
    inp_prev, rows_prev, B_prev = no_inp, no_rows, 0
    a_prev = acts[:0].reshape((0, n1))
    d0_prev = layer_rows(deltas, layout, 0, 0)
    d1_prev = deltas[:0].reshape((0, m))
    step_prev = params.dtype.type(0.0)
    # Input rows a multiple of 4 KiB apart put a column of every row of a batch in one L1
    # cache set, and the region reads a strip of each row for every 4-row block of W_0: such
    # batches are copied into rows a cache line longer (docs/performance.md, "Deferred region
    # over rows 4 KiB apart").
    pad = PAD_BYTES // X.itemsize if X.shape[1] * X.itemsize % 4096 == 0 else 0
    xpad = np.empty((2 if pad > 0 else 0, batch_size, X.shape[1] + pad), dtype=X.dtype)
    ident = np.arange(batch_size if pad > 0 else 0)
    for k, start in enumerate(range(0, N, batch_size)):
        B = min(batch_size, N - start)
        if pad > 0:
            inp, rows = padded_batch(xpad[k % 2], X, order, start, B, by_rows, ident)
        else:
            inp, rows = batch_input(X, order, start, B, by_rows)
        y = ybuf[:B * n_y].reshape((B, n_y))
        gather_rows(y, Y, order, start)
        a = acts[(k % 2) * batch_size * S:(k % 2) * batch_size * S + B * n1].reshape((B, n1))
        deferred_sweep(a, d0_prev, inp, rows, inp_prev, rows_prev, a_prev, d1_prev, w0, b0, w1,
                       b1, step_prev, B_prev > 0, layout[0, ACT], n_tasks)
        total += loss_sum(forward_upper(acts, a, params, layout, None), y, loss)
        step_prev = -lr / params.dtype.type(B)
        d0_prev = layer_rows(deltas, layout, 0, B)
        d1_prev = deltas[B * n1:B * (n1 + m)].reshape((B, m))
        if L == 1:
            output_delta(d0_prev, a, y, loss, layout[0, ACT])
        else:
            backward_sgd_upper(deltas, acts, y, params, layout, loss, step_prev, None, 2)
        inp_prev, rows_prev, B_prev = inp, rows, B
        a_prev = a
    if B_prev > 0:  # the last batch's steps: the same region without a new batch
        deferred_sweep(acts[:0].reshape((0, n1)), d0_prev, no_inp, no_rows, inp_prev, rows_prev,
                       a_prev, d1_prev, w0, b0, w1, b1, step_prev, True, layout[0, ACT], n_tasks)
    return total
