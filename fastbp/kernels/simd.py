"""Register tiles written with explicit vectors (LLVM IR through numba's ``@intrinsic``).

``dot_tile``: the forward pass's 4 x 4 tile. ``forward_rows4`` takes 16 dot products at a
time: 4 units x 4 samples, each a sum over the layer's inputs. Written as numba loops, the
compiler vectorizes the sums along the inputs (16 float32 lanes, one accumulator vector per dot
product) and then closes each of the 16 accumulators on its own: 4 shuffle-and-add steps per
vector, 128 instructions a tile, about a sixth of the tile's multiply-adds at 784 inputs.
``dot_tile`` builds the same loop itself and closes the 16 accumulators together, by halving:
each step adds the two halves of a pair of vectors into one, so 16 vectors of 16 partial sums
become one vector of 16 sums in 15 additions and 30 shuffles, and each sample's 4 sums land side
by side, ready to store as one 4-wide vector. On one thread, 64 units x 784 inputs x 32
samples: 107 against 100 GFLOP/s.

``grad_tile``: the gradient (and SGD step) of 4 rows of ``W``. The numba loops it replaces
(``dense.grad_rows4_loops``) add 4 samples at a time into ``W``, which is loaded and stored once
per 4 samples; ``grad_tile`` holds 4 rows x 4 vectors of the sums in registers over the whole
batch and touches ``W`` once. On one thread, 64 rows x 784 columns x 32 samples, accumulating
into ``W``: 105 against 87 to 98 GFLOP/s.

``delta_tile``: delta propagation (``dout W``) for 4 samples, the same tile with the roles
turned (4 samples x 4 vectors of sums over ``W``'s rows). On one thread, 32 samples x 64
columns from 10 outputs (the first layer's share of a thread at mnist-b32): 0.89 against 1.34
us.

``forward_panel``: ``delta_tile``'s tile for the forward pass on big batches, over a panel of
``W`` transposed (``transpose_block``: a square of a vector's lanes transposed in registers);
docs/performance.md, "Forward panels".

``column_sums``: the bias step, ``sum_b dout[b, i]`` for a range of ``i``, with the columns
side by side in vectors running down the batch, where a loop per element is one chain of
dependent scalar additions: 128 rows x 32 samples took 3.1 us that way on one thread.

The vector width is the target's: 512 bits with AVX-512 (32 vector registers hold the 16
accumulators and the loads), 256 with AVX, 128 otherwise. The multiply-adds are LLVM's
``fmuladd`` (fused where the CPU has FMA). Numba caches compiled code per CPU, so a cache built
on one machine is not reused on another with different features.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils, config
from numba.core.codegen import get_host_cpu_features
from numba.extending import intrinsic


def vector_bits():
    """The vector width ``dot_tile`` builds with: 512 bits when the features numba compiles for
    (``NUMBA_CPU_FEATURES``, else the host's) include AVX-512, 256 with AVX, else 128."""
    features = config.CPU_FEATURES
    if features is None:
        features = get_host_cpu_features()
    flags = set(features.split(","))
    if "+avx512f" in flags:
        return 512
    if "+avx" in flags:
        return 256
    return 128


def _row_pointer(context, builder, arr_type, arr, row):
    """Pointer to the first element of row ``row`` (an intp) of the 2-D array ``arr``."""
    ary = context.make_array(arr_type)(context, builder, arr)
    stride = cgutils.unpack_tuple(builder, ary.strides, 2)[0]
    base = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
    return builder.bitcast(builder.gep(base, [builder.mul(row, stride)]), ary.data.type)


def _close(builder, vecs, lanes):
    """Reduce the accumulators ``vecs`` (a power of 2 of them, ``lanes`` wide) by halving: each
    step adds the first halves of a pair's lane groups to the second halves, so that a vector
    holds twice as many accumulators with half as many lanes each. Returns the vectors left;
    accumulator ``a``'s sum is lane ``a % lanes`` of vector ``a // lanes``, when there are at
    least ``lanes`` accumulators."""
    group = lanes
    mask_type = ir.VectorType(ir.IntType(32), lanes)
    while group > 1 and len(vecs) > 1:
        half = group // 2
        lo, hi = [], []
        for src in (0, 1):
            for g in range(lanes // group):
                start = src * lanes + g * group
                lo += range(start, start + half)
                hi += range(start + half, start + group)
        lo = ir.Constant(mask_type, lo)
        hi = ir.Constant(mask_type, hi)
        vecs = [builder.fadd(builder.shuffle_vector(p, q, lo), builder.shuffle_vector(p, q, hi),
                             flags=("fast",))
                for p, q in zip(vecs[0::2], vecs[1::2])]
        group = half
    return vecs


def _first_lanes(builder, lanes, count):
    """The mask of the first ``count`` (an intp below ``lanes``) of ``lanes`` lanes."""
    i32 = ir.IntType(32)
    mask_type = ir.VectorType(i32, lanes)
    undef = ir.Constant(mask_type, ir.Undefined)
    n = builder.insert_element(undef, builder.trunc(count, i32), i32(0))
    n = builder.shuffle_vector(n, undef, ir.Constant(mask_type, [0] * lanes))
    return builder.icmp_signed("<", ir.Constant(mask_type, list(range(lanes))), n)


def _vector_load(builder, ptr, vty, align, mask=None):
    """A vector load from ``ptr`` (a pointer to the element type); with ``mask``, only those
    lanes are read (no fault past them) and the others are 0."""
    vptr = builder.bitcast(ptr, vty.as_pointer())
    if mask is None:
        return builder.load(vptr, align=align)
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vptr.type, i32, mask.type, vty]),
        "llvm.masked.load.v%d%s.p0" % (vty.count, _suffix(vty)))
    zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
    return builder.call(fn, [vptr, i32(align), mask, zero])


