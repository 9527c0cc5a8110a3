"""Each kernel of ``fastbp.kernels`` (threaded and ``_serial``) against its naive NumPy twin in
``tests/naive.py``, on odd sizes, for every activation code and both dtypes.

Tolerances come from the standard floating-point error bound of a sum of ``n`` products in any
order (fast-math lets the compiler reassociate and fuse): ``|err| <= n * eps * sum_k |x_k w_k|``,
with a factor of 2 of slack, plus a few ``eps`` relative for the activation. Any indexing error
(a wrong row, a skipped block or chunk, a missing bias) is orders of magnitude above that.
Outputs are pre-filled with NaN, so an element a kernel forgets to write fails the comparison.
"""
import itertools
import json

import numba
import numpy as np
import pytest

import naive
from fastbp import _config
from fastbp import kernels as K
from fastbp.kernels.dense import (PANEL_AHEAD_BYTES, bias_sums, deferred_sweep, forward_units,
                                  grad_block, panel_groups, panel_task)
from fastbp.kernels.simd import vector_bits

ELEMENTWISE = ("identity", "sigmoid", "tanh", "relu")
ALL_ACTS = ELEMENTWISE + ("softmax",)

# Batch sizes and widths: remainders of the 4-row unit blocks and the 2-sample tile
# (1, 3, 17, 129), whole blocks (4), and 600 inputs so the 256-column chunks are crossed
# (256, 257 sit on the chunk edge); 1027 and 1100 inputs split the gradient into three equal
# column chunks of whole vectors, the last one shorter.
BATCHES = (1, 3, 17)
N_INS = (1, 3, 17, 129, 256, 257, 600)
N_OUTS = (1, 3, 4, 17, 129)
SHAPES = list(itertools.product(BATCHES, N_INS, N_OUTS)) + [
    (2, 600, 17), (4, 5, 8), (129, 17, 129), (129, 600, 5), (33, 129, 3), (6, 1100, 7),
    (9, 1027, 13)]

FORWARD = {"threaded": K.dense_forward, "serial": K.dense_forward_serial}
BACKWARD = {"threaded": K.dense_backward, "serial": K.dense_backward_serial}
GRAD = {"threaded": K.dense_grad, "serial": K.dense_grad_serial}
SGD = {"threaded": K.sgd_update, "serial": K.sgd_update_serial}

DTYPE_IDS = ["float32", "float64"]
DTYPES = [np.float32, np.float64]


def eps(dtype):
    return float(np.finfo(dtype).eps)


def nan_filled(shape, dtype):
    return np.full(shape, np.nan, dtype=dtype)


def assert_within(got, ref, tol, what):
    got64 = np.asarray(got, dtype=np.float64)
    assert np.all(np.isfinite(got64)), f"{what}: non-finite values (an element not written?)"
    err = np.abs(got64 - ref)
    bad = err > tol
    if bad.any():
        k = np.unravel_index(np.argmax(err - tol), err.shape)
        raise AssertionError(f"{what}: {bad.sum()} of {bad.size} elements off; worst at {k}: "
                             f"got {got64[k]!r}, expected {ref[k]!r}, tolerance {tol[k]!r}")


def activation_outputs(rng, shape, act, dtype):
    """Plausible stored activations ``a = f(z)`` for the derivative: in f's range."""
    if act == "sigmoid":
        a = rng.uniform(0.01, 0.99, shape)
    elif act == "tanh":
        a = rng.uniform(-0.99, 0.99, shape)
    elif act == "relu":
        a = np.maximum(rng.uniform(-1, 1, shape), 0.0)  # about half exact zeros
    elif act == "softmax":
        a = naive.activate(rng.normal(size=shape), "softmax")
    else:
        a = rng.uniform(-2, 2, shape)
    return a.astype(dtype)


