"""The forward pass's 4 x 4 register tile, written with explicit vectors (LLVM IR).

``forward_rows4`` takes 16 dot products at a time: 4 units x 4 samples, each a sum over the
layer's inputs. Written as numba loops, the compiler vectorizes the sums along the inputs (16
float32 lanes, one accumulator vector per dot product) and then closes each of the 16
accumulators on its own: 4 shuffle-and-add steps per vector, 128 instructions a tile, about a
sixth of the tile's multiply-adds at 784 inputs. ``dot_tile`` builds the same loop itself and
closes the 16 accumulators together, by halving: each step adds the two halves of a pair of
vectors into one, so 16 vectors of 16 partial sums become one vector of 16 sums in 15
additions and 30 shuffles, and each sample's 4 sums land side by side, ready to store as one
4-wide vector. On one thread, 64 units x 784 inputs x 32 samples: 107 against 100 GFLOP/s.

The vector width is the target's: 512 bits with AVX-512 (32 vector registers hold the 16
accumulators and the 8 loads), 256 with AVX, 128 otherwise. Numba caches compiled code per CPU,
so a cache built on one machine is not reused on another with different features.
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


@intrinsic
def dot_tile(typingctx, out, b, weight, i0, inp, q0, q1, q2, q3, bias):
    """``out[b + k, i0 + u] = bias[i0 + u] + sum_{j < m} weight[i0 + u, j] inp[q_k, j]`` for
    k, u < 4, where ``m`` is the largest multiple of the vector width (in elements) not above
    ``inp``'s columns; returns ``m`` (the caller adds the last columns). out (B, n_out),
    weight (n_out, n_in), inp (N, n_in), bias (n_out,): C-contiguous, one float dtype; b, i0,
    q0 .. q3: integers (rows, not checked)."""
    arrays = (out, weight, inp)
    if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" for a in arrays):
        return None
    if not (isinstance(bias, types.Array) and bias.ndim == 1):
        return None
    dtype = weight.dtype
    if dtype not in (types.float32, types.float64) or any(
            a.dtype != dtype for a in (out, inp, bias)):
        return None
    if not all(isinstance(i, types.Integer) for i in (b, i0, q0, q1, q2, q3)):
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
        fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vty, [vty] * 3),
            "llvm.fma.v%d%s" % (lanes, "f32" if dtype == types.float32 else "f64"))
        align = dtype.bitwidth // 8
        with cgutils.for_range_slice(builder, intp_t(0), m, intp_t(lanes), intp_t) as (j, _):
            def load(row):
                return builder.load(builder.bitcast(builder.gep(row, [j]), vty.as_pointer()),
                                    align=align)
            w = [load(r) for r in w_rows]
            x = [load(r) for r in x_rows]
            for k in range(4):
                for u in range(4):
                    a = acc[4 * k + u]
                    builder.store(builder.call(fma, [w[u], x[k], builder.load(a)]), a)
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
        return m

    return types.intp(out, b, weight, i0, inp, q0, q1, q2, q3, bias), codegen