def _vector_store(builder, value, ptr, align, mask=None):
    """A vector store to ``ptr``; with ``mask``, only those lanes are written."""
    vty = value.type
    vptr = builder.bitcast(ptr, vty.as_pointer())
    if mask is None:
        builder.store(value, vptr, align=align)
        return
    i32 = ir.IntType(32)
    fn = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vty, vptr.type, i32, mask.type]),
        "llvm.masked.store.v%d%s.p0" % (vty.count, _suffix(vty)))
    builder.call(fn, [value, vptr, i32(align), mask])


def _suffix(vty):
    return "f32" if isinstance(vty.element, ir.FloatType) else "f64"


def _multiply_add(builder, vty):
    """LLVM's ``fmuladd`` on ``vty``: a * b + c, fused where the CPU has FMA."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty] * 3),
        "llvm.fmuladd.v%d%s" % (vty.count, _suffix(vty)))


def _c_float_arrays(*arrays):
    """The dtype shared by ``arrays`` when they are all C-contiguous 2-D arrays of float32 or
    float64 (what the tiles below take), else None (the intrinsic then does not type)."""
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" for a in arrays):
        return None
    dtype = arrays[0].dtype
    if dtype not in (types.float32, types.float64) or any(a.dtype != dtype for a in arrays):
        return None
    return dtype


def _integers(*values):
    """Whether every one of ``values`` is typed as an integer (the tiles' row and column
    arguments)."""
    return all(isinstance(v, types.Integer) for v in values)


def _step_arguments(scale, accumulate):
    """Whether ``scale`` is a number and ``accumulate`` a boolean (the step tiles' arguments)."""
    return isinstance(accumulate, types.Boolean) and isinstance(scale, (types.Float,
                                                                        types.Integer))


class _Codegen:
    """What every tile's code generation starts from: the argument ``k`` as an intp
    (``index(k)``), the intp and float LLVM types, the lanes and widest tile for the dtype, and
    the element alignment."""

    def __init__(self, context, builder, signature, args, dtype):
        self.context, self.builder, self.signature, self.args = context, builder, signature, args
        self.intp = context.get_value_type(types.intp)
        self.fty = context.get_value_type(dtype)
        self.lanes, self.nv_max = _lanes_and_tile(dtype)
        self.align = dtype.bitwidth // 8

    def index(self, k):
        return self.context.cast(self.builder, self.args[k], self.signature.args[k], types.intp)

    def rows(self, k, arr_type):
        """The number of rows of the 2-D array argument ``k`` (of type ``arr_type``)."""
        ary = self.context.make_array(arr_type)(self.context, self.builder, self.args[k])
        return cgutils.unpack_tuple(self.builder, ary.shape, 2)[0]


@intrinsic
def dot_tile(typingctx, out, b, weight, i0, inp, q0, q1, q2, q3, bias):
    """``out[b + k, i0 + u] = bias[i0 + u] + sum_j weight[i0 + u, j] inp[q_k, j]`` for k, u < 4:
    whole vectors, then the last columns in one masked step. out (B, n_out),
    weight (n_out, n_in), inp (N, n_in), bias (n_out,): C-contiguous, one float dtype; b, i0,
    q0 .. q3: integers (rows, not checked)."""
    dtype = _c_float_arrays(out, weight, inp)
    if dtype is None or not (isinstance(bias, types.Array) and bias.ndim == 1
                             and bias.layout == "C" and bias.dtype == dtype):
        return None
    if not _integers(b, i0, q0, q1, q2, q3):
        return None

    def codegen(context, builder, signature, args):
        intp_t = context.get_value_type(types.intp)

        def index(k):
            return context.cast(builder, args[k], signature.args[k], types.intp)

        fty = context.get_value_type(dtype)
        lanes = vector_bits() // dtype.bitwidth
        vty = ir.VectorType(fty, lanes)
        n_in = cgutils.unpack_tuple(builder, context.make_array(weight)(
            context, builder, args[2]).shape, 2)[1]
        m = builder.sub(n_in, builder.srem(n_in, intp_t(lanes)))
        row0 = index(3)
        w_rows = [_row_pointer(context, builder, weight, args[2],
                               builder.add(row0, intp_t(u))) for u in range(4)]
        x_rows = [_row_pointer(context, builder, inp, args[4], index(5 + k)) for k in range(4)]
        zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * lanes)
        # accumulator 4 k + u: sample k, unit u (allocas in the entry block: promoted to
        # registers)
        acc = [cgutils.alloca_once_value(builder, zero) for _ in range(16)]
        fma = _multiply_add(builder, vty)
        align = dtype.bitwidth // 8

        def step(j, samples, mask=None):
            w = [_vector_load(builder, builder.gep(r, [j]), vty, align, mask) for r in w_rows]
            x = [_vector_load(builder, builder.gep(x_rows[k], [j]), vty, align, mask)
                 for k in samples]
            for k, xk in zip(samples, x):
                for u in range(4):
                    a = acc[4 * k + u]
                    builder.store(builder.call(fma, [w[u], xk, builder.load(a)]), a)

        # 16 accumulators and 8 loaded vectors need AVX-512's 32 registers; with 16 (AVX2) they
        # spilled, so there the loop runs twice, 4 units x 2 samples each time: the same
        # multiply-adds per sum, in the same order (docs/performance.md, "Forward tile at 256 bits")
        for samples in ((0, 1, 2, 3),) if _lanes_and_tile(dtype)[1] == 4 else ((0, 1), (2, 3)):
            with cgutils.for_range_slice(builder, intp_t(0), m, intp_t(lanes), intp_t) as (j, _):
                step(j, samples)
            # the last columns (fewer than a vector): one masked step
            with builder.if_then(builder.icmp_signed("<", m, n_in)):
                step(m, samples, _first_lanes(builder, lanes, builder.sub(n_in, m)))
        sums = _close(builder, [builder.load(a) for a in acc], lanes)
        v4 = ir.VectorType(fty, 4)
        bias_ptr = builder.gep(context.make_array(bias)(context, builder, args[9]).data, [row0])
        bias4 = builder.load(builder.bitcast(bias_ptr, v4.as_pointer()), align=align)
        b0 = index(1)
        for k in range(4):
            # sample k's 4 sums: 4 lanes of one vector, or two whole 2-lane vectors
            if lanes >= 4:
                p = q = sums[4 * k // lanes]
                first = 4 * k % lanes
            else:
                p, q, first = sums[2 * k], sums[2 * k + 1], 0
            four = builder.shuffle_vector(p, q, ir.Constant(
                ir.VectorType(ir.IntType(32), 4), list(range(first, first + 4))))
            dst = builder.gep(_row_pointer(context, builder, out, args[0],
                                           builder.add(b0, intp_t(k))), [row0])
            builder.store(builder.fadd(four, bias4, flags=("fast",)),
                          builder.bitcast(dst, v4.as_pointer()), align=align)
        return context.get_dummy_value()

    return types.void(out, b, weight, i0, inp, q0, q1, q2, q3, bias), codegen


def _splat(builder, value, vty):
    """``value`` in every lane of a ``vty`` vector."""
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), vty.count),
                                                         [0] * vty.count))