# ---- dense_forward ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(FORWARD))
@pytest.mark.parametrize("act", ALL_ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_forward_matches_naive(variant, act, dtype, rng):
    kernel = FORWARD[variant]
    e = eps(dtype)
    for B, n_in, n_out in SHAPES:
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        W = (rng.uniform(-1, 1, (n_out, n_in)) * (2 / np.sqrt(n_in))).astype(dtype)
        b = rng.uniform(-0.5, 0.5, n_out).astype(dtype)
        out = nan_filled((B, n_out), dtype)
        kernel(out, X, W, b, K.ACTIVATIONS[act])
        assert out.dtype == dtype
        ref = naive.dense_forward(X, W, b, act)
        X64, W64, b64 = (v.astype(np.float64) for v in (X, W, b))
        scale = np.abs(X64) @ np.abs(W64).T + np.abs(b64)
        bound_z = 2 * (n_in + 2) * e * scale  # error of z = X W^T + b
        if act == "softmax":
            # d a_k = a_k (dz_k - sum_j a_j dz_j): at most 2 a_k max_j |dz_j|, plus exp rounding
            tol = 2 * bound_z.max(axis=1, keepdims=True) * ref + 8 * e * ref
        else:
            tol = bound_z + 4 * e * np.abs(ref)  # every f here is 1-Lipschitz
        assert_within(out, ref, tol, f"{variant} dense_forward {act} {np.dtype(dtype).name} "
                                     f"B={B} n_in={n_in} n_out={n_out}")
        if act == "softmax":
            np.testing.assert_allclose(out.astype(np.float64).sum(axis=1), 1.0,
                                       rtol=0, atol=8 * n_out * e)


def test_dense_forward_zero_weights_give_activation_of_bias(rng):
    """z = b exactly when W = 0: the output is f(b) for every sample, whatever the input."""
    for dtype in DTYPES:
        X = rng.normal(size=(5, 300)).astype(dtype)
        W = np.zeros((7, 300), dtype=dtype)
        b = rng.normal(size=7).astype(dtype)
        for act in ELEMENTWISE:
            for kernel in FORWARD.values():
                out = nan_filled((5, 7), dtype)
                kernel(out, X, W, b, K.ACTIVATIONS[act])
                ref = naive.activate(b, act)
                np.testing.assert_allclose(out, np.broadcast_to(ref, (5, 7)), rtol=4 * eps(dtype),
                                           atol=0)


VECTOR_WIDTH_SCRIPT = """
import itertools, json, sys
import numpy as np
from fastbp import kernels as K
from fastbp.kernels.dense import backward_tile, forward_units, grad_block
from fastbp.kernels.simd import vector_bits
import numba

@numba.njit
def by_rows(out, X, W, b, rows):
    for t in range((W.shape[0] + 3) // 4):
        forward_units(out, X, W, b, t, rows, 0, rows.shape[0])

rng = np.random.default_rng(3)
worst = 0.0
for dtype in (np.float32, np.float64):
    e = float(np.finfo(dtype).eps)
    for B, n_in, n_out in [(4, 1, 4), (5, 3, 5), (8, 16, 8), (9, 17, 6), (12, 33, 9),
                           (17, 129, 13), (32, 784, 12)]:
        X = rng.uniform(-1, 1, (B + 7, n_in)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b = rng.uniform(-1, 1, n_out).astype(dtype)
        rows = rng.permutation(B + 7)[:B]
        outs = []
        for kernel in (K.dense_forward, K.dense_forward_serial):
            out = np.full((B, n_out), np.nan, dtype)
            kernel(out, X[:B], W, b, K.IDENTITY)
            outs.append((out, X[:B]))
        out = np.full((B, n_out), np.nan, dtype)
        by_rows(out, X, W, b, rows)
        outs.append((out, X[rows]))
        for out, x in outs:
            x64, W64 = x.astype(np.float64), W.astype(np.float64)
            ref = x64 @ W64.T + b
            bound = 2 * (n_in + 2) * e * (np.abs(x64) @ np.abs(W64).T + np.abs(b))
            assert np.isfinite(out).all(), (dtype, B, n_in, n_out)
            worst = max(worst, float((np.abs(out - ref) / bound).max()))

@numba.njit
def grad_by_rows(W, bias, d, X, scale, rows, j0, j1):
    for i0 in range(0, W.shape[0], 4):
        grad_block(W, bias, d, X, scale, True, i0, min(i0 + 4, W.shape[0]), j0, j1, rows)

for dtype in (np.float32, np.float64):
    e = float(np.finfo(dtype).eps)
    for B, n_in, n_out in [(1, 3, 4), (5, 5, 6), (9, 16, 8), (7, 37, 9), (32, 784, 12),
                           (3, 1100, 5)]:
        X = rng.uniform(-1, 1, (B + 7, n_in)).astype(dtype)
        d = rng.uniform(-1, 1, (B, n_out)).astype(dtype)
        W0 = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b0 = rng.uniform(-1, 1, n_out).astype(dtype)
        scale = dtype(-0.37)
        rows = rng.permutation(B + 7)[:B]
        outs = []
        for accumulate in (False, True):
            for kernel in (K.dense_grad, K.dense_grad_serial):
                W = W0.copy() if accumulate else np.full_like(W0, np.nan)
                bias = b0.copy() if accumulate else np.full_like(b0, np.nan)
                kernel(W, bias, d, X[:B], scale, accumulate)
                outs.append((W, X[:B], accumulate))
                # the bias step (simd.column_sums)
                b_base = b0.astype(np.float64) if accumulate else 0.0
                b_ref = b_base + float(scale) * d.astype(np.float64).sum(axis=0)
                b_bound = 2 * (B + 2) * e * (0.37 * np.abs(d.astype(np.float64)).sum(axis=0)
                                             + np.abs(b_base))
                assert np.isfinite(bias).all(), ("bias", dtype, B, n_in, n_out)
                worst = max(worst, float((np.abs(bias - b_ref) / b_bound).max()))
        # through row indices, and with the columns split at odd places: bitwise the same
        whole, split = W0.copy(), W0.copy()
        bias_whole, bias = b0.copy(), b0.copy()
        grad_by_rows(whole, bias_whole, d, X, scale, rows, 0, n_in)
        cuts = sorted({0, n_in, min(5, n_in), min(21, n_in), n_in // 2})
        for j0, j1 in zip(cuts[:-1], cuts[1:]):
            grad_by_rows(split, bias, d, X, scale, rows, j0, j1)
        assert np.array_equal(whole, split), ("split", dtype, B, n_in, n_out)
        assert np.array_equal(bias_whole, bias), ("split bias", dtype, B, n_in, n_out)
        outs.append((whole, X[rows], True))
        for W, x, accumulate in outs:
            d64, x64 = d.astype(np.float64), x.astype(np.float64)
            base = W0.astype(np.float64) if accumulate else 0.0
            ref = base + float(scale) * (d64.T @ x64)
            bound = 2 * (B + 2) * e * (0.37 * (np.abs(d64).T @ np.abs(x64)) + np.abs(base))
            assert np.isfinite(W).all(), (dtype, B, n_in, n_out)
            worst = max(worst, float((np.abs(W - ref) / bound).max()))

@numba.njit
def backward_split(dinp, d, W, a, cuts):
    for s in range(0, dinp.shape[0], 4):
        for c in range(cuts.shape[0] - 1):
            backward_tile(dinp, d, W, a, K.IDENTITY, s, min(s + 4, dinp.shape[0]), cuts[c],
                          cuts[c + 1])

for dtype in (np.float32, np.float64):
    e = float(np.finfo(dtype).eps)
    for B, n_in, n_out in [(4, 3, 1), (5, 5, 6), (8, 16, 8), (9, 37, 7), (32, 128, 10),
                           (4, 600, 17), (67, 77, 1030),  # packed panels
                           (262, 1030, 260)]:  # their tiles prefetch (dense.PANEL_AHEAD_BYTES)
        d = rng.uniform(-1, 1, (B, n_out)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        a = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        outs = []
        for kernel in (K.dense_backward, K.dense_backward_serial):
            out = np.full((B, n_in), np.nan, dtype)
            kernel(out, d, W, a, K.IDENTITY)
            outs.append(out)
        split = np.full((B, n_in), np.nan, dtype)
        cuts = np.array(sorted({0, n_in, min(5, n_in), min(21, n_in), n_in // 2}), np.int64)
        backward_split(split, d, W, a, cuts)
        assert np.array_equal(split, outs[0]), ("split", dtype, B, n_in, n_out)
        d64, W64 = d.astype(np.float64), W.astype(np.float64)
        bound = 2 * (n_out + 2) * e * (np.abs(d64) @ np.abs(W64))
        for out in outs:
            assert np.isfinite(out).all(), (dtype, B, n_in, n_out)
            worst = max(worst, float((np.abs(out - d64 @ W64) / bound).max()))

# batches large enough for the gradient's packed panels (dense.use_grad_panels: not at 128
# bits), and one whose strips the panels read in place (dense.grad_in_place: at 256 bits):
# bitwise the 4-row tiles
from fastbp.kernels.dense import grad_in_place, use_grad_panels
for dtype, (B, n_in, n_out) in itertools.product((np.float32, np.float64),
                                                 [(258, 256, 515), (128, 784, 70)]):
    item = np.dtype(dtype).itemsize
    assert use_grad_panels(B, n_out, n_in * item, item) == (vector_bits() >= 256)
    assert grad_in_place(B, n_out, n_in * item, item) == (vector_bits() == 256 and n_in == 784)
    X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
    d = rng.uniform(-1, 1, (B, n_out)).astype(dtype)
    W0 = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
    b0 = rng.uniform(-1, 1, n_out).astype(dtype)
    want, b_want = W0.copy(), b0.copy()
    grad_by_rows(want, b_want, d, X, dtype(-0.37), np.arange(B), 0, n_in)
    for kernel in (K.dense_grad, K.dense_grad_serial):
        W, b = W0.copy(), b0.copy()
        kernel(W, b, d, X, dtype(-0.37), True)
        assert np.array_equal(W, want) and np.array_equal(b, b_want), ("panels", dtype)

# batches large enough for the forward pass's packed panels (dense.use_forward_panels: not at
# 128 bits): every sample takes the same operations wherever it is in the batch
from fastbp.kernels.dense import use_forward_panels
for dtype in (np.float32, np.float64):
    e = float(np.finfo(dtype).eps)
    for B, n_in, n_out in [(97, 77, 130), (96, 33, 32), (262, 40, 1030)]:  # the last prefetches
        assert use_forward_panels(B, n_out) == (vector_bits() >= 256)
        X = rng.uniform(-1, 1, (B + 3, n_in)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b = rng.uniform(-1, 1, n_out).astype(dtype)
        outs = []
        for kernel, s in ((K.dense_forward, 0), (K.dense_forward_serial, 0), (K.dense_forward, 3)):
            out = np.full((B, n_out), np.nan, dtype)
            kernel(out, X[s:s + B], W, b, K.IDENTITY)
            outs.append(out)
        assert np.array_equal(outs[0], outs[1]), ("forward twins", dtype)
        if vector_bits() >= 256:  # (the 4 x 4 tiles' last 1 to 3 samples take scalar loops)
            assert np.array_equal(outs[0][3:], outs[2][:-3]), ("forward shifted", dtype)
        x64, W64 = X[:B].astype(np.float64), W.astype(np.float64)
        bound = 2 * (n_in + 2) * e * (np.abs(x64) @ np.abs(W64).T + np.abs(b))
        worst = max(worst, float((np.abs(outs[0] - (x64 @ W64.T + b)) / bound).max()))

# the panels' transposing copy: squares of this width's lanes, and element by element
from fastbp.kernels.dense import pack_transposed
for dtype in (np.float32, np.float64):
    for order in ("C", "F"):
        src = np.asarray(rng.uniform(-1, 1, (37, 21)).astype(dtype), order=order)
        pk = np.zeros((21, 40), dtype)
        pack_transposed(pk, src, 3, 37)
        assert np.array_equal(pk[:, :34], src[3:].T), ("pack_transposed", dtype, order)
print(json.dumps({"bits": vector_bits(), "worst": worst}))
"""


@pytest.mark.parametrize("cpu, features, bits", [
    ("haswell", "+64bit,+sse,+sse2,+sse3,+ssse3,+sse4.1,+sse4.2,+popcnt,+cx16,+avx,+avx2,+fma,+f16c",
     256),
    ("x86-64", "+64bit,+sse,+sse2", 128)], ids=["avx2", "sse2"])
def test_vector_tiles_at_narrower_vector_widths(tmp_path, cpu, features, bits):
    """``simd.dot_tile``, ``grad_tile`` and ``delta_tile`` build their vectors at the width of the
    CPU numba compiles for (512 bits on this project's machines). A fresh process compiles for
    an older x86 CPU (numba's ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES``, no disk cache) and
    checks the forward pass, the gradient with its bias step and delta propagation against NumPy (whole tiles,
    columns past the last vector, fewer columns than one vector, rows read through indices,
    both dtypes), that the gradient's and the deltas' columns come out bitwise the same
    however they are split, that the packed panels (the gradient's also reading its strips in
    place, the prefetching ones too) give the 4-row tiles' numbers, that the
    forward panels give a sample the same numbers wherever it sits in the batch, and the
    panels' transposing copy."""
    import os
    import platform
    import subprocess
    import sys
    from pathlib import Path
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86 CPU names")
    script = tmp_path / "widths.py"
    script.write_text(VECTOR_WIDTH_SCRIPT)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CPU_FEATURES=features, FASTBP_CACHE="0",
               PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bits"] == bits
    assert result["worst"] <= 1.0, result


# ---- dense_backward --------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(BACKWARD))
@pytest.mark.parametrize("act", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_backward_matches_naive(variant, act, dtype, rng):
    """dinp = (dout W) * f'(a_prev). ``act`` is the previous layer's activation; softmax is only
    ever an output activation, so it never reaches this kernel."""
    kernel = BACKWARD[variant]
    e = eps(dtype)
    for B, n_in, n_out in SHAPES:
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        A_prev = activation_outputs(rng, (B, n_in), act, dtype)
        dinp = nan_filled((B, n_in), dtype)
        kernel(dinp, dout, W, A_prev, K.ACTIVATIONS[act])
        assert dinp.dtype == dtype
        ref = naive.dense_backward(dout, W, A_prev, act)
        fprime = np.abs(naive.activation_grad(A_prev, act))
        # f'(a) itself carries rounding: 1 - a^2 cancels near |a| = 1 (the oracle computes it in
        # float64 with two roundings, the kernel may fuse it into one FMA)
        a64 = A_prev.astype(np.float64)
        fprime_err = 4 * e * (fprime + a64 * a64) if act in ("sigmoid", "tanh") else 0.0
        dw = np.abs(dout.astype(np.float64)) @ np.abs(W.astype(np.float64))
        tol = 2 * (n_out + 2) * e * dw * fprime + dw * fprime_err + 4 * e * np.abs(ref)
        assert_within(dinp, ref, tol, f"{variant} dense_backward {act} "
                                      f"{np.dtype(dtype).name} B={B} n_in={n_in} n_out={n_out}")
        if act == "relu":  # where the unit was off, the delta is exactly zero
            assert np.all(dinp[A_prev == 0] == 0)


# ---- dense_grad ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(GRAD))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("scale_kind", ["1/B", "0.3"])
def test_dense_grad_matches_naive(variant, dtype, scale_kind, rng):
    kernel = GRAD[variant]
    e = eps(dtype)
    for B, n_in, n_out in SHAPES:
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        A_prev = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        scale = dtype(1.0 / B) if scale_kind == "1/B" else dtype(0.3)
        dW = nan_filled((n_out, n_in), dtype)
        db = nan_filled(n_out, dtype)
        kernel(dW, db, dout, A_prev, scale)
        assert dW.dtype == dtype and db.dtype == dtype
        ref_W, ref_b = naive.dense_grad(dout, A_prev, float(scale))
        d64 = np.abs(dout.astype(np.float64))
        tol_W = 2 * (B + 2) * e * float(scale) * (d64.T @ np.abs(A_prev.astype(np.float64)))
        tol_b = 2 * (B + 2) * e * float(scale) * d64.sum(axis=0)
        what = f"{variant} dense_grad {np.dtype(dtype).name} B={B} n_in={n_in} n_out={n_out}"
        assert_within(dW, ref_W, tol_W, what + " dW")
        assert_within(db, ref_b, tol_b, what + " db")


@pytest.mark.parametrize("variant", list(GRAD))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_grad_accumulates(variant, dtype, rng):
    """``accumulate=True`` adds the scaled product to what the outputs hold; with
    ``scale = -lr/B`` on the weights themselves this is the fused plain-SGD step."""
    kernel = GRAD[variant]
    e = eps(dtype)
    for B, n_in, n_out in SHAPES[::3] + [(5, 600, 6), (8, 257, 9)]:
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        A_prev = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        W0 = rng.normal(size=(n_out, n_in)).astype(dtype)
        b0 = rng.normal(size=n_out).astype(dtype)
        scale = dtype(-0.3 / B)
        W, b = W0.copy(), b0.copy()
        kernel(W, b, dout, A_prev, scale, True)
        ref_W, ref_b = naive.dense_grad(dout, A_prev, float(scale))
        d64 = np.abs(dout.astype(np.float64))
        # every addition into W rounds relative to the running value, which starts at W0
        tol_W = 2 * (B + 2) * e * (abs(float(scale)) * (d64.T @ np.abs(A_prev.astype(np.float64)))
                                   + np.abs(W0.astype(np.float64)))
        tol_b = 2 * (B + 2) * e * (abs(float(scale)) * d64.sum(axis=0) + np.abs(b0))
        what = f"{variant} dense_grad accumulate {np.dtype(dtype).name} B={B} n_in={n_in} " \
               f"n_out={n_out}"
        assert_within(W, W0 + ref_W, tol_W, what + " W")
        assert_within(b, b0 + ref_b, tol_b, what + " b")


@numba.njit
def _bias_in_pieces(dbias, dout, scale, accumulate, cuts):
    for c in range(cuts.shape[0] - 1):
        bias_sums(dbias, dout, scale, accumulate, cuts[c], cuts[c + 1])


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_bias_sums_add_the_samples_in_order(dtype, rng):
    """The gradient's bias step (``simd.column_sums`` for C-contiguous arrays, a loop per
    element otherwise): with scale 1 it is the plain left-to-right sum of each column, bitwise;
    split at any columns it gives the same bits; the loops (a column view) agree."""
    for B, n in [(1, 1), (3, 5), (32, 128), (33, 17), (256, 130), (7, 1000)]:
        dout = rng.normal(size=(B, n)).astype(dtype)
        want = np.zeros(n, dtype)
        for b in range(B):  # in order, rounding to dtype after every addition
            want = (want + dout[b]).astype(dtype)
        got = nan_filled(n, dtype)
        _bias_in_pieces(got, dout, dtype(1.0), False, np.array([0, n], np.int64))
        assert np.array_equal(got, want), (np.dtype(dtype).name, B, n)
        cuts = np.array(sorted({0, n, min(3, n), min(19, n), n // 2}), np.int64)
        b0 = rng.normal(size=n).astype(dtype)
        whole, pieces = b0.copy(), b0.copy()
        _bias_in_pieces(whole, dout, dtype(-0.3), True, np.array([0, n], np.int64))
        _bias_in_pieces(pieces, dout, dtype(-0.3), True, cuts)
        assert np.array_equal(whole, pieces), (np.dtype(dtype).name, B, n)
        ref = b0.astype(np.float64) - 0.3 * dout.astype(np.float64).sum(axis=0)
        tol = 2 * (B + 2) * eps(dtype) * (0.3 * np.abs(dout.astype(np.float64)).sum(axis=0)
                                          + np.abs(b0))
        assert_within(whole, ref, tol, f"bias {np.dtype(dtype).name} B={B} n={n}")
        # the loops, through a non-contiguous view of the same numbers
        wide = np.zeros((B, 2 * n), dtype)
        wide[:, ::2] = dout
        looped = b0.copy()
        _bias_in_pieces(looped, wide[:, ::2], dtype(-0.3), True, cuts)
        assert_within(looped, ref, tol, f"bias loops {np.dtype(dtype).name} B={B} n={n}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_dense_grad_bias_is_the_in_order_sum(dtype, rng):
    """The bias inside fastbp's own kernels, compiled with its fast-math flags: the plain
    left-to-right sum of each column, bitwise, on the panel path and off it, threaded and
    serial (LLVM regrouped it under ``reassoc`` once, differently per caller)."""
    for B, n_in, n_out in [(1024, 1000, 777), (256, 1024, 128), (128, 784, 512), (33, 17, 10),
                           (256, 784, 130)]:
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        inp = rng.normal(size=(B, n_in)).astype(dtype)
        want = np.zeros(n_out, dtype)
        for b in range(B):
            want = (want + dout[b]).astype(dtype)
        for name, kernel in GRAD.items():
            dW = nan_filled((n_out, n_in), dtype)
            db = nan_filled(n_out, dtype)
            kernel(dW, db, dout, inp, dtype(1.0))
            assert np.array_equal(db, want), (np.dtype(dtype).name, name, B, n_in, n_out)


@pytest.mark.parametrize("n_cols, nr", [(1024, 16), (784, 16), (16, 16), (17, 16), (777, 32),
                                        (1000, 8), (48, 16)])
@pytest.mark.parametrize("n6", [0, 1, 2, 20, 21])
def test_panel_tasks_cover_every_strip_and_block_once(n_cols, nr, n6):
    """The panel paths' tasks (``panel_groups``, ``panel_task``): every (column, 6-row block)
    once, the rows after the blocks once per strip, one task per strip but the last when the
    strips are odd, whose two halves of the blocks go one to each half of the loop."""
    n_strips = (n_cols + nr - 1) // nr
    groups = panel_groups(n_strips)
    n_tasks = n_strips + groups - 1
    assert n_tasks % 2 == 0
    seen = np.zeros((n_cols, max(n6, 1)), np.int64)
    rests = np.zeros(n_cols, np.int64)
    packs = np.zeros(n_strips, np.int64)
    for t in range(n_tasks):
        j0, j1, k0, k1, last = panel_task(np.int64(t), nr, n_cols, n6, groups)
        assert j0 % nr == 0 and 0 <= j0 < j1 <= min(j0 + nr, n_cols), (t, j0, j1)
        assert 0 <= k0 <= k1 <= n6
        seen[j0:j1, k0:k1] += 1
        rests[j0:j1] += bool(last)
        packs[j0 // nr] += 1
    if n6:
        assert (seen == 1).all()
    assert (rests == 1).all()
    assert (packs[:-1] == 1).all() and packs[-1] == groups
    if groups == 2:  # the split strip: its first half at task 0, its second at the middle
        half = n_tasks // 2
        assert panel_task(np.int64(0), nr, n_cols, n6, groups)[:2] == \
            panel_task(np.int64(half), nr, n_cols, n6, groups)[:2] == ((n_strips - 1) * nr, n_cols)


@numba.njit
def _forward_by_blocks(out, X, W, b):
    for t in range((W.shape[0] + 3) // 4):
        forward_units(out, X, W, b, t, None, 0, X.shape[0])


def _forward_as_blocks(X, W, b):
    """The sums of ``_forward_by_blocks``, checked equal bit for bit to both twins of
    ``dense_forward`` (identity activation); returns them."""
    want = nan_filled((X.shape[0], W.shape[0]), X.dtype)
    _forward_by_blocks(want, X, W, b)
    for kernel in (K.dense_forward, K.dense_forward_serial):
        out = nan_filled(want.shape, X.dtype)
        kernel(out, X, W, b, K.IDENTITY)
        assert np.array_equal(out, want), (X.dtype.name, X.shape, W.shape)
    return want


@numba.njit
def _grad_by_blocks(W, b, d, X, scale):
    for i0 in range(0, W.shape[0], 4):
        grad_block(W, b, d, X, scale, True, i0, min(i0 + 4, W.shape[0]), 0, X.shape[1], None)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_large_batches_split_by_samples_and_column_strips(dtype, rng):
    """Past 512 kB of inputs, ``dense_forward`` gives its threads chunks of samples and
    ``dense_grad`` strips of columns (each input read from memory once). Same numbers, bit for
    bit, as blocks of units over the whole batch and 4-row blocks over all columns; threaded
    and serial twins agree; and NumPy agrees within rounding."""
    e = eps(dtype)
    for B, n_in, n_out in [(300, 600, 13), (131, 1100, 6), (1030, 130, 9)]:
        assert B * n_in * np.dtype(dtype).itemsize > 512 * 1024
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        W0 = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b0 = rng.uniform(-1, 1, n_out).astype(dtype)
        d = rng.uniform(-1, 1, (B, n_out)).astype(dtype)
        want = _forward_as_blocks(X, W0, b0)
        ref = X.astype(np.float64) @ W0.T.astype(np.float64) + b0
        tol = 2 * (n_in + 2) * e * (np.abs(X.astype(np.float64)) @ np.abs(W0.T.astype(np.float64))
                                    + np.abs(b0))
        assert_within(want, ref, tol, f"forward {np.dtype(dtype).name} B={B}")
        scale = dtype(-0.3 / B)
        W_want, b_want = W0.copy(), b0.copy()
        _grad_by_blocks(W_want, b_want, d, X, scale)
        for kernel in (K.dense_grad, K.dense_grad_serial):
            W, b = W0.copy(), b0.copy()
            kernel(W, b, d, X, scale, True)
            assert np.array_equal(W, W_want) and np.array_equal(b, b_want), (
                np.dtype(dtype).name, B, n_in, n_out)
        d64 = d.astype(np.float64)
        ref_W = W0 + float(scale) * (d64.T @ X.astype(np.float64))
        tol_W = 2 * (B + 2) * e * (abs(float(scale)) * (np.abs(d64).T @ np.abs(X.astype(np.float64)))
                                   + np.abs(W0.astype(np.float64)))
        assert_within(W_want, ref_W, tol_W, f"grad {np.dtype(dtype).name} B={B}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_narrow_layers_split_by_samples(dtype, rng):
    """Fewer than 32 units from 64 samples: ``dense_forward`` gives its threads chunks of
    samples (a batch far below 512 kB). Bit for bit the blocks of units over the whole batch,
    in both twins; samples past the last whole chunk, a last 1 to 3 units, and 31 units (the
    bound) included."""
    for B, n_in, n_out in [(64, 50, 10), (130, 37, 3), (97, 200, 31), (257, 128, 1)]:
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b = rng.uniform(-1, 1, n_out).astype(dtype)
        _forward_as_blocks(X, W, b)


# ---- packed panels: dense_backward and dense_grad on large layers ----------------------------
# (B, n_in, n_out): shapes that take the packed panels (``dense.use_panels``,
# ``dense.use_grad_panels``), with panel strips that do not divide the columns (the panel is 64
# float32 or 32 float64 columns wide with AVX-512, half that below), a last partial 6-row
# block, rows past the last 6-row pair, and a last 1 to 3 rows; and the lower bounds: few terms
# over rows of ``W`` a multiple of 2 KiB apart (70 x 1536), and from 41 samples over such rows
# (41 x 1024), 70 rows of ``dW``, 32 samples for 260 rows of ``dW`` over input rows a multiple
# of 4 KiB apart (1024 columns), 64 samples for 258 rows of ``dW`` (at 256 bits), and a strip
# the gradient reads in place (128 x 784 for 70 rows: ``dense.grad_in_place``); and an input
# batch past ``dense.PANEL_AHEAD_BYTES`` (262 x 1030: the tiles prefetch the next ones' rows).
BACKWARD_PANEL_SHAPES = [(67, 77, 1030), (130, 200, 515), (70, 1536, 70), (41, 1024, 70),
                         (262, 1030, 260)]
GRAD_PANEL_SHAPES = [(258, 256, 515), (1030, 45, 526), (1030, 260, 526), (130, 260, 70),
                     (32, 1024, 260), (64, 260, 258), (128, 784, 70)]


@pytest.mark.parametrize("act", ELEMENTWISE)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_packed_panels_are_the_small_batch_tiles_bitwise(act, dtype, rng):
    """From enough samples and terms, ``dense_backward`` and ``dense_grad`` copy the strip they
    read into a packed panel and take 6-row tiles over it. Every element takes the same
    operations as in the 4-row tiles of the smaller calls, so: bitwise what the same kernel
    gives on the samples (rows of ``dW``) in pieces too small for panels, threaded and serial
    twins agree, and NumPy agrees within rounding."""
    from fastbp.kernels.dense import grad_in_place, use_grad_panels, use_panels
    e = eps(dtype)
    name = np.dtype(dtype).name
    code = K.ACTIVATIONS[act]
    assert any(B * n_in * np.dtype(dtype).itemsize >= PANEL_AHEAD_BYTES
               for B, n_in, _ in BACKWARD_PANEL_SHAPES)
    for B, n_in, n_out in BACKWARD_PANEL_SHAPES:
        assert use_panels(B, n_out, n_in * np.dtype(dtype).itemsize)
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        W = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        a = activation_outputs(rng, (B, n_in), act, dtype)
        # pieces of 12 samples (whole 4-sample tiles, as in the panel path): no panels
        want = nan_filled((B, n_in), dtype)
        for s in range(0, B, 12):
            assert not use_panels(min(12, B - s), n_out, n_in * np.dtype(dtype).itemsize)
            K.dense_backward(want[s:s + 12], dout[s:s + 12], W, a[s:s + 12], code)
        for kernel in (K.dense_backward, K.dense_backward_serial):
            got = nan_filled((B, n_in), dtype)
            kernel(got, dout, W, a, code)
            assert np.array_equal(got, want), ("backward", act, name, B, n_in, n_out)
        ref = naive.dense_backward(dout, W, a, act)
        fprime = np.abs(naive.activation_grad(a, act))
        a64 = a.astype(np.float64)
        fprime_err = 4 * e * (fprime + a64 * a64) if act in ("sigmoid", "tanh") else 0.0
        dw = np.abs(dout.astype(np.float64)) @ np.abs(W.astype(np.float64))
        tol = 2 * (n_out + 2) * e * dw * fprime + dw * fprime_err + 4 * e * np.abs(ref)
        assert_within(want, ref, tol, f"panel dense_backward {act} {name} B={B}")
    if act != "identity":
        return  # the gradient has no activation: once per dtype
    item = np.dtype(dtype).itemsize
    in_place = [grad_in_place(B, n_out, n_in * item, item) for B, n_in, n_out in GRAD_PANEL_SHAPES]
    assert in_place == [vector_bits() == 256 and n_in == 784 for _, n_in, _ in GRAD_PANEL_SHAPES]
    for B, n_in, n_out in GRAD_PANEL_SHAPES:
        # (not the narrow shape, whose input rows are under 1 KiB, nor, at 512 bits, 64
        # samples: the 4-row tiles, checked all the same)
        item = np.dtype(dtype).itemsize
        assert use_grad_panels(B, n_out, n_in * item, item) == (
            n_in > 45 and (vector_bits() == 256 or vector_bits() == 512 and B != 64))
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        d = rng.uniform(-1, 1, (B, n_out)).astype(dtype)
        W0 = rng.uniform(-1, 1, (n_out, n_in)).astype(dtype)
        b0 = rng.uniform(-1, 1, n_out).astype(dtype)
        scale = dtype(-0.3 / B)
        # pieces of 8 rows of dW (whole 4-row tiles): no panels
        W_want, b_want = W0.copy(), b0.copy()
        for i in range(0, n_out, 8):
            K.dense_grad(W_want[i:i + 8], b_want[i:i + 8], np.ascontiguousarray(d[:, i:i + 8]),
                         X, scale, True)
        for kernel in (K.dense_grad, K.dense_grad_serial):
            W, b = W0.copy(), b0.copy()
            kernel(W, b, d, X, scale, True)
            assert np.array_equal(W, W_want) and np.array_equal(b, b_want), (
                "grad", name, B, n_in, n_out)
            W = nan_filled(W0.shape, dtype)
            b = nan_filled(b0.shape, dtype)
            kernel(W, b, d, X, scale, False)
            d64, x64 = d.astype(np.float64), X.astype(np.float64)
            ref_W, ref_b = naive.dense_grad(d64, x64, float(scale))
            tol_W = 2 * (B + 2) * e * abs(float(scale)) * (np.abs(d64).T @ np.abs(x64))
            tol_b = 2 * (B + 2) * e * abs(float(scale)) * np.abs(d64).sum(axis=0)
            assert_within(W, ref_W, tol_W, f"panel dense_grad {name} B={B}")
            assert_within(b, ref_b, tol_b, f"panel dense_grad bias {name} B={B}")
        ref_W = W0 + float(scale) * (d.astype(np.float64).T @ X.astype(np.float64))
        tol_W = 2 * (B + 2) * e * (abs(float(scale)) * (np.abs(d.astype(np.float64)).T
                                                          @ np.abs(X.astype(np.float64)))
                                   + np.abs(W0.astype(np.float64)))
        assert_within(W_want, ref_W, tol_W, f"panel dense_grad accumulate {name} B={B}")


# ---- packed panels: dense_forward on large batches --------------------------------------------
# (B, n_in, n_out): shapes that take the forward panels (``dense.use_forward_panels``): strips
# (64 float32 or 32 float64 units with AVX-512, half that below) that do not divide the units,
# an odd number of strips in 2 tasks each and in 1 task each, a last partial 6-sample block,
# a batch of whole blocks, inputs fewer than and not a multiple of a vector, and an output past
# ``dense.PANEL_AHEAD_BYTES`` (262 x 1030: the tiles prefetch the next ones' rows).
FORWARD_PANEL_SHAPES = [(97, 77, 130), (130, 200, 515), (96, 33, 32), (102, 5, 40),
                        (262, 40, 1030)]


@pytest.mark.parametrize("act", ALL_ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_forward_panels_take_the_same_operations_for_every_sample(act, dtype, rng):
    """From enough samples and units, ``dense_forward`` copies strips of ``W`` transposed into
    packed panels and takes 6-sample tiles over them, the last samples through a padded copy.
    Every sample takes the same operations: bitwise the same result for a sample wherever it
    sits in the batch, threaded and serial twins agree, and NumPy agrees within rounding."""
    from fastbp.kernels.dense import use_forward_panels
    e = eps(dtype)
    code = K.ACTIVATIONS[act]
    assert any(B * n_out * np.dtype(dtype).itemsize >= PANEL_AHEAD_BYTES
               for B, _, n_out in FORWARD_PANEL_SHAPES)
    for B, n_in, n_out in FORWARD_PANEL_SHAPES:
        assert use_forward_panels(B, n_out)
        X = rng.uniform(-1, 1, (B + 5, n_in)).astype(dtype)
        W = (rng.uniform(-1, 1, (n_out, n_in)) * (2 / np.sqrt(n_in))).astype(dtype)
        b = rng.uniform(-0.5, 0.5, n_out).astype(dtype)
        outs = {}
        for kernel, shift in ((K.dense_forward, 0), (K.dense_forward_serial, 0),
                              (K.dense_forward, 1), (K.dense_forward, 5)):
            out = nan_filled((B, n_out), dtype)
            kernel(out, X[shift:shift + B], W, b, code)
            outs[kernel, shift] = out
        want = outs[K.dense_forward, 0]
        assert np.array_equal(outs[K.dense_forward_serial, 0], want)
        for shift in (1, 5):
            assert np.array_equal(outs[K.dense_forward, shift][:B - shift], want[shift:]), shift
        ref = naive.dense_forward(X[:B], W, b, act)
        X64, W64 = X[:B].astype(np.float64), W.astype(np.float64)
        bound_z = 2 * (n_in + 2) * e * (np.abs(X64) @ np.abs(W64).T + np.abs(b))
        if act == "softmax":
            tol = 2 * bound_z.max(axis=1, keepdims=True) * ref + 8 * e * ref
        else:
            tol = bound_z + 4 * e * np.abs(ref)
        assert_within(want, ref, tol, f"panel dense_forward {act} {np.dtype(dtype).name} "
                                      f"B={B} n_in={n_in} n_out={n_out}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("order", ["C", "F"])
def test_pack_transposed_is_numpy_transpose(dtype, order, rng):
    """``pack_transposed`` (squares transposed in registers for C-contiguous arrays, element by
    element otherwise and at the edges) against NumPy, on row ranges and column counts that
    are and are not multiples of a vector."""
    from fastbp.kernels.dense import pack_transposed
    for n_rows, n_cols, i0, i1 in [(40, 33, 0, 40), (130, 77, 64, 130), (16, 16, 0, 16),
                                   (9, 3, 2, 9), (70, 1, 5, 69)]:
        src = np.asarray(rng.uniform(-1, 1, (n_rows, n_cols)).astype(dtype), order=order)
        pk = np.full((n_cols, i1 - i0 + 3), -7.0, dtype=dtype)
        pack_transposed(pk, src, i0, i1)
        np.testing.assert_array_equal(pk[:, :i1 - i0], src[i0:i1].T)
        assert (pk[:, i1 - i0:] == -7.0).all()


# ---- deferred_sweep: the previous batch's steps on two layers, then the forward pass ---------
STEP_FORWARD_SHAPES = [  # (B_prev, B, n_in, n_out, m): another previous batch size, odd blocks
    (3, 17, 600, 17, 5), (17, 17, 129, 129, 11), (5, 1, 1027, 6, 0), (33, 129, 17, 129, 4),
    (4, 4, 1, 1, 1), (32, 32, 784, 128, 10), (6, 0, 40, 70, 3)]


@pytest.mark.parametrize("act", ALL_ACTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_deferred_sweep_is_the_four_kernels_bitwise(act, dtype, rng):
    """One region does what ``dense_backward`` (delta propagation through the next layer),
    ``dense_grad`` on the next layer, ``dense_grad`` on this one and then ``dense_forward`` do
    (all checked against naive above), bit for bit, for any number of tasks; with a next layer
    of 0 units ``dprev`` is given and only read; without ``back`` it is ``dense_forward``
    alone; with a batch of 0 rows only the steps run. Both batches are read in place, as rows
    of one larger array in shuffled positions (the other rows NaN, so any stray read shows)."""
    from fastbp.kernels.dense import use_forward_panels
    code = K.ACTIVATIONS[act]
    for B_prev, B, n_in, n_out, m in STEP_FORWARD_SHAPES:
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        X_prev = rng.uniform(-1, 1, (B_prev, n_in)).astype(dtype)
        data = nan_filled((B + B_prev + 3, n_in), dtype)
        where = rng.permutation(data.shape[0])
        rows, rows_prev = where[:B].astype(np.int64), where[B:B + B_prev].astype(np.int64)
        data[rows], data[rows_prev] = X, X_prev
        W = rng.uniform(-0.1, 0.1, (n_out, n_in)).astype(dtype)
        b = rng.uniform(-0.5, 0.5, n_out).astype(dtype)
        a_prev = rng.uniform(0.05, 0.95, (B_prev, n_out)).astype(dtype)
        W_next = rng.uniform(-0.3, 0.3, (m, n_out)).astype(dtype)
        b_next = rng.uniform(-0.5, 0.5, m).astype(dtype)
        d_next = rng.normal(size=(B_prev, m)).astype(dtype)
        d_given = rng.normal(size=(B_prev, n_out)).astype(dtype)
        step = dtype(-0.3 / B_prev)
        for back, n_tasks in ((True, 1), (True, 2), (True, 3), (True, 7), (False, 2)):
            what = f"B'={B_prev} B={B} n_in={n_in} n_out={n_out} m={m} back={back} " \
                   f"tasks={n_tasks}"
            W2, b2, Wn2, bn2 = W.copy(), b.copy(), W_next.copy(), b_next.copy()
            d2 = d_given.copy() if m == 0 else nan_filled((B_prev, n_out), dtype)
            out2 = nan_filled((B, n_out), dtype)
            if back:
                if m > 0:
                    K.dense_backward(d2, d_next, Wn2, a_prev, code)
                    K.dense_grad(Wn2, bn2, d_next, a_prev, step, True)
                K.dense_grad(W2, b2, d2, X_prev, step, True)
            # deferred_sweep takes the 4 x 4 tiles, never the packed panels (defer_first_step
            # does not defer where dense_forward would take them): here, pieces below them
            piece = 64 if use_forward_panels(B, n_out) else max(B, 1)
            for s in range(0, B, piece):
                assert not use_forward_panels(min(piece, B - s), n_out) or piece == B
                K.dense_forward(out2[s:s + piece], X[s:s + piece], W2, b2, code)
            W1, b1, Wn1, bn1 = W.copy(), b.copy(), W_next.copy(), b_next.copy()
            d1 = d_given.copy() if m == 0 else nan_filled((B_prev, n_out), dtype)
            out1 = nan_filled((B, n_out), dtype)
            deferred_sweep(out1, d1, data, rows, data, rows_prev, a_prev, d_next, W1, b1, Wn1,
                           bn1, step, back, code, n_tasks)
            np.testing.assert_array_equal(W1, W2, err_msg=what)
            np.testing.assert_array_equal(b1, b2, err_msg=what)
            np.testing.assert_array_equal(Wn1, Wn2, err_msg=what)
            np.testing.assert_array_equal(bn1, bn2, err_msg=what)
            np.testing.assert_array_equal(out1, out2, err_msg=what)
            if back:
                np.testing.assert_array_equal(d1, d2, err_msg=what)
                assert not np.array_equal(W1, W), what  # the step did happen
                if m > 0:
                    assert not np.array_equal(Wn1, W_next), what
                else:
                    np.testing.assert_array_equal(d1, d_given, err_msg=what)


# ---- output_delta and loss_sum ---------------------------------------------------------------
OUTPUT_CASES = [("mse", a) for a in ELEMENTWISE] + [("bce", "sigmoid"),
                                                      ("cross_entropy", "softmax")]


def targets(rng, shape, loss, dtype):
    B, m = shape
    if loss == "mse":
        return rng.uniform(-1, 1, shape).astype(dtype)
    if loss == "bce":
        return rng.uniform(0, 1, shape).astype(dtype)
    Y = np.zeros(shape, dtype=dtype)
    Y[np.arange(B), rng.integers(0, m, B)] = 1
    return Y


@pytest.mark.parametrize("loss,act", OUTPUT_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_output_delta_matches_naive(loss, act, dtype, rng):
    e = eps(dtype)
    for B, m in itertools.product(BATCHES + (129,), (1, 3, 17, 129)):
        A = activation_outputs(rng, (B, m), act, dtype)
        Y = targets(rng, (B, m), loss, dtype)
        delta = nan_filled((B, m), dtype)
        K.output_delta(delta, A, Y, K.LOSSES[loss], K.ACTIVATIONS[act])
        assert delta.dtype == dtype
        ref = naive.output_delta(A, Y, loss, act)
        tol = 4 * e * (np.abs(A.astype(np.float64)) + np.abs(Y.astype(np.float64)))
        assert_within(delta, ref, tol, f"output_delta {loss}/{act} {np.dtype(dtype).name} "
                                       f"B={B} m={m}")


@pytest.mark.parametrize("loss,act", OUTPUT_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_sum_matches_naive(loss, act, dtype, rng):
    """The batch's summed loss, accumulated in float64 whatever the data's dtype."""
    for B, m in itertools.product(BATCHES + (129,), (1, 3, 17, 129)):
        A = activation_outputs(rng, (B, m), act, dtype)
        if loss != "mse":
            A = np.clip(A, dtype(0.01), dtype(0.99))  # away from the clipping
        Y = targets(rng, (B, m), loss, dtype)
        got = K.loss_sum(A, Y, K.LOSSES[loss])
        assert isinstance(got, float)
        ref = naive.loss_per_sample(A, Y, loss).sum()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-300,
                                   err_msg=f"loss_sum {loss} B={B} m={m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_loss_sum_clips_probabilities_at_the_dtype_eps(dtype):
    """Outputs of exactly 0 and 1 give a finite loss: probabilities clipped to [eps, 1 - eps]."""
    A = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.25]], dtype=dtype)
    Y = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype)
    e = eps(dtype)
    for loss in ("bce", "cross_entropy"):
        got = K.loss_sum(A, Y, K.LOSSES[loss])
        ref = naive.loss_per_sample(A, Y, loss, eps=e).sum()
        assert np.isfinite(got)
        np.testing.assert_allclose(got, ref, rtol=1e-12)
    # the clip matters: -log(eps) dominates the BCE loss
    assert K.loss_sum(A, Y, K.BCE) > -np.log(e)


# ---- sgd_update ------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(SGD))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_sgd_update_matches_naive(variant, dtype, rng):
    kernel = SGD[variant]
    e = eps(dtype)
    for P in (1, 3, 17, 129, 600, 40_001):
        params = rng.normal(size=P).astype(dtype)
        grads = rng.normal(size=P).astype(dtype)
        lr = dtype(0.37)
        before, grads_before = params.copy(), grads.copy()
        assert kernel(params, grads, lr) is None  # in place
        assert params.dtype == dtype
        ref = naive.sgd_update(before, grads, float(lr))
        tol = 2 * e * (np.abs(before.astype(np.float64)) + float(lr) * np.abs(grads))
        assert_within(params, ref, tol, f"{variant} sgd_update P={P}")
        np.testing.assert_array_equal(grads, grads_before)  # grads only read
        # a zero step changes nothing, bitwise
        again = params.copy()
        kernel(again, grads, dtype(0.0))
        np.testing.assert_array_equal(again, params)


# ---- threaded and serial twins agree bitwise ------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_threaded_and_serial_twins_agree_bitwise(dtype, rng):
    """Threads own whole output blocks, so the split cannot change any rounding."""
    for B, n_in, n_out in [(1, 600, 129), (17, 257, 17), (33, 129, 3)]:
        X = rng.uniform(-1, 1, (B, n_in)).astype(dtype)
        W = rng.uniform(-0.1, 0.1, (n_out, n_in)).astype(dtype)
        b = rng.uniform(-0.5, 0.5, n_out).astype(dtype)
        dout = rng.normal(size=(B, n_out)).astype(dtype)
        for act in ALL_ACTS:
            o1, o2 = nan_filled((B, n_out), dtype), nan_filled((B, n_out), dtype)
            K.dense_forward(o1, X, W, b, K.ACTIVATIONS[act])
            K.dense_forward_serial(o2, X, W, b, K.ACTIVATIONS[act])
            np.testing.assert_array_equal(o1, o2)
        for act in ELEMENTWISE:
            A = activation_outputs(rng, (B, n_in), act, dtype)
            d1, d2 = nan_filled((B, n_in), dtype), nan_filled((B, n_in), dtype)
            K.dense_backward(d1, dout, W, A, K.ACTIVATIONS[act])
            K.dense_backward_serial(d2, dout, W, A, K.ACTIVATIONS[act])
            np.testing.assert_array_equal(d1, d2)
        g1, g2 = nan_filled((n_out, n_in), dtype), nan_filled((n_out, n_in), dtype)
        c1, c2 = nan_filled(n_out, dtype), nan_filled(n_out, dtype)
        K.dense_grad(g1, c1, dout, X, dtype(1.0 / B))
        K.dense_grad_serial(g2, c2, dout, X, dtype(1.0 / B))
        np.testing.assert_array_equal(g1, g2)
        np.testing.assert_array_equal(c1, c2)


# ---- scalar activation helpers --------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_scalar_activation_helpers(dtype, rng):
    z = rng.normal(scale=3, size=50).astype(dtype)
    e = eps(dtype)
    for act in ELEMENTWISE:
        got = np.array([K.activate(dtype(v), K.ACTIVATIONS[act]) for v in z])
        np.testing.assert_allclose(got, naive.activate(z, act), rtol=4 * e, atol=4 * e * 1e-3)
        a = naive.activate(z, act).astype(dtype)
        got = np.array([K.activation_grad(dtype(v), K.ACTIVATIONS[act]) for v in a])
        np.testing.assert_allclose(got, naive.activation_grad(a, act), rtol=4 * e, atol=4 * e)
    row = z[:17].copy()
    K.softmax_row(row)
    np.testing.assert_allclose(row, naive.activate(z[:17], "softmax"), rtol=8 * e, atol=0)
    # large inputs do not overflow: the row maximum is subtracted first
    big = np.array([1000.0, 999.0, -1000.0], dtype=dtype)
    K.softmax_row(big)
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, naive.activate([1000.0, 999.0, -1000.0], "softmax"),
                               rtol=8 * e)


# ---- float32 is never promoted inside a kernel -----------------------------------------------
def float64_locals(pyfunc, *args):
    """Names of the float64-typed values in ``pyfunc`` compiled (uncached, serially, with
    fastbp's options) for ``args``; literal constants are left out (``type(x)(1.0)`` reads one
    and converts it, which is the intended pattern)."""
    disp = numba.njit(fastmath=set(_config.FASTMATH), cache=False, error_model="numpy")(pyfunc)
    disp(*args)
    typemap = disp.overloads[disp.signatures[0]].type_annotation.typemap
    return sorted(name for name, t in typemap.items()
                  if "float64" in str(t) and not name.startswith("$const"))


def test_float32_kernels_compute_in_float32(rng):
    f = np.float32
    B, n_in, n_out = 3, 5, 6
    X = rng.uniform(-1, 1, (B, n_in)).astype(f)
    W = rng.uniform(-1, 1, (n_out, n_in)).astype(f)
    b = rng.uniform(-1, 1, n_out).astype(f)
    out = np.empty((B, n_out), f)
    dout = rng.normal(size=(B, n_out)).astype(f)
    dinp = np.empty((B, n_in), f)
    dW, db = np.empty((n_out, n_in), f), np.empty(n_out, f)
    Y = rng.uniform(0, 1, (B, n_out)).astype(f)
    params, grads = rng.normal(size=20).astype(f), rng.normal(size=20).astype(f)
    cases = {
        "activate": (K.activate, f(0.3), K.SIGMOID),
        "activation_grad": (K.activation_grad, f(0.3), K.SIGMOID),
        "softmax_row": (K.softmax_row, out[0].copy()),
        "dense_forward": (K.dense_forward, out, X, W, b, K.SIGMOID),
        "dense_backward": (K.dense_backward, dinp, dout, W, X, K.TANH),
        "dense_grad": (K.dense_grad, dW, db, dout, X, f(1 / 3)),
        "output_delta": (K.output_delta, out.copy(), out, Y, K.MSE, K.SIGMOID),
        "sgd_update": (K.sgd_update, params, grads, f(0.1)),
    }
    promoted = {}
    for name, (kernel, *args) in cases.items():
        found = float64_locals(kernel.py_func, *args)
        if found:
            promoted[name] = found
    assert not promoted, f"float64 values inside float32 kernels: {promoted}"
    sigs = {str(s.return_type) for s in K.activate.nopython_signatures
            if str(s.args[0]) == "float32"}
    assert sigs == {"float32"}
