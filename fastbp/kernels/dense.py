"""Dense-layer kernels: forward with the activation fused, delta propagation, gradients.

Argument order everywhere: outputs first, then inputs, then parameters, then codes/scalars.
Each kernel exists twice (``_config.jit_pair``): ``name`` is threaded with ``prange``,
``name_serial`` is the same body compiled without threads, for work too small to share.
``deferred_sweep`` (a batch's SGD step on two layers and the next batch's forward pass in one
threaded region) is threaded only.

Threads never write the same element: the forward pass gives each thread whole 4-row blocks of
output units, delta propagation whole (4-sample, column-chunk) tiles of ``dinp``, and the gradient
whole (4-row, column-chunk) tiles of ``dW`` (on big layers, strips of units of ``out`` and
strips of columns of ``dinp`` and ``dW`` over packed panels). There are no atomics and no
reductions across threads, so a result does not depend on the number of threads.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .._config import jit, jit_pair
from .activations import (IDENTITY, SOFTMAX, activate_part, activate_row, activation_grad,
                          activation_parts)
from .simd import (PANEL_ROWS, column_sums, delta_panel, delta_tile, dot_tile, forward_panel,
                   grad_panel, grad_tile, panel_vectors, transpose_block, vector_bits)

# Column chunk of delta propagation: 4 rows of ``dinp`` and 4 of ``W`` this wide (float64)
# stay in L1 while the loop over ``W``'s rows runs over them.
CHUNK = 256
# ``dense_grad``'s split. With a batch of inputs up to ``GRAD_COLUMNS_BYTES``, the threads
# share (4-row, column-chunk) tiles, chunks at most ``GRAD_CHUNK`` wide (equal chunks). With a
# larger one, they share strips of columns (``grad_strips``), every row of ``dW`` for one strip
# before the next, so that the strip of the input (batch x strip) is read from memory once and
# then from the cache; a tile would read its chunk of the whole batch again for every 4 rows.
# 784-128, float32, 2 threads, a new batch from memory each call (10th percentiles, this tree
# against the tiles alone, two alternated processes each): batch 256 278 and 322 against 355
# and 357 us, batch 512 537 and 560 against 649 and 793. With 2 threads and 4-row blocks over
# all columns (no chunks) against the strips given to threads whole: equal at batch 128, and
# faster at 64 and 32 (66 against 77 and 36 against 45 us, inputs in cache), hence the bound.
GRAD_CHUNK = 512
GRAD_COLUMNS_BYTES = 512 * 1024
# ``dense_forward``: with a batch of inputs larger than ``FORWARD_SAMPLES_BYTES``, threads own
# chunks of ``FORWARD_CHUNK`` samples (a multiple of 4) over every unit, not blocks of units
# over the whole batch (which read the whole batch again for every block). 784-128, float32,
# 2 threads, batch 256 from memory: 283 and 293 against 309 and 312 us (chunks of 16: 264
# and 298 against 299 and 302).
FORWARD_SAMPLES_BYTES = 512 * 1024
FORWARD_CHUNK = 32
# ... and chunks of up to ``FORWARD_CHUNK_MAX`` samples, at least 4 to a batch
# (``forward_chunk``): ``W`` is read again for every chunk, and a chunk of 128 inputs of 784
# to 1024 floats still stays in L2. 784-1024 and 1024-1024, float32, 2 threads, batch 256 and
# 1024: 3 to 9 % faster with 64 than with 32, 1 to 7 % more with 128 (docs/performance.md,
# "Packed panels").
FORWARD_CHUNK_MAX = 128
# ... and for a layer of fewer than ``FORWARD_NARROW_UNITS`` units on at least 2 chunks of
# samples: its few 4-unit blocks (3 for 10 units, the last 2 units in scalar sums) do not share
# evenly between threads. 1.08 to 1.18 times as fast at 10 to 20 units (docs/performance.md,
# "Narrow output layers").
FORWARD_NARROW_UNITS = 32
# ``deferred_sweep``: while a task applies the step to its first this many 4-row blocks, it
# prefetches the new batch into L2, and it takes their sums after. On 784-128-10, batch 32,
# float32, 2 threads, in-order data, epoch time over the one-layer sweep that came before
# (medians of 25 paired epochs): 0.963 to 0.968 with 2, 4, 8 or 16 (all of a task's) blocks,
# 0.979 without the prefetch and the reordering, 1.03 with the reordering alone.
PREFETCH_BLOCKS = 4
# Packed panels (``simd.delta_panel``, ``simd.grad_panel``): from ``PANEL_MIN_SAMPLES``
# samples, ``PANEL_MIN_TERMS`` terms per sum (``W``'s rows in ``dense_backward``) and
# ``PANEL_MIN_PRODUCT`` samples x terms, or ``PANEL_ALIASED_MIN_*`` samples and terms for rows
# of ``W`` a multiple of 2 KiB apart (``use_panels``); ``GRAD_PANEL_*`` for ``dense_grad``
# (``use_grad_panels``: samples, rows of ``dW``, bytes per input row). ``dense_backward`` and
# ``dense_grad`` copy the strip of the source they read (``W``'s columns, the input's columns)
# into a contiguous panel ``PANEL_BYTES`` wide and take 6-row tiles over it; the copy is then
# read again by every 6-row block. Below that the copy costs more than it saves (and short
# strips stay in cache). A strip is one task, packed once; when the strips do not share out
# evenly between 2 threads, the last one is split into ``PANEL_GROUPS`` tasks (each packs its
# own copy), one for each thread (``panel_groups``, ``panel_task``). Measurements:
# docs/performance.md, "Packed panels", "Gradient copies", "Panel copies" (where the prefetched
# copy moved the gradient's bound) and "Gradient panels below 128 samples".
PANEL_MIN_SAMPLES = 64
PANEL_MIN_TERMS = 256
PANEL_MIN_PRODUCT = 32768
PANEL_ALIASED_MIN_TERMS = 64
PANEL_ALIASED_MIN_SAMPLES = 40
GRAD_PANEL_MIN_SAMPLES = 128
GRAD_PANEL_MIN_ROWS = 64
GRAD_PANEL_MIN_BYTES = 1024
GRAD_PANEL_ALIASED_SAMPLES = 32
GRAD_PANEL_ALIASED_PRODUCT = 8192
GRAD_PANEL_WIDE_SAMPLES = 64
GRAD_PANEL_WIDE_ROW_BYTES = 1024
# ``dense_grad``'s panel tiles read the input's strip in place, not copied (``grad_in_place``),
# when the strip's lines all stay in L1 (8 ways of 64 sets: at most half of the sets' ways that
# input rows so many lines apart fall in) and the coefficients are at most
# ``GRAD_IN_PLACE_BYTES`` (past it the tiles ran slower in place than from the copy). At 256 bits
# (a strip is one line a row); docs/performance.md, "Gradient strips read in place".
GRAD_IN_PLACE_BYTES = 192 * 1024
# ``dense_forward`` takes packed panels of ``W`` transposed (``forward_task``) from
# ``FORWARD_PANEL_MIN_SAMPLES`` samples and ``FORWARD_PANEL_MIN_UNITS`` units: the copy of a
# strip costs about as much as a few samples' sums over it. docs/performance.md, "Forward
# panels".
FORWARD_PANEL_MIN_SAMPLES = 96
FORWARD_PANEL_MIN_UNITS = 32
VECTOR_BITS = vector_bits()
PANEL_BYTES = panel_vectors() * VECTOR_BITS // 8
# ``pack_transposed``'s squares: a vector's lanes a side (``simd.transpose_block``)
SQUARE_BYTES = VECTOR_BITS // 8
PANEL_GROUPS = 2
# ``dense_grad``'s coefficients are packed in pieces of this many samples (one task each)
COEF_PIECE = 128
# ``pack_columns`` prefetches the row this many rows ahead of the one it copies: its strip of
# the source (an input batch, W) is a line or a few from each row, rows a page or so apart,
# which the hardware prefetchers do not follow. docs/performance.md, "Panel copies".
PACK_AHEAD = 16
# From this many bytes of the batch's rows a tile writes (and, in ``dense_backward``, reads for
# the derivative), the forward and delta panels prefetch the next 6-sample tile's lines of them:
# a line from each row, rows a page or so apart, which the hardware prefetchers do not follow.
# Smaller batches mostly sit in L2. docs/performance.md, "Panel tiles: the next rows prefetched".
PANEL_AHEAD_BYTES = 1 << 20


def row_of(rows, b):
    """Where sample ``b`` of a batch is in its array: ``b`` when ``rows`` is None (the batch is
    the array's rows, in order), else ``rows[b]`` (the batch is the rows ``rows`` of a larger
    array, read in place: no gathered copy). Chosen when compiling: the None case costs nothing."""
    return b if rows is None else rows[b]


@overload(row_of)
def _row_of(rows, b):
    if isinstance(rows, types.NoneType):
        return lambda rows, b: b
    # unsigned: numba then emits no negative-index wrap-around for the row (see ``grad_block``)
    return lambda rows, b: np.uint64(rows[b])


def n_rows(arr, rows):
    """The number of samples in a batch given as ``row_of`` takes it."""
    return arr.shape[0] if rows is None else rows.shape[0]


@overload(n_rows)
def _n_rows(arr, rows):
    if isinstance(rows, types.NoneType):
        return lambda arr, rows: arr.shape[0]
    return lambda arr, rows: rows.shape[0]


def tile_sums(out, b, weight, i0, inp, q0, q1, q2, q3, bias):
    """The 4 (units) x 4 (samples) tile of ``forward_rows4``: ``out[b + k, i0 + u] = bias[i0 + u]
    + sum_j weight[i0 + u, j] inp[q_k, j]`` for k, u < 4. C-contiguous arrays take
    ``simd.dot_tile``; others (column views from the user's ``@njit`` code) ``tile_loops``.
    Chosen when compiling."""
    tile_loops(out, b, weight, i0, inp, q0, q1, q2, q3, bias)


@overload(tile_sums)
def _tile_sums(out, b, weight, i0, inp, q0, q1, q2, q3, bias):
    if all(a.layout == "C" for a in (out, weight, inp, bias)):
        def vectors(out, b, weight, i0, inp, q0, q1, q2, q3, bias):
            dot_tile(out, b, weight, i0, inp, q0, q1, q2, q3, bias)
        return vectors

    def loops(out, b, weight, i0, inp, q0, q1, q2, q3, bias):
        tile_loops(out, b, weight, i0, inp, q0, q1, q2, q3, bias)
    return loops


@jit(noalias=True)
def tile_loops(out, b, weight, i0, inp, q0, q1, q2, q3, bias):
    """``tile_sums`` as numba loops, for any layout: 8 loads feed 16 multiply-adds, and the
    compiler closes each of the 16 sums on its own (over ``weight``'s columns)."""
    n_in = weight.shape[1]
    w0 = weight[i0]
    w1 = weight[i0 + 1]
    w2 = weight[i0 + 2]
    w3 = weight[i0 + 3]
    x0 = inp[q0]
    x1 = inp[q1]
    x2 = inp[q2]
    x3 = inp[q3]
    s00 = type(bias[i0])(0.0)
    s01 = s00
    s02 = s00
    s03 = s00
    s10 = s00
    s11 = s00
    s12 = s00
    s13 = s00
    s20 = s00
    s21 = s00
    s22 = s00
    s23 = s00
    s30 = s00
    s31 = s00
    s32 = s00
    s33 = s00
    for j in range(n_in):
        u0 = x0[j]
        u1 = x1[j]
        u2 = x2[j]
        u3 = x3[j]
        v = w0[j]
        s00 += v * u0
        s01 += v * u1
        s02 += v * u2
        s03 += v * u3
        v = w1[j]
        s10 += v * u0
        s11 += v * u1
        s12 += v * u2
        s13 += v * u3
        v = w2[j]
        s20 += v * u0
        s21 += v * u1
        s22 += v * u2
        s23 += v * u3
        v = w3[j]
        s30 += v * u0
        s31 += v * u1
        s32 += v * u2
        s33 += v * u3
    c0 = bias[i0]
    c1 = bias[i0 + 1]
    c2 = bias[i0 + 2]
    c3 = bias[i0 + 3]
    out[b, i0] = s00 + c0
    out[b + 1, i0] = s01 + c0
    out[b + 2, i0] = s02 + c0
    out[b + 3, i0] = s03 + c0
    out[b, i0 + 1] = s10 + c1
    out[b + 1, i0 + 1] = s11 + c1
    out[b + 2, i0 + 1] = s12 + c1
    out[b + 3, i0 + 1] = s13 + c1
    out[b, i0 + 2] = s20 + c2
    out[b + 1, i0 + 2] = s21 + c2
    out[b + 2, i0 + 2] = s22 + c2
    out[b + 3, i0 + 2] = s23 + c2
    out[b, i0 + 3] = s30 + c3
    out[b + 1, i0 + 3] = s31 + c3
    out[b + 2, i0 + 3] = s32 + c3
    out[b + 3, i0 + 3] = s33 + c3


@jit(noalias=True)
def forward_rows4(out, inp, weight, bias, i0, rows, b0, b1):
    """Units ``i0 .. i0 + 3`` of ``dense_forward``'s sums (no activation): ``out[b, i] =
    sum_j W_ij inp_bj + b_i`` for the samples ``b0 <= b < b1`` (sample ``b`` is the row
    ``row_of(rows, b)`` of ``inp``). 4 (units) x 4 (samples) register tiles (``tile_sums``); a
    last 1 to 3 samples take 4 units x 1 sample. A sample's sums do not depend on the range it
    is in (``b0`` a multiple of 4: the same samples take the tiles). ``inp`` may have more
    columns than ``weight`` (a padded copy): the sums take ``weight``'s."""
    n_in = weight.shape[1]
    b = b0
    while b + 4 <= b1:
        tile_sums(out, b, weight, i0, inp, row_of(rows, b), row_of(rows, b + 1),
                  row_of(rows, b + 2), row_of(rows, b + 3), bias)
        b += 4
    w0 = weight[i0]
    w1 = weight[i0 + 1]
    w2 = weight[i0 + 2]
    w3 = weight[i0 + 3]
    while b < b1:
        x0 = inp[row_of(rows, b)]
        s0 = type(bias[i0])(0.0)
        s1 = s0
        s2 = s0
        s3 = s0
        for j in range(n_in):
            u = x0[j]
            s0 += w0[j] * u
            s1 += w1[j] * u
            s2 += w2[j] * u
            s3 += w3[j] * u
        out[b, i0] = s0 + bias[i0]
        out[b, i0 + 1] = s1 + bias[i0 + 1]
        out[b, i0 + 2] = s2 + bias[i0 + 2]
        out[b, i0 + 3] = s3 + bias[i0 + 3]
        b += 1


@jit(noalias=True)
def forward_row(out, inp, weight, bias, i, rows, b0, b1):
    """Unit ``i`` of ``dense_forward``'s sums, for the last 1 to 3 units: 1 unit x 4 samples at
    a time, 4 independent sums (samples and columns as in ``forward_rows4``)."""
    n_in = weight.shape[1]
    w = weight[i]
    c = bias[i]
    b = b0
    while b + 4 <= b1:
        x0 = inp[row_of(rows, b)]
        x1 = inp[row_of(rows, b + 1)]
        x2 = inp[row_of(rows, b + 2)]
        x3 = inp[row_of(rows, b + 3)]
        s0 = type(c)(0.0)
        s1 = s0
        s2 = s0
        s3 = s0
        for j in range(n_in):
            v = w[j]
            s0 += v * x0[j]
            s1 += v * x1[j]
            s2 += v * x2[j]
            s3 += v * x3[j]
        out[b, i] = s0 + c
        out[b + 1, i] = s1 + c
        out[b + 2, i] = s2 + c
        out[b + 3, i] = s3 + c
        b += 4
    while b < b1:
        x0 = inp[row_of(rows, b)]
        s0 = type(c)(0.0)
        for j in range(n_in):
            s0 += w[j] * x0[j]
        out[b, i] = s0 + c
        b += 1


@jit(noalias=True)
def forward_units(out, inp, weight, bias, t, rows, b0, b1):
    """Block ``t`` of ``dense_forward``'s sums: units ``4 t .. 4 t + 3`` (fewer at the end),
    samples ``b0 .. b1 - 1`` as in ``forward_rows4``."""
    n_out = weight.shape[0]
    i0 = 4 * t
    if i0 + 4 <= n_out:
        forward_rows4(out, inp, weight, bias, i0, rows, b0, b1)
    else:
        for i in range(i0, n_out):
            forward_row(out, inp, weight, bias, i, rows, b0, b1)


@jit()
def forward_chunk(B):
    """Samples per chunk of ``dense_forward``'s large batches: a quarter of the batch (at least
    4 chunks to share), in whole 4-sample tiles, between ``FORWARD_CHUNK`` and
    ``FORWARD_CHUNK_MAX``."""
    return min(FORWARD_CHUNK_MAX, max(FORWARD_CHUNK, B // 16 * 4))


def dense_forward(out, inp, weight, bias, act):
    """out = f(inp W^T + b), i.e. ``(z)_bi = sum_j W_ij x_bj + b_i`` and ``out_bi = f(z_bi)``.

    out (B, n_out), inp (B, n_in), weight (n_out, n_in), bias (n_out,), act: activation code
    (applied once all sums are done, in loops the compiler vectorizes: softmax row by row, the
    element-wise ones over the whole output in ``ACT_CHUNK`` pieces: ``activate_part``).
    A thread owns whole 4-unit blocks (``forward_rows4``; the last 1 to 3 units
    ``forward_row``) over the whole batch; when the batch of inputs is larger than
    ``FORWARD_SAMPLES_BYTES``, whole chunks of samples (``forward_chunk``) over every unit
    instead, so that each input row is read from memory once (a block would read the whole
    batch again), and so too for fewer than ``FORWARD_NARROW_UNITS`` units (too few blocks to
    share) on at least two chunks. With ``use_forward_panels`` (C-contiguous arrays), a task
    owns a strip of units over the whole batch, or over a share of its samples, instead
    (``forward_task``: ``W``'s rows copied transposed into a packed panel, 6-sample tiles over
    it). A sample's sums do not depend on the split or on the thread count; on the panel path
    they do not depend on where the sample is in the batch either, but they are not bitwise
    those of the tiles of smaller batches (the tiles sum along a vector of inputs and close the
    lanes at the end; the panels sum one input at a time, in order).
    """
    B = inp.shape[0]
    n_out = weight.shape[0]
    panels = use_forward_panels(B, n_out) and packable(out, inp, weight)
    chunk = (forward_chunk(B) if (B * inp.shape[1] * inp.itemsize > FORWARD_SAMPLES_BYTES
                                  or (n_out < FORWARD_NARROW_UNITS and B >= 2 * FORWARD_CHUNK))
             else 0)
    nr = PANEL_BYTES // weight.itemsize
    n_strips = (n_out + nr - 1) // nr
    groups = panel_groups(n_strips)
    if panels:
        n_tasks = n_strips + groups - 1
    elif chunk > 0:
        n_tasks = (B + chunk - 1) // chunk
    else:
        n_tasks = (n_out + 3) // 4
    # one threaded loop for the three splits: each loop is a library of its own to compile
    # np.int64: a prange index is unsigned in the threaded build (signed in the serial twin);
    # one index type, so each callee is compiled once
    for t in prange(n_tasks):
        forward_task(out, inp, weight, bias, np.int64(t), panels, chunk, groups)
    if act != IDENTITY:
        n_parts = activation_parts(B, n_out, act)
        for t in prange(n_parts):
            activate_part(out, act, np.int64(t), n_parts)


@jit(noalias=True)
def coefficients(M, r, c, scale, transpose):
    """The 16 coefficients of a ``rank4_rows`` tile, row by row: ``scale * M[r + k, c + m]``,
    or with ``transpose`` ``scale * M[r + m, c + k]``, for k, m < 4."""
    if transpose:
        return (scale * M[r, c], scale * M[r + 1, c], scale * M[r + 2, c], scale * M[r + 3, c],
                scale * M[r, c + 1], scale * M[r + 1, c + 1], scale * M[r + 2, c + 1],
                scale * M[r + 3, c + 1],
                scale * M[r, c + 2], scale * M[r + 1, c + 2], scale * M[r + 2, c + 2],
                scale * M[r + 3, c + 2],
                scale * M[r, c + 3], scale * M[r + 1, c + 3], scale * M[r + 2, c + 3],
                scale * M[r + 3, c + 3])
    return (scale * M[r, c], scale * M[r, c + 1], scale * M[r, c + 2], scale * M[r, c + 3],
            scale * M[r + 1, c], scale * M[r + 1, c + 1], scale * M[r + 1, c + 2],
            scale * M[r + 1, c + 3],
            scale * M[r + 2, c], scale * M[r + 2, c + 1], scale * M[r + 2, c + 2],
            scale * M[r + 2, c + 3],
            scale * M[r + 3, c], scale * M[r + 3, c + 1], scale * M[r + 3, c + 2],
            scale * M[r + 3, c + 3])


@jit(noalias=True)
def rank4_rows(dst, r0, src, s0, u0, u1, c, rows):
    """The register tile shared by delta propagation and the gradient: for k < 4 and
    ``u0 <= j < u1``, ``dst[r0 + k, j] += sum_m c[4 k + m] * src[s0 + m, j]``, where row
    ``s`` of ``src`` is ``src[row_of(rows, s)]``. Every loaded element of ``src`` feeds 4 rows:
    4 loads of ``src`` and one load and one store per row of ``dst`` for 16 multiply-adds.
    ``dst`` must not overlap ``src``."""
    (c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33) = c
    q0 = row_of(rows, s0)
    q1 = row_of(rows, s0 + 1)
    q2 = row_of(rows, s0 + 2)
    q3 = row_of(rows, s0 + 3)
    for j in range(u0, u1):
        x0 = src[q0, j]
        x1 = src[q1, j]
        x2 = src[q2, j]
        x3 = src[q3, j]
        dst[r0, j] += c00 * x0 + c01 * x1 + c02 * x2 + c03 * x3
        dst[r0 + 1, j] += c10 * x0 + c11 * x1 + c12 * x2 + c13 * x3
        dst[r0 + 2, j] += c20 * x0 + c21 * x1 + c22 * x2 + c23 * x3
        dst[r0 + 3, j] += c30 * x0 + c31 * x1 + c32 * x2 + c33 * x3


@jit(noalias=True)
def rank1_rows(dst, r0, src, s, u0, u1, c0, c1, c2, c3, rows):
    """The tile's tail when one row of ``src`` is left: ``dst[r0 + k, j] += c_k * src[s, j]``
    for k < 4 and ``u0 <= j < u1`` (rows of ``src`` as in ``rank4_rows``)."""
    q = row_of(rows, s)
    for j in range(u0, u1):
        x = src[q, j]
        dst[r0, j] += c0 * x
        dst[r0 + 1, j] += c1 * x
        dst[r0 + 2, j] += c2 * x
        dst[r0 + 3, j] += c3 * x


@jit(noalias=True)
def row_rank4(dst, r, src, s0, u0, u1, c0, c1, c2, c3, rows):
    """The tile's tail when one row of ``dst`` is left: ``dst[r, j] += sum_m c_m src[s0 + m, j]``
    for m < 4 and ``u0 <= j < u1`` (rows of ``src`` as in ``rank4_rows``)."""
    q0 = row_of(rows, s0)
    q1 = row_of(rows, s0 + 1)
    q2 = row_of(rows, s0 + 2)
    q3 = row_of(rows, s0 + 3)
    for j in range(u0, u1):
        dst[r, j] += (c0 * src[q0, j] + c1 * src[q1, j]
                      + c2 * src[q2, j] + c3 * src[q3, j])


@jit(noalias=True)
def row_rank1(dst, r, src, s, u0, u1, c, rows):
    """``dst[r, j] += c * src[s, j]`` for ``u0 <= j < u1`` (rows of ``src`` as in
    ``rank4_rows``)."""
    q = row_of(rows, s)
    for j in range(u0, u1):
        dst[r, j] += c * src[q, j]


def dense_backward(dinp, dout, weight, inp, act):
    """Delta propagation: ``(dinp)_bj = f'(a_bj) * sum_i W_ij (dout)_bi`` (``W^T delta``).

    dinp (B, n_in) = delta_{l-1}, dout (B, n_out) = delta_l, weight (n_out, n_in) = W_l,
    inp (B, n_in) = a_{l-1} (the activation whose derivative is taken), act: its code.
    ``dinp`` must not overlap the inputs.

    A thread owns a (4-sample, column-chunk) tile of ``dinp`` (``backward_tile``). When
    ``use_panels`` (C-contiguous arrays), a task owns a strip of ``dinp``'s columns for a
    share of the samples instead (``backward_panel``: ``W``'s strip copied into a packed
    panel, then 6-sample tiles over it). Every element takes the same operations either way,
    so the result does not depend on the path, the split or the thread count.
    """
    B, n_in = dinp.shape
    if use_panels(B, weight.shape[0], n_in * weight.itemsize) and packable(dinp, dout, weight):
        nr = PANEL_BYTES // weight.itemsize
        n6 = panel_blocks(B)
        n_strips = (n_in + nr - 1) // nr
        groups = panel_groups(n_strips)
        for t in prange(n_strips + groups - 1):
            j0, j1, k0, k1, last = panel_task(np.int64(t), nr, n_in, n6, groups)
            backward_panel(dinp, dout, weight, inp, act, j0, j1, k0, k1, last)
        return
    n_sblk = (B + 3) // 4
    n_chunks = (n_in + CHUNK - 1) // CHUNK
    for t in prange(n_sblk * n_chunks):
        b0 = 4 * (t // n_chunks)
        j0 = min((t % n_chunks) * CHUNK, n_in)
        backward_tile(dinp, dout, weight, inp, act, b0, min(b0 + 4, B), j0, min(j0 + CHUNK, n_in))


def packable(a, b, c):
    """Whether the packed-panel paths apply: the three arrays C-contiguous. Chosen when
    compiling."""
    return False


@overload(packable)
def _packable(a, b, c):
    flag = all(x.layout == "C" for x in (a, b, c))
    return lambda a, b, c: flag


@jit()
def use_panels(n_samples, n_terms, row_bytes):
    """Whether ``dense_backward`` takes the packed panels: ``n_samples`` sums of ``n_terms``
    terms each, over rows of ``W`` ``row_bytes`` long. From ``PANEL_MIN_SAMPLES`` samples,
    ``PANEL_MIN_TERMS`` terms and ``PANEL_MIN_PRODUCT`` samples x terms; from
    ``PANEL_ALIASED_MIN_SAMPLES`` samples and ``PANEL_ALIASED_MIN_TERMS`` terms (and any
    product) when ``W``'s rows are a multiple of 2 KiB apart and at least 4 KiB (in place, the
    4-sample tiles then read lines that fall in a few cache sets: 1.4 to 2.7 times slower than
    the panels at 1024 to 2048 columns; docs/performance.md, "Panel copies", "Gradient panels
    below 128 samples")."""
    if n_samples < PANEL_ALIASED_MIN_SAMPLES:
        return False
    if (n_samples >= PANEL_MIN_SAMPLES and n_terms >= PANEL_MIN_TERMS
            and n_samples * n_terms >= PANEL_MIN_PRODUCT):
        return True
    return (n_terms >= PANEL_ALIASED_MIN_TERMS and row_bytes >= 4096
            and row_bytes % 2048 == 0)


@jit()
def use_grad_panels(n_samples, n_rows, row_bytes, item_bytes):
    """Whether ``dense_grad`` takes the packed panels: ``n_samples`` terms per sum, read again
    for each of ``n_rows`` rows of ``dW``, from input rows ``row_bytes`` long (elements of
    ``item_bytes``). In place, the input's strip streams from L2 for every 4 rows; packed, it
    streams in order. With ``GRAD_PANEL_MIN_ROWS`` rows and ``GRAD_PANEL_MIN_BYTES`` per input
    row, at 256 and 512 bits (not with 128-bit vectors: not measured), from:

    * ``GRAD_PANEL_MIN_SAMPLES`` samples;
    * ``GRAD_PANEL_ALIASED_SAMPLES`` and ``GRAD_PANEL_ALIASED_PRODUCT`` samples x rows when
      input rows are a multiple of 4 KiB apart (one strip then falls in one L1 cache set and
      evicts itself: the tiles ran at a third to a half; below that product the call is too
      short for the panels' extra threaded loop and scratch, in training);
    * ``GRAD_PANEL_WIDE_SAMPLES`` when ``dW``'s rows (the coefficients per sample) take
      ``GRAD_PANEL_WIDE_ROW_BYTES``: 256 float32 rows, 128 float64 (float64 gained from
      fewer rows), at 256 bits only (not measured at 512, where the tiles are 4 vectors wide).

    docs/performance.md, "Packed panels", "Panel copies", "Gradient panels below 128 samples".
    """
    if PANEL_BYTES < 64 or n_rows < GRAD_PANEL_MIN_ROWS or row_bytes < GRAD_PANEL_MIN_BYTES:
        return False
    return (n_samples >= GRAD_PANEL_MIN_SAMPLES
            or (n_samples >= GRAD_PANEL_ALIASED_SAMPLES and row_bytes % 4096 == 0
                and n_samples * n_rows >= GRAD_PANEL_ALIASED_PRODUCT)
            or (VECTOR_BITS < 512 and n_samples >= GRAD_PANEL_WIDE_SAMPLES
                and n_rows * item_bytes >= GRAD_PANEL_WIDE_ROW_BYTES))


@jit()
def grad_in_place(n_samples, n_rows, row_bytes, item_bytes):
    """Whether ``dense_grad``'s panel path reads the input's strips in place (see
    ``GRAD_IN_PLACE_BYTES``): ``n_samples`` input rows ``row_bytes`` long, ``n_rows`` rows of
    ``dW``. The strip of a row is one 64-byte line; rows ``m`` lines apart fall in ``64 /
    gcd(m, 64)`` of L1's 64 sets."""
    if PANEL_BYTES != 64 or row_bytes % 64 != 0:
        return False
    m = row_bytes // 64
    g = 1
    while m % (2 * g) == 0 and g < 64:
        g *= 2
    return (n_samples <= 64 // g * 4
            and n_samples * n_rows * item_bytes <= GRAD_IN_PLACE_BYTES)


@jit()
def panel_groups(n_strips):
    """Tasks for the last column strip of a panel path (every other strip is one task, packed
    once): 1 for an even number of strips (2 threads get equal shares), else ``PANEL_GROUPS``
    (one share each, ``panel_task``). Sized for 2 threads (the kernel cannot ask numba for the
    thread count and stay cacheable); with more, only the balance changes. The tiles take the
    same operations however the work is split: the results do not depend on this."""
    return 1 if n_strips % 2 == 0 else PANEL_GROUPS


@jit()
def panel_task(t, nr, n_cols, n6, groups):
    """Task ``t`` of ``n_strips + groups - 1`` of a panel path: columns ``[j0, j1)`` (a strip
    ``nr`` wide of ``n_cols``), the 6-row blocks ``[k0, k1)`` of ``n6``, and whether it is the
    strip's last share (which also takes the rows after the blocks). Each strip is one task,
    all blocks; with ``groups`` 2 (``PANEL_GROUPS``) the last strip's two halves of the blocks
    are the first task and the first of the second half of the tasks, one for each thread
    when numba gives 2 threads equal runs of the loop."""
    if groups == 1:
        return (t * nr, min(t * nr + nr, n_cols), 0, n6, True)
    n_strips = (n_cols + nr - 1) // nr
    half = (n_strips + groups - 1) // 2
    if t == 0 or t == half:
        g = 0 if t == 0 else 1
        return ((n_strips - 1) * nr, n_cols, n6 * g // 2, n6 * (g + 1) // 2, g == 1)
    s = t - 1 if t < half else t - 2
    return (s * nr, min(s * nr + nr, n_cols), 0, n6, True)


@jit()
def panel_blocks(n):
    """How many ``PANEL_ROWS``-row blocks (6 rows) of ``n`` rows the panel tiles take: rows
    ``[0, 6 k)`` in whole 12-row pairs, so that the rest starts on a 4-row block and goes in
    the 4-row blocks (and the last 1 to 3 rows) of the paths without panels: every row then
    takes the same operations as there (the 6-row and 4-row tiles take the same ones)."""
    return n // 4 * 4 // (2 * PANEL_ROWS) * 2


def panel_width(arr):
    """Elements of ``arr``'s dtype in ``PANEL_BYTES``: a constant when compiling."""
    return PANEL_BYTES // arr.itemsize


@overload(panel_width)
def _panel_width(arr):
    width = PANEL_BYTES // (arr.dtype.bitwidth // 8)
    return lambda arr: width


@jit()
def pack_columns(pk, src, j0, j1):
    """``pk[r, :j1 - j0] = src[r, j0:j1]`` for every row of ``src``. A whole strip (one line
    or a few from each row, rows a page or so apart, where the hardware prefetchers do not
    follow) is copied with a constant width and the rows ``PACK_AHEAD`` further on prefetched."""
    w = panel_width(src)
    if j1 - j0 == w:
        for r in range(src.shape[0]):
            prefetch_row(src, r + PACK_AHEAD, j0, j1)
            for u in range(w):
                pk[r, u] = src[r, j0 + u]
        return
    for r in range(src.shape[0]):
        for j in range(j0, j1):
            pk[r, j - j0] = src[r, j]


@jit()
def pack_coefficients(coef, dout, b0, b1):
    """``coef[k, b, u] = dout[b, 6 k + u]`` for samples ``b0 <= b < b1`` and every block ``k``
    of ``coef``: each row of ``dout`` read once, in order (by blocks, rows ``n_out`` elements
    apart fall in a few cache sets and were read again for every block)."""
    for b in range(b0, b1):
        for k in range(coef.shape[0]):
            for u in range(PANEL_ROWS):
                coef[k, b, u] = dout[b, PANEL_ROWS * k + u]


@jit()
def use_forward_panels(n_samples, n_out):
    """Whether ``dense_forward`` takes the packed panels for ``n_samples`` inputs to ``n_out``
    units (at 256 and 512 bits; not with 128-bit vectors: not measured)."""
    return (PANEL_BYTES >= 64 and n_samples >= FORWARD_PANEL_MIN_SAMPLES
            and n_out >= FORWARD_PANEL_MIN_UNITS)


@jit()
def pack_transposed(pk, src, i0, i1):
    """``pk[j, i - i0] = src[i, j]`` for ``i0 <= i < i1`` and every column ``j`` of ``src``:
    rows of ``src`` as the columns of a panel. Squares of a vector's lanes transposed in
    registers (``transpose_square``), the edges element by element."""
    n = src.shape[1]
    side = SQUARE_BYTES // src.itemsize
    i_end = i0 + (i1 - i0) // side * side
    j_end = n // side * side
    for g in range(i0, i_end, side):
        for j in range(0, j_end, side):
            transpose_square(pk, src, g, j, g - i0)
    for g in range(i0, i1, side):
        for j in range(j_end if g < i_end else 0, n):
            for i in range(g, min(g + side, i1)):
                pk[j, i - i0] = src[i, j]


def transpose_square(dst, src, r0, c0, d0):
    """``simd.transpose_block`` for C-contiguous arrays, else the same element by element."""


@overload(transpose_square)
def _transpose_square(dst, src, r0, c0, d0):
    if all(a.layout == "C" for a in (dst, src)):
        return lambda dst, src, r0, c0, d0: transpose_block(dst, src, r0, c0, d0)
    side = SQUARE_BYTES * 8 // src.dtype.bitwidth

    def loops(dst, src, r0, c0, d0):
        for c in range(side):
            for r in range(side):
                dst[c0 + c, d0 + r] = src[r0 + r, c0 + c]
    return loops


@jit(noalias=True)
def forward_task(out, inp, weight, bias, t, panels, chunk, groups):
    """Task ``t`` of ``dense_forward``'s sums (no activation). Without ``panels``: with
    ``chunk`` > 0, samples ``chunk t ..`` over every unit, else the 4-unit block ``t`` over
    the batch (``forward_units``). With ``panels``: a strip of units ``i0 .. i1 - 1``
    (``PANEL_BYTES`` wide; ``panel_task``: with ``groups`` 2 the last strip in two tasks, each
    a share of the 6-sample blocks, the second one also the 1 to 5 samples after them). The
    strip's rows of ``W`` are first copied, transposed, into a packed panel (``pk[j, i - i0]
    = W[i, j]``), so that the sums are ``delta_panel``'s tiles: a vector of units per loaded
    panel row, one broadcast input per sample, no reduction across lanes. The last samples go
    through a 6-row copy (zeros after them), so that every sample takes the same operations,
    wherever it is in the batch. From ``PANEL_AHEAD_BYTES`` of output, each tile first
    prefetches the next tile's lines of ``out``."""
    B, n_in = inp.shape
    n_out = weight.shape[0]
    if not panels:
        if chunk > 0:
            for s in range((n_out + 3) // 4):
                forward_units(out, inp, weight, bias, s, None, t * chunk,
                              min(t * chunk + chunk, B))
        else:
            forward_units(out, inp, weight, bias, t, None, 0, B)
        return
    nr = PANEL_BYTES // weight.itemsize
    i0, i1, k0, k1, rest = panel_task(t, nr, n_out, B // PANEL_ROWS, groups)
    b_end = B // PANEL_ROWS * PANEL_ROWS
    k_end = k1 + 1 if rest and b_end < B else k1
    if k0 < k_end:
        pk = np.empty((n_in, nr), dtype=weight.dtype)
        pack_transposed(pk, weight, i0, i1)
        # the last samples' block reads a padded copy and writes a scratch block (the tile is
        # called from one place: each call site is a copy of its code to compile)
        xs = np.zeros((PANEL_ROWS if k_end > k1 else 0, n_in), dtype=inp.dtype)
        zs = np.empty((xs.shape[0], out.shape[1]), dtype=out.dtype)
        for b in range(b_end, b_end + xs.shape[0]):
            for j in range(n_in if b < B else 0):
                xs[b - b_end, j] = inp[b, j]
        ahead = B * n_out * out.itemsize >= PANEL_AHEAD_BYTES
        for k in range(k0, k_end):
            last = k == k1
            for b in range(PANEL_ROWS * (k + 1), PANEL_ROWS * (k + 2) if ahead else 0):
                prefetch_row(out, b, i0, i1)
            panel_sums(zs if last else out, 0 if last else PANEL_ROWS * k, i0, i1,
                       xs if last else inp, pk, bias)
        for b in range(b_end, min(B, b_end + xs.shape[0])):
            for i in range(i0, i1):
                out[b, i] = zs[b - b_end, i]


def panel_sums(out, b0, i0, i1, inp, pk, bias):
    """``simd.forward_panel`` for C-contiguous arrays, else nothing (as ``panel_delta``)."""


@overload(panel_sums)
def _panel_sums(out, b0, i0, i1, inp, pk, bias):
    if all(a.layout == "C" for a in (out, inp, pk, bias)):
        def tiles(out, b0, i0, i1, inp, pk, bias):
            forward_panel(out, b0, i0, i1, inp, pk, bias)
        return tiles
    return lambda out, b0, i0, i1, inp, pk, bias: None


@jit(noalias=True)
def backward_panel(dinp, dout, weight, inp, act, j0, j1, k0, k1, rest):
    """Columns ``j0 .. j1 - 1`` of ``dense_backward`` for the 6-sample blocks ``k0 .. k1 - 1``
    (samples ``6 k0 .. 6 k1 - 1``) and, with ``rest``, the samples after the last block
    (``panel_blocks``) in ``backward_tile``'s 4-sample tiles. ``W[:, j0:j1]`` is first copied
    into a packed panel (one allocation of ``n_out x PANEL_BYTES``), which each 6-sample tile
    (``panel_delta``) then reads in order; with ``PANEL_AHEAD_BYTES`` of input, each tile first
    prefetches the next tile's lines of ``inp`` and ``dinp``."""
    B = dinp.shape[0]
    ahead = B * inp.shape[1] * inp.itemsize >= PANEL_AHEAD_BYTES
    if k0 < k1 or rest:
        pk = np.empty((weight.shape[0], PANEL_BYTES // weight.itemsize), dtype=weight.dtype)
        pack_columns(pk, weight, j0, j1)
        for k in range(k0, k1):
            b0 = PANEL_ROWS * k
            for b in range(b0 + PANEL_ROWS, b0 + 2 * PANEL_ROWS if ahead else 0):
                prefetch_row(inp, b, j0, j1)
                prefetch_row(dinp, b, j0, j1)
            panel_delta(dinp, b0, j0, j1, dout, pk)
            times_derivative(dinp, inp, act, b0, b0 + PANEL_ROWS, j0, j1)
        if rest:
            for s in range(PANEL_ROWS * panel_blocks(B), B, 4):
                backward_tile(dinp, dout, weight, inp, act, s, min(s + 4, B), j0, j1)


def panel_delta(dinp, b0, j0, j1, dout, pk):
    """Samples ``b0 .. b0 + 5``, columns ``j0 .. j1 - 1`` of ``dinp = dout W`` from the packed
    panel ``pk`` (``pk[i, j - j0] = W[i, j]``): ``simd.delta_panel``. For other layouts than
    C-contiguous nothing (``dense_backward`` takes the panels only for C-contiguous arrays,
    ``packable``; this only lets the path type). Chosen when compiling: the layout's switch
    sits on the tile, not around the panel path, so that no wrapper links a copy of the whole
    path (docs/performance.md, "Compile cache and start-up")."""


@overload(panel_delta)
def _panel_delta(dinp, b0, j0, j1, dout, pk):
    if all(a.layout == "C" for a in (dinp, dout, pk)):
        def tiles(dinp, b0, j0, j1, dout, pk):
            delta_panel(dinp, b0, j0, j1, dout, pk)
        return tiles
    return lambda dinp, b0, j0, j1, dout, pk: None


@jit(noalias=True)
def backward_tile(dinp, dout, weight, inp, act, b0, b1, j0, j1):
    """One tile of ``dense_backward``: samples ``b0 .. b1 - 1`` (at most 4), columns
    ``j0 .. j1 - 1`` of ``dinp``. 4 samples take ``backward_rows4``; fewer, rank-4 updates by
    rows (indexed without row views and with unsigned column indices, as ``grad_block``, so
    that the compiler vectorizes the column loops). Then the activation's derivative. An
    element's result does not depend on the tile's columns."""
    n_out = weight.shape[0]
    u0 = np.uint64(j0)
    u1 = np.uint64(j1)
    if b1 - b0 == 4:
        backward_rows4(dinp, dout, weight, b0, j0, j1)
    else:
        for b in range(b0, b1):
            for j in range(u0, u1):
                dinp[b, j] = 0
            i = 0
            while i + 4 <= n_out:
                row_rank4(dinp, b, weight, i, u0, u1, dout[b, i], dout[b, i + 1],
                          dout[b, i + 2], dout[b, i + 3], None)
                i += 4
            while i < n_out:
                row_rank1(dinp, b, weight, i, u0, u1, dout[b, i], None)
                i += 1
    times_derivative(dinp, inp, act, b0, b1, j0, j1)


@jit(noalias=True)
def times_derivative(dinp, inp, act, b0, b1, j0, j1):
    """``dinp[b, j] *= f'(inp[b, j])`` for samples ``b0 .. b1 - 1``, columns ``j0 .. j1 - 1``
    (nothing for the identity). One function for every tile of ``dense_backward``, so that
    every element takes the same operations."""
    if act != IDENTITY:
        u0 = np.uint64(j0)
        u1 = np.uint64(j1)
        for b in range(b0, b1):
            for j in range(u0, u1):
                dinp[b, j] *= activation_grad(inp[b, j], act)


def backward_rows4(dinp, dout, weight, b0, j0, j1):
    """Samples ``b0 .. b0 + 3``, columns ``j0 .. j1 - 1`` of ``dinp = dout W`` (before the
    activation's derivative). C-contiguous arrays take ``simd.delta_tile`` (the sums held in
    registers over all of ``W``'s rows); others (views from the user's ``@njit`` code)
    ``backward_rows4_loops``. Chosen when compiling."""
    backward_rows4_loops(dinp, dout, weight, b0, j0, j1)


@overload(backward_rows4)
def _backward_rows4(dinp, dout, weight, b0, j0, j1):
    if all(a.layout == "C" for a in (dinp, dout, weight)):
        def tiles(dinp, dout, weight, b0, j0, j1):
            delta_tile(dinp, b0, j0, j1, dout, weight)
        return tiles

    def loops(dinp, dout, weight, b0, j0, j1):
        backward_rows4_loops(dinp, dout, weight, b0, j0, j1)
    return loops


@jit(noalias=True)
def backward_rows4_loops(dinp, dout, weight, b0, j0, j1):
    """``backward_rows4`` as numba loops, for any layout: 4 rows of ``W`` at a time, each loaded
    weight feeding 4 samples (4 loads of ``W`` and 4 loads and stores of ``dinp`` for 16
    multiply-adds)."""
    n_out = weight.shape[0]
    u0 = np.uint64(j0)
    u1 = np.uint64(j1)
    for b in range(b0, b0 + 4):
        for j in range(u0, u1):
            dinp[b, j] = 0
    i = 0
    while i + 4 <= n_out:
        rank4_rows(dinp, b0, weight, i, u0, u1,
                   coefficients(dout, b0, i, dout.dtype.type(1.0), False), None)
        i += 4
    while i < n_out:
        rank1_rows(dinp, b0, weight, i, u0, u1, dout[b0, i], dout[b0 + 1, i], dout[b0 + 2, i],
                   dout[b0 + 3, i], None)
        i += 1


@jit()
def grad_chunks(n_in):
    """``(count, width)`` of the gradient's column chunks for ``n_in`` columns: equal chunks of
    at most ``GRAD_CHUNK``, rounded up to whole 16-element vectors (the last one shorter)."""
    n_chunks = (n_in + GRAD_CHUNK - 1) // GRAD_CHUNK
    return n_chunks, ((n_in + n_chunks - 1) // n_chunks + 15) // 16 * 16


@jit()
def grad_strips(n_vec):
    """How many strips ``dense_grad`` cuts ``n_vec`` 16-element column pieces into for a large
    batch: about 4 pieces (64 float32 columns, a full register tile) each, in a multiple of 12
    when there are 48 pieces or more (so that 2, 3, 4 or 6 threads get equal shares)."""
    if n_vec >= 48:
        return n_vec // 48 * 12
    return n_vec // 4


def dense_grad(dweight, dbias, dout, inp, scale, accumulate=False):
    """Batch-summed outer products: ``dW (+)= scale * dout^T inp``, ``db (+)= scale * sum_b dout``.

    ``(dW)_ij = scale * sum_b (dout)_bi (inp)_bj``. With ``accumulate`` the product is added to
    what ``dweight``/``dbias`` hold, otherwise it replaces it. ``scale = 1/B`` gives the
    gradient of the mean loss; ``dense_grad(W, b, dout, inp, -lr/B, True)`` is the plain SGD
    step fused with the gradient (no gradient buffer).
    dweight (n_out, n_in), dbias (n_out,), dout (B, n_out) = delta_l, inp (B, n_in) = a_{l-1},
    scale: a scalar of the arrays' dtype. ``dweight`` and ``dbias`` must not overlap the inputs.

    Tiles of ``dW`` (``grad_block``): 4 rows of sums held in registers over the whole batch
    (``simd.grad_tile``), a sample costing 4 loads of ``inp`` and 4 broadcast coefficients for
    16 vector multiply-adds; the last 1 to 3 rows take rank-4 updates by rows. The threads
    share (4-row, column-chunk) tiles; when the batch of inputs is larger than
    ``GRAD_COLUMNS_BYTES``, they share strips of columns (whole 16-element pieces,
    ``grad_strips``) instead, every row of a strip before the next. When the panels pay
    (``use_grad_panels``; C-contiguous arrays), a task owns a strip of ``PANEL_BYTES`` of
    columns for a share of the rows instead (``grad_panel_strip``: the input's strip copied
    into a packed panel, then 6-row tiles over it, their coefficients packed too, once per
    call). An element's result does not depend on
    how the columns are split (``grad_tile``), nor on the path (the 6-row tiles take the same
    operations), so neither on the split nor on the thread count.
    """
    B = dout.shape[0]
    n_in = inp.shape[1]
    n_out = dweight.shape[0]
    if (use_grad_panels(B, n_out, n_in * inp.itemsize, inp.itemsize)
            and packable(dweight, dout, inp)):
        nr = PANEL_BYTES // inp.itemsize
        n6 = panel_blocks(n_out)
        # each block's 6 coefficients per sample side by side: read in place, dout's rows are
        # n_out apart (4 KiB at 1024 float32 units: a few cache sets) and every strip reads
        # them all again (docs/performance.md, "Packed panels")
        coef = np.empty((n6, B, PANEL_ROWS), dtype=dout.dtype)
        for p in prange((B + COEF_PIECE - 1) // COEF_PIECE):
            pack_coefficients(coef, dout, COEF_PIECE * p, min(COEF_PIECE * (p + 1), B))
        n_strips = (n_in + nr - 1) // nr
        groups = panel_groups(n_strips)
        n_tasks = n_strips + groups - 1
        n_bias = PANEL_ROWS * n6 // 4
        for t in prange(n_tasks):
            j0, j1, k0, k1, last = panel_task(np.int64(t), nr, n_in, n6, groups)
            grad_panel_strip(dweight, dbias, dout, coef, inp, scale, accumulate, j0, j1, k0, k1,
                             last)
            # the panel rows' bias, shared out over all the tasks in 4-row pieces (one task
            # holding them all was waited for by the other thread: docs/performance.md,
            # "Gradient copies")
            q0 = 4 * (n_bias * t // n_tasks)
            q1 = 4 * (n_bias * (t + 1) // n_tasks)
            if q1 > q0:
                bias_sums(dbias, dout, scale, accumulate, q0, q1)
        return
    n_vec = (n_in + 15) // 16
    n_strips = grad_strips(n_vec)
    if B * n_in * inp.itemsize > GRAD_COLUMNS_BYTES and n_strips > 1:
        for k in prange(n_strips):
            s0 = min(16 * (n_vec * k // n_strips), n_in)
            s1 = min(16 * (n_vec * (k + 1) // n_strips), n_in)
            for i0 in range(0, n_out, 4):
                grad_block(dweight, dbias, dout, inp, scale, accumulate, i0, min(i0 + 4, n_out),
                           s0, s1, None)
    else:
        n_blk = (n_out + 3) // 4
        n_chunks, width = grad_chunks(n_in)
        for t in prange(n_blk * n_chunks):
            # this thread owns rows i0..i1-1, columns j0..j1-1 of dW
            i0 = 4 * (t // n_chunks)
            j0 = min((t % n_chunks) * width, n_in)
            grad_block(dweight, dbias, dout, inp, scale, accumulate, i0, min(i0 + 4, n_out), j0,
                       min(j0 + width, n_in), None)


@jit(noalias=True)
def grad_panel_strip(dweight, dbias, dout, coef, inp, scale, accumulate, j0, j1, k0, k1, rest):
    """Columns ``j0 .. j1 - 1`` of ``dense_grad`` for the 6-row blocks ``k0 .. k1 - 1`` of ``dW``
    (rows ``6 k0 .. 6 k1 - 1``) and, with ``rest``, the rows after the last block
    (``panel_blocks``) in ``grad_block``'s 4-row tiles, with their bias when ``j0`` is 0 (the
    blocks' rows take their bias in ``dense_grad``).
    ``inp[:, j0:j1]`` is first copied into a packed panel (one allocation of ``B x
    PANEL_BYTES``), or read in place when ``grad_in_place``, by each 6-row tile
    (``panel_grad``), with block ``k``'s coefficients from ``coef[k]`` (``coef[k, b, u] =
    dout[b, 6 k + u]``)."""
    n_out = dweight.shape[0]
    if k0 < k1 or rest:
        B = inp.shape[0]
        in_place = grad_in_place(B, n_out, inp.shape[1] * inp.itemsize, inp.itemsize)
        # one call site of the tile for both sources (each is a copy of its code to compile)
        src = inp if in_place else np.empty((B, PANEL_BYTES // inp.itemsize), dtype=inp.dtype)
        c0 = j0 if in_place else 0
        if not in_place:
            pack_columns(src, inp, j0, j1)
        for k in range(k0, k1):
            panel_grad(dweight, PANEL_ROWS * k, j0, j1, coef[k], src, c0, scale, accumulate)
        if rest:
            for i0 in range(PANEL_ROWS * panel_blocks(n_out), n_out, 4):
                grad_block(dweight, dbias, dout, inp, scale, accumulate, i0, min(i0 + 4, n_out),
                           j0, j1, None)


def panel_grad(dweight, i0, j0, j1, dout, pk, c0, scale, accumulate):
    """Rows ``i0 .. i0 + 5``, columns ``j0 .. j1 - 1`` of ``dW (+)= scale * dout^T inp`` from
    ``pk`` (``pk[b, c0 + j - j0] = inp[b, j]``: a packed panel with ``c0`` 0, or ``inp`` with
    ``c0`` = ``j0``) and the block's packed coefficients ``dout`` (``dout[b, u]`` = the
    gradient's ``dout[b, i0 + u]``): ``simd.grad_panel``. For other layouts nothing, as
    ``panel_delta`` (``dense_grad`` takes the panels only for C-contiguous arrays)."""


@overload(panel_grad)
def _panel_grad(dweight, i0, j0, j1, dout, pk, c0, scale, accumulate):
    if all(a.layout == "C" for a in (dweight, dout, pk)):
        def tiles(dweight, i0, j0, j1, dout, pk, c0, scale, accumulate):
            grad_panel(dweight, i0, j0, j1, dout, pk, None, scale, accumulate, c0)
        return tiles
    return lambda dweight, i0, j0, j1, dout, pk, c0, scale, accumulate: None


@jit(noalias=True)
def grad_block(dweight, dbias, dout, inp, scale, accumulate, i0, i1, j0, j1, rows):
    """One tile of ``dense_grad``: rows ``i0 .. i1 - 1`` (at most 4), columns ``j0 .. j1 - 1`` of
    ``dW``, and those rows of ``db`` when ``j0 == 0``. Sample ``b`` (row ``b`` of ``dout``) is
    the row ``row_of(rows, b)`` of ``inp``. 4 rows take ``grad_rows4``; fewer, rank-4 updates
    by rows."""
    B = dout.shape[0]
    if i1 - i0 == 4:
        grad_rows4(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows)
    else:
        # unsigned column indices: numba then emits no negative-index wrap-around, which would
        # keep the compiler from vectorizing the column loops
        u0 = np.uint64(j0)
        u1 = np.uint64(j1)
        for i in range(i0, i1):
            if not accumulate:
                for j in range(u0, u1):
                    dweight[i, j] = 0
            b = 0
            while b + 4 <= B:
                row_rank4(dweight, i, inp, b, u0, u1, scale * dout[b, i],
                          scale * dout[b + 1, i], scale * dout[b + 2, i],
                          scale * dout[b + 3, i], rows)
                b += 4
            while b < B:
                row_rank1(dweight, i, inp, b, u0, u1, scale * dout[b, i], rows)
                b += 1
    if j0 == 0:
        bias_sums(dbias, dout, scale, accumulate, i0, i1)


def bias_sums(dbias, dout, scale, accumulate, i0, i1):
    """``dbias[i] (+)= scale * sum_b dout[b, i]`` for ``i0 <= i < i1``, the samples added in
    order. C-contiguous arrays take ``simd.column_sums`` (the rows' sums side by side in
    vectors); others ``bias_sums_loops``. Chosen when compiling."""
    bias_sums_loops(dbias, dout, scale, accumulate, i0, i1)


@overload(bias_sums)
def _bias_sums(dbias, dout, scale, accumulate, i0, i1):
    if dbias.layout == "C" and dout.layout == "C":
        def vectors(dbias, dout, scale, accumulate, i0, i1):
            column_sums(dbias, i0, i1, dout, scale, accumulate)
        return vectors

    def loops(dbias, dout, scale, accumulate, i0, i1):
        bias_sums_loops(dbias, dout, scale, accumulate, i0, i1)
    return loops


@jit()
def bias_sums_loops(dbias, dout, scale, accumulate, i0, i1):
    """``bias_sums`` as a loop per element, for any layout."""
    B = dout.shape[0]
    for i in range(i0, i1):
        s = dbias.dtype.type(0.0)
        for b in range(B):
            s += dout[b, i]
        if accumulate:
            dbias[i] += scale * s
        else:
            dbias[i] = scale * s


def grad_rows4(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows):
    """Rows ``i0 .. i0 + 3``, columns ``j0 .. j1 - 1`` of ``grad_block``'s ``dW``. C-contiguous
    arrays take ``simd.grad_tile`` (the rows held in registers over the whole batch); others
    (views from the user's ``@njit`` code) ``grad_rows4_loops``. Chosen when compiling."""
    grad_rows4_loops(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows)


@overload(grad_rows4)
def _grad_rows4(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows):
    if all(a.layout == "C" for a in (dweight, dout, inp)):
        def tiles(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows):
            grad_tile(dweight, i0, j0, j1, dout, inp, rows, scale, accumulate)
        return tiles

    def loops(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows):
        grad_rows4_loops(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows)
    return loops


@jit(noalias=True)
def grad_rows4_loops(dweight, dout, inp, scale, accumulate, i0, j0, j1, rows):
    """``grad_rows4`` as numba loops, for any layout: rank-4 updates of the 4 rows, 4 samples
    at a time (``rank4_rows``; the coefficients ``scale * dout`` in registers)."""
    B = dout.shape[0]
    u0 = np.uint64(j0)
    u1 = np.uint64(j1)
    if not accumulate:
        for i in range(i0, i0 + 4):
            for j in range(u0, u1):
                dweight[i, j] = 0
    b = 0
    while b + 4 <= B:
        rank4_rows(dweight, i0, inp, b, u0, u1, coefficients(dout, b, i0, scale, True), rows)
        b += 4
    while b < B:
        rank1_rows(dweight, i0, inp, b, u0, u1, scale * dout[b, i0], scale * dout[b, i0 + 1],
                   scale * dout[b, i0 + 2], scale * dout[b, i0 + 3], rows)
        b += 1


@intrinsic
def prefetch_l2(typingctx, arr, row, col):
    """Hint that ``arr[row, col]`` (a 2-D array) will be read soon: LLVM's ``prefetch`` with
    locality 2, which on x86 fetches the cache line into L2 (``prefetcht1``). No effect on
    results; an address outside the array is harmless (a prefetch never faults)."""
    if not isinstance(arr, types.Array) or arr.ndim != 2:
        return None

    def codegen(context, builder, signature, args):
        a_ty, r_ty, c_ty = signature.args
        ary = context.make_array(a_ty)(context, builder, args[0])
        r = context.cast(builder, args[1], r_ty, types.intp)
        c = context.cast(builder, args[2], c_ty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, a_ty, ary, [r, c])
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]),
            "llvm.prefetch.p0i8")
        builder.call(fn, [i8p, i32(0), i32(2), i32(1)])  # read, locality 2, data
        return context.get_dummy_value()
    return types.void(arr, row, col), codegen


@jit()
def prefetch_row(arr, r, c0, c1):
    """``prefetch_l2`` every cache line of columns ``c0 .. c1 - 1`` of row ``r`` of the 2-D
    ``arr``: its first element, one per 64 bytes after it, and its last (a piece that starts
    inside a line ends inside one). A loop per row, with no division per line."""
    for c in range(c0, c1, 64 // arr.itemsize):
        prefetch_l2(arr, r, c)
    prefetch_l2(arr, r, c1 - 1)


@jit()
def task_blocks(n_blk, p, n_tasks):
    """The 4-row blocks ``[t0, t1)`` of task ``p`` of ``n_tasks`` in ``deferred_sweep``: equal
    shares, in whole groups of 4 blocks (16 units: a task's columns of a float32 row then start
    on a 64-byte line) when every task gets at least one group."""
    g = 4 if n_blk >= 4 * n_tasks else 1
    n_g = (n_blk + g - 1) // g
    return min(g * (n_g * p // n_tasks), n_blk), min(g * (n_g * (p + 1) // n_tasks), n_blk)


def deferred_sweep(out, dprev, inp, rows, inp_prev, rows_prev, a_prev, d_next, weight, bias,
                   w_next, b_next, step, back, act, n_tasks):
    """A layer's forward pass for a new batch, with the previous batch's step on this layer and
    on the next one applied in the same threaded region.

    out (B, n_out) <- f(x W^T + b) for the new batch x: inp (B, n_in) itself when ``rows`` is
    None, else its rows ``rows`` (B,) (int64 indices, read in place: a shuffled batch needs no
    gathered copy), with ``W`` = weight (n_out, n_in) and ``b`` = bias (n_out,) *after* the
    previous batch's step; act: f's code. When ``back``, that step first, for the previous
    batch x_prev (inp_prev and rows_prev, the same way; its output a_prev = f(z) (B', n_out),
    step = -lr / B' of the arrays' dtype):

    * if there is a next layer (w_next (m, n_out), b_next (m,), d_next (B', m) = its delta,
      m > 0): dprev (B', n_out) <- f'(a_prev) * (d_next w_next) (delta propagation, with the
      next layer's weights before its step), then ``w_next += step * d_next^T a_prev``,
      ``b_next += step * sum_b d_next``; with m = 0 (empty arrays), dprev is this layer's delta,
      given;
    * ``W += step * dprev^T x_prev``, ``b += step * sum_b dprev``.

    ``dense_backward``, ``dense_grad`` on the next layer, ``dense_grad`` on this one and
    ``dense_forward`` compute the same numbers, bit for bit, with four thread-pool wake-ups
    instead of one. ``n_tasks`` tasks (the thread count) each own a range of this layer's units
    (``task_blocks``): the rows of ``W`` and ``b``, the columns of ``dprev``, ``out`` and
    ``w_next``. A task updates each 4-row block of ``W`` (``grad_block``) and takes its sums for
    the new batch (``forward_units``) while the block is in its cache. The new batch is not (its
    rows come from memory, in the data's order or shuffled): while a task applies
    the step to its first ``PREFETCH_BLOCKS`` blocks it prefetches the batch into its L2 cache,
    and takes those blocks' sums after. The activation runs on the task's columns (softmax,
    which needs whole rows, after the region). Threaded only (no ``_serial`` twin). Results do
    not depend on ``n_tasks``: every element's sums run in the same order for any split.
    ``dprev`` and ``out`` must not overlap each other or any other argument.
    """
    B = n_rows(inp, rows)
    n_out, n_in = weight.shape
    n_next = w_next.shape[0]
    Bp = n_rows(inp_prev, rows_prev)
    n_blk = (n_out + 3) // 4
    for p in prange(n_tasks):
        t0, t1 = task_blocks(n_blk, np.int64(p), n_tasks)  # np.int64: as in dense_forward
        j0 = min(4 * t0, n_out)
        j1 = min(4 * t1, n_out)
        if back and n_next > 0 and j1 > j0:  # (an empty task must not step b_next)
            for s in range(0, Bp, 4):
                backward_tile(dprev, d_next, w_next, a_prev, act, s, min(s + 4, Bp), j0, j1)
            for m in range(0, n_next, 4):
                grad_block(w_next, b_next, d_next, a_prev, step, True, m, min(m + 4, n_next),
                           j0, j1, None)
        k_first = min(PREFETCH_BLOCKS, t1 - t0)
        for t in range(t0, t1):
            if back:
                i0 = 4 * t
                grad_block(weight, bias, dprev, inp_prev, step, True, i0, min(i0 + 4, n_out), 0,
                           n_in, rows_prev)
            k = t - t0
            if k < k_first:
                for r in range(B * k // k_first, B * (k + 1) // k_first):
                    prefetch_row(inp, row_of(rows, r), 0, n_in)
                if k == k_first - 1:
                    for t_ in range(t0, t + 1):
                        forward_units(out, inp, weight, bias, t_, rows, 0, B)
            else:
                forward_units(out, inp, weight, bias, t, rows, 0, B)
        if act != IDENTITY and act != SOFTMAX:
            for b in range(B):
                activate_row(out[b, j0:j1], act)
    if act == SOFTMAX:
        for b in prange(B):
            activate_row(out[b], act)


dense_forward_serial, dense_forward = jit_pair(dense_forward)
dense_backward_serial, dense_backward = jit_pair(dense_backward)
dense_grad_serial, dense_grad = jit_pair(dense_grad)
deferred_sweep = jit(parallel=True)(deferred_sweep)