def _rank_tile(builder, vty, align, acc, nv, n_terms, coefficients, source_row, j, mask):
    """The register tile shared by the gradient and delta propagation: for u < mr and v < nv,
    ``acc[u * nv + v] = sum_t c_u(t) * source_row(t)[j + v * lanes ...]`` over t < n_terms, in
    order from 0 (``coefficients(t)``: the mr scalars c_u(t), mr = ``len(acc) // nv``;
    ``source_row(t)``: a pointer to a row). Each term costs nv vector loads and mr broadcasts
    for mr nv multiply-adds; the sums stay in registers (``acc``: allocas, promoted)."""
    lanes = vty.count
    zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * lanes)
    for a in acc:
        builder.store(zero, a)
    fma = _multiply_add(builder, vty)
    intp_t = j.type
    with cgutils.for_range(builder, n_terms, intp=intp_t) as loop:
        t = loop.index
        row = source_row(t)
        x = [_vector_load(builder, builder.gep(row, [builder.add(j, intp_t(v * lanes))]), vty,
                          align, mask) for v in range(nv)]
        # one broadcast at a time, used at once: the 6-row panel tiles, holding all 6 beside
        # their accumulators, spilled at both widths (docs/performance.md, "Packed panels")
        for u, coefficient in enumerate(coefficients(t)):
            c = _splat(builder, coefficient, vty)
            for v in range(nv):
                a = acc[u * nv + v]
                builder.store(builder.call(fma, [c, x[v], builder.load(a)]), a)


def _column_pieces(builder, start, stop, lanes, nv_max, emit):
    """Columns ``[start, stop)`` as ``emit(j, nv, mask)`` calls: tiles of ``nv_max`` vectors,
    then single vectors, then one masked vector for the last columns (fewer than a vector)."""
    intp_t = start.type
    j = start
    for width, nv in ((nv_max * lanes, nv_max), (lanes, 1)):
        end = builder.add(j, builder.mul(builder.sdiv(builder.sub(stop, j), intp_t(width)),
                                         intp_t(width)))
        with cgutils.for_range_slice(builder, j, end, intp_t(width), intp_t) as (col, _):
            emit(col, nv, None)
        j = end
    with builder.if_then(builder.icmp_signed("<", j, stop)):
        emit(j, 1, _first_lanes(builder, lanes, builder.sub(stop, j)))


class _Accumulators:
    """Allocas for the register tiles of one intrinsic (``mr`` rows), by (vectors, lanes)
    (allocas in the entry block: the optimizer promotes them to registers)."""

    def __init__(self, builder, mr=4):
        self.builder = builder
        self.mr = mr
        self.slots = {}

    def __call__(self, nv, vty):
        key = (nv, vty.count)
        if key not in self.slots:
            zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
            self.slots[key] = [cgutils.alloca_once_value(self.builder, zero)
                               for _ in range(self.mr * nv)]
        return self.slots[key]


def _apply_step(builder, ptr, sums, step, keep, align, mask):
    """The step of the gradient tiles: ``*ptr = step * sums + (*ptr if keep else 0)``, one
    fused multiply-add (``step``: the scale in every lane; masked lanes untouched)."""
    vty = sums.type
    zero = ir.Constant(vty, [ir.Constant(vty.element, 0.0)] * vty.count)
    old = builder.select(keep, _vector_load(builder, ptr, vty, align, mask), zero)
    _vector_store(builder, builder.call(_multiply_add(builder, vty), [step, sums, old]), ptr,
                  align, mask)


def _lanes_and_tile(dtype):
    """Vector lanes for ``dtype`` and the widest tile (in vectors) that fits the registers:
    4 with AVX-512's 32, 2 with 16."""
    bits = vector_bits()
    return bits // dtype.bitwidth, 4 if bits == 512 else 2


# Packed panels (``dense_backward`` and ``dense_grad`` on large batches): the source rows are
# copied into a contiguous panel of ``panel_width`` columns, and the tile has ``PANEL_ROWS``
# rows of sums. Read in place, rows ``n_in`` elements apart (4 KiB at 1024 float32 columns) all
# fall in the same few L1 sets and stream from L2; packed, they stream in order from L1/L2 and
# every loaded vector feeds 6 rows, not 4. 6 rows x 4 vectors (24 of AVX-512's 32 registers)
# or x 2 (12 of 16). Measurements: docs/performance.md, "Packed panels".
PANEL_ROWS = 6


def panel_vectors():
    """Vectors per row of a panel tile: 4 with AVX-512's 32 registers, 2 with 16."""
    return 4 if vector_bits() == 512 else 2


def _source_arguments(rows):
    """Whether ``rows`` is None or a 1-D integer array (rows of the source read by index)."""
    return isinstance(rows, types.NoneType) or (
        isinstance(rows, types.Array) and rows.ndim == 1 and isinstance(rows.dtype, types.Integer))


def _grad_codegen(dtype, rows, mr, nv_max, packed):
    """Code of ``grad_tile`` (``packed`` False: ``mr`` = 4, ``nv_max`` by the registers) and of
    ``grad_panel`` (``packed``: the coefficients are packed, and the source's column ``c0``,
    argument 9, is column ``j0``)."""
    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, signature, args, dtype)
        intp_t, index, fty, lanes, align = g.intp, g.index, g.fty, g.lanes, g.align
        i0 = index(1)
        j0 = index(2)
        n_samples = g.rows(4, signature.args[4])
        scale = context.cast(builder, args[7], signature.args[7], dtype)
        keep = args[8]
        accumulators = _Accumulators(builder, mr)
        dout, inp = signature.args[4], signature.args[5]

        def coefficients(b):
            d_row = _row_pointer(context, builder, dout, args[4], b)
            # a panel tile's coefficients are packed too: their column u is row i0 + u's
            first = intp_t(0) if packed else i0
            return [builder.load(builder.gep(d_row, [builder.add(first, intp_t(u))]))
                    for u in range(mr)]

        def source_row(b):
            if isinstance(rows, types.NoneType):
                r = b
            else:
                rows_data = context.make_array(rows)(context, builder, args[6]).data
                r = context.cast(builder, builder.load(builder.gep(rows_data, [b])),
                                 rows.dtype, types.intp)
            row = _row_pointer(context, builder, inp, args[5], r)
            # a panel's column c0 is column j0: the tile indexes it by j - j0 + c0
            return builder.gep(row, [builder.sub(index(9), j0)]) if packed else row

        def emit(j, nv, mask):
            vty = ir.VectorType(fty, lanes)
            acc = accumulators(nv, vty)
            _rank_tile(builder, vty, align, acc, nv, n_samples, coefficients, source_row, j,
                       mask)
            step = _splat(builder, scale, vty)
            for u in range(mr):
                w_row = _row_pointer(context, builder, signature.args[0], args[0],
                                     builder.add(i0, intp_t(u)))
                for v in range(nv):
                    p = builder.gep(w_row, [builder.add(j, intp_t(v * lanes))])
                    _apply_step(builder, p, builder.load(acc[u * nv + v]), step, keep, align,
                                mask)

        _column_pieces(builder, j0, index(3), lanes, nv_max, emit)
        return context.get_dummy_value()
    return codegen


@intrinsic
def grad_tile(typingctx, dweight, i0, j0, j1, dout, inp, rows, scale, accumulate):
    """Rows ``i0 .. i0 + 3``, columns ``j0 .. j1 - 1`` of the gradient step: ``dweight[i, j] =
    scale * s_ij + (dweight[i, j] if accumulate else 0)`` with ``s_ij = sum_b dout[b, i]
    inp[r_b, j]``, the sum taken by multiply-adds in sample order from 0 (``r_b`` = b when
    ``rows`` is None, else ``rows[b]``). Every column takes exactly these operations, whichever
    piece of the loop holds it, so an element does not depend on ``j0`` and ``j1`` (how the
    columns are split between threads). Register tiles of 4 rows x 4 vectors (2 below
    AVX-512: 16 vector registers), held over all the samples: a sample costs 4 vector loads and
    4 broadcasts for 16 multiply-adds, and ``dweight`` is read and written once. Then single
    vectors, then one masked vector for the last columns. dweight (n_out, n_in), dout
    (B, n_out), inp (N, n_in): C-contiguous, one float dtype; rows None or (B,) int64;
    i0, j0, j1: integers (not checked)."""
    dtype = _c_float_arrays(dweight, dout, inp)
    if dtype is None or not _source_arguments(rows):
        return None
    if not (_integers(i0, j0, j1) and _step_arguments(scale, accumulate)):
        return None
    codegen = _grad_codegen(dtype, rows, 4, _lanes_and_tile(dtype)[1], False)
    return types.void(dweight, i0, j0, j1, dout, inp, rows, scale, accumulate), codegen


@intrinsic
def grad_panel(typingctx, dweight, i0, j0, j1, coef, panel, rows, scale, accumulate, c0):
    """``grad_tile`` for ``PANEL_ROWS`` rows ``i0 ..`` of ``dweight`` from packed coefficients,
    ``coef[b, u]`` holding ``dout[b, i0 + u]`` (``coef``: (B, >= PANEL_ROWS), C-contiguous), and
    ``panel[b, c0 + j - j0]`` holding ``inp[b, j]`` for ``j0 <= j < j1`` (``panel``: C-contiguous,
    a packed panel with ``c0`` 0, or ``inp`` itself with ``c0`` = ``j0``). The same operations
    per element as ``grad_tile`` (multiply-adds in sample order from 0, then the step), so the
    same numbers, bit for bit. ``rows`` must be None."""
    dtype = _c_float_arrays(dweight, coef, panel)
    if dtype is None or not isinstance(rows, types.NoneType):
        return None
    if not (_integers(i0, j0, j1, c0) and _step_arguments(scale, accumulate)):
        return None
    codegen = _grad_codegen(dtype, rows, PANEL_ROWS, panel_vectors(), True)
    return types.void(dweight, i0, j0, j1, coef, panel, rows, scale, accumulate, c0), codegen


def _delta_codegen(dtype, mr, nv_max, packed, biased=False):
    """Code of ``delta_tile`` (``mr`` = 4, ``nv_max`` by the registers), of ``delta_panel``
    (``packed``: the source is a panel whose column 0 is column ``j0``) and of ``forward_panel``
    (``biased``: argument 6 is a bias, added to each sum before it is stored)."""
    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, signature, args, dtype)
        intp_t, index, fty, lanes, align = g.intp, g.index, g.fty, g.lanes, g.align
        b0 = index(1)
        j0 = index(2)
        dinp, dout, weight = signature.args[0], signature.args[4], signature.args[5]
        n_terms = g.rows(5, weight)
        d_rows = [_row_pointer(context, builder, dout, args[4], builder.add(b0, intp_t(u)))
                  for u in range(mr)]
        out_rows = [_row_pointer(context, builder, dinp, args[0], builder.add(b0, intp_t(u)))
                    for u in range(mr)]
        accumulators = _Accumulators(builder, mr)
        if biased:
            bias_data = context.make_array(signature.args[6])(context, builder, args[6]).data

        def coefficients(i):
            return [builder.load(builder.gep(r, [i])) for r in d_rows]

        def source_row(i):
            row = _row_pointer(context, builder, weight, args[5], i)
            # a panel's column 0 is column j0: the tile indexes it by j - j0
            return builder.gep(row, [builder.neg(j0)]) if packed else row

        def emit(j, nv, mask):
            vty = ir.VectorType(fty, lanes)
            acc = accumulators(nv, vty)
            _rank_tile(builder, vty, align, acc, nv, n_terms, coefficients, source_row, j, mask)
            for v in range(nv):
                col = builder.add(j, intp_t(v * lanes))
                if biased:
                    c = _vector_load(builder, builder.gep(bias_data, [col]), vty, align, mask)
                for u in range(mr):
                    value = builder.load(acc[u * nv + v])
                    if biased:
                        value = builder.fadd(value, c)
                    _vector_store(builder, value, builder.gep(out_rows[u], [col]), align, mask)

        _column_pieces(builder, j0, index(3), lanes, nv_max, emit)
        return context.get_dummy_value()
    return codegen


@intrinsic
def delta_tile(typingctx, dinp, b0, j0, j1, dout, weight):
    """Samples ``b0 .. b0 + 3``, columns ``j0 .. j1 - 1`` of delta propagation before the
    activation's derivative: ``dinp[b, j] = sum_i dout[b, i] weight[i, j]``, the sum taken by
    multiply-adds in order from ``i = 0``; every column takes exactly these operations, however
    the columns are split. The tiles of ``grad_tile`` with the roles turned: 4 samples x 4
    vectors of sums in registers over all of ``weight``'s rows, each row costing 4 vector loads
    and 4 broadcasts for 16 multiply-adds, and ``dinp`` written once. dinp (B, n_in), dout
    (B, n_out), weight (n_out, n_in): C-contiguous, one float dtype; b0, j0, j1: integers (not
    checked)."""
    dtype = _c_float_arrays(dinp, dout, weight)
    if dtype is None or not _integers(b0, j0, j1):
        return None
    codegen = _delta_codegen(dtype, 4, _lanes_and_tile(dtype)[1], False)
    return types.void(dinp, b0, j0, j1, dout, weight), codegen


@intrinsic
def delta_panel(typingctx, dinp, b0, j0, j1, dout, panel):
    """``delta_tile`` for ``PANEL_ROWS`` samples ``b0 ..`` from a packed panel: ``panel[i, j -
    j0]`` holds ``weight[i, j]`` for ``j0 <= j < j1`` (``panel``: (n_out, >= j1 - j0),
    C-contiguous). The same operations per element as ``delta_tile``, so the same numbers, bit
    for bit."""
    dtype = _c_float_arrays(dinp, dout, panel)
    if dtype is None or not _integers(b0, j0, j1):
        return None
    codegen = _delta_codegen(dtype, PANEL_ROWS, panel_vectors(), True)
    return types.void(dinp, b0, j0, j1, dout, panel), codegen


@intrinsic
def forward_panel(typingctx, out, b0, i0, i1, inp, panel, bias):
    """The forward pass's sums for ``PANEL_ROWS`` samples ``b0 ..`` and units ``i0 .. i1 - 1``
    from a packed panel of ``W`` transposed: ``out[b, i] = sum_j inp[b, j] panel[j, i - i0] +
    bias[i]`` with ``panel[j, i - i0] = W[i, j]`` (``panel``: (n_in, >= i1 - i0),
    C-contiguous), the sum taken by multiply-adds in order from ``j = 0``, then the bias
    added. ``delta_panel``'s tile: every element takes the same operations, whichever piece of
    the columns holds it."""
    dtype = _c_float_arrays(out, inp, panel)
    if dtype is None or not _integers(b0, i0, i1):
        return None
    if not (isinstance(bias, types.Array) and bias.ndim == 1 and bias.layout == "C"
            and bias.dtype == dtype):
        return None
    codegen = _delta_codegen(dtype, PANEL_ROWS, panel_vectors(), True, biased=True)
    return types.void(out, b0, i0, i1, inp, panel, bias), codegen


@intrinsic
def transpose_block(typingctx, dst, src, r0, c0, d0):
    """``dst[c0 + c, d0 + r] = src[r0 + r, c0 + c]`` for r, c < L (a vector's lanes): L
    vector loads, L log2(L) two-vector shuffles (each step swaps blocks half as wide between
    pairs of rows), L vector stores, where element by element it is L^2 loads and stores.
    dst, src: C-contiguous 2-D arrays of one float dtype; r0, c0, d0: integers (rows and
    columns not checked)."""
    dtype = _c_float_arrays(dst, src)
    if dtype is None or not _integers(r0, c0, d0):
        return None

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, signature, args, dtype)
        intp_t, index, lanes, align = g.intp, g.index, g.lanes, g.align
        vty = ir.VectorType(g.fty, lanes)
        r0, c0, d0 = index(2), index(3), index(4)
        rows = [_vector_load(builder, builder.gep(_row_pointer(
            context, builder, signature.args[1], args[1], builder.add(r0, intp_t(r))), [c0]),
            vty, align) for r in range(lanes)]
        mask_type = ir.VectorType(ir.IntType(32), lanes)
        h = 1
        while h < lanes:
            lo, hi = [], []
            for blk in range(0, lanes, 2 * h):
                lo += list(range(blk, blk + h)) + list(range(lanes + blk, lanes + blk + h))
                hi += (list(range(blk + h, blk + 2 * h))
                       + list(range(lanes + blk + h, lanes + blk + 2 * h)))
            lo, hi = ir.Constant(mask_type, lo), ir.Constant(mask_type, hi)
            new = list(rows)
            for blk in range(0, lanes, 2 * h):
                for a in range(blk, blk + h):
                    new[a] = builder.shuffle_vector(rows[a], rows[a + h], lo)
                    new[a + h] = builder.shuffle_vector(rows[a], rows[a + h], hi)
            rows = new
            h *= 2
        for c in range(lanes):
            row = _row_pointer(context, builder, signature.args[0], args[0],
                               builder.add(c0, intp_t(c)))
            _vector_store(builder, rows[c], builder.gep(row, [d0]), align)
        return context.get_dummy_value()

    return types.void(dst, src, r0, c0, d0), codegen


@intrinsic
def column_sums(typingctx, dbias, i0, i1, dout, scale, accumulate):
    """Columns ``i0 .. i1 - 1`` of the bias step: ``dbias[i] = scale * s_i + (dbias[i] if
    accumulate else 0)`` with ``s_i = sum_b dout[b, i]``, added in sample order from 0 (each
    column in a lane of its own, so an element does not depend on ``i0`` and ``i1``). Vectors of
    the columns run down the batch: a sample costs one vector load and one addition per vector,
    where a loop per column is one chain of dependent scalar additions. dbias (n,), dout (B, n):
    C-contiguous, one float dtype; i0, i1: integers (not checked)."""
    dtype = _c_float_arrays(dout)
    if dtype is None or not (isinstance(dbias, types.Array) and dbias.ndim == 1
                             and dbias.layout == "C" and dbias.dtype == dtype):
        return None
    if not (_integers(i0, i1) and _step_arguments(scale, accumulate)):
        return None

    def codegen(context, builder, signature, args):
        g = _Codegen(context, builder, signature, args, dtype)
        intp_t, index, fty, lanes, nv_max, align = (g.intp, g.index, g.fty, g.lanes, g.nv_max,
                                                    g.align)
        n_samples = g.rows(3, dout)
        scale = context.cast(builder, args[4], signature.args[4], dtype)
        keep = args[5]
        out = context.make_array(dbias)(context, builder, args[0]).data
        accumulators = _Accumulators(builder)

        def emit(j, nv, mask):
            vty = ir.VectorType(fty, lanes)
            acc = accumulators(nv, vty)[:nv]
            zero = ir.Constant(vty, [ir.Constant(fty, 0.0)] * lanes)
            for a in acc:
                builder.store(zero, a)
            with cgutils.for_range(builder, n_samples, intp=intp_t) as loop:
                row = _row_pointer(context, builder, dout, args[3], loop.index)
                for v in range(nv):
                    x = _vector_load(builder, builder.gep(row, [builder.add(j, intp_t(v * lanes))]),
                                     vty, align, mask)
                    # a flag of its own: numba's fast-math pass gives a flagless fadd
                    # ``reassoc``, and LLVM then regrouped the sums differently per caller
                    builder.store(builder.fadd(builder.load(acc[v]), x, flags=("nsz",)), acc[v])
            step = _splat(builder, scale, vty)
            for v in range(nv):
                p = builder.gep(out, [builder.add(j, intp_t(v * lanes))])
                _apply_step(builder, p, builder.load(acc[v]), step, keep, align, mask)

        _column_pieces(builder, index(1), index(2), lanes, nv_max, emit)
        return context.get_dummy_value()

    return types.void(dbias, i0, i1, dout, scale, accumulate), codegen
