"""``fastbp bench --kernels``: GFLOP/s of each dense-layer kernel at the workloads' shapes, next
to this machine's matrix-product speed measured in the same run (NumPy, a 2048 x 2048 product
of the bench's dtype), so that anyone can see how far each kernel is from the limit.

Kernels, per layer ``l`` of a workload (``n_in -> n_out``, batch ``B``), each ``2 B n_in n_out``
floating-point operations: ``forward`` (``kernels.dense_forward``: ``f(inp W^T + b)``),
``delta`` (``kernels.dense_backward``: ``(dout W) * f'(inp)``, the delta of the layer below;
not for the first layer, which has none) and ``grad+step`` (``kernels.dense_grad`` with
``accumulate``: ``W -= lr/B dout^T inp``, the fused SGD step). Each is timed in this process
with fastbp's threads; the product in a fresh process with the peers' environment (as the
NumPy engine), so that neither's thread pool waits on the other's cores.

    python -m fastbp.bench.kernels --workloads mnist-b32 --threads 2 --dtype float32   # JSON
"""
import argparse
import json
import subprocess
import sys
import time

import numpy as np

from .workloads import get_workload

MATMUL_N = 2048
MATMUL_CODE = """
import json, sys, time
import numpy as np
n, dtype = int(sys.argv[1]), sys.argv[2]
rng = np.random.default_rng(0)
a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)
a @ b
best = float("inf")
for _ in range(5):
    t = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t)
print(json.dumps({"gflops": 2 * n ** 3 / best / 1e9}))
"""


def _time(call, min_seconds):
    """Median seconds of one ``call()`` over 5 batches of calls, each of ``min_seconds`` / 5 at
    least (after one warm-up call, which compiles)."""
    call()
    t = time.perf_counter()
    call()
    once = max(time.perf_counter() - t, 1e-7)
    reps = max(1, int(min_seconds / 5 / once))
    times = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            call()
        times.append((time.perf_counter() - t) / reps)
    return float(np.median(times))


def measure(workload_names, dtype="float32", threads=2, min_seconds=0.5):
    """Rows ``{workload, layer, kernel, shape, seconds, gflops}`` for every layer of every
    workload, the kernels run with ``threads`` threads."""
    import numba

    from .. import kernels as K

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    rows = []
    for name in workload_names:
        w = get_workload(name)
        B = w.batch
        for l, (n_in, n_out) in enumerate(zip(w.layers[:-1], w.layers[1:])):
            inp = rng.random((B, n_in)).astype(dtype)
            W = (rng.random((n_out, n_in)) - 0.5).astype(dtype)
            b = np.zeros(n_out, dtype=dtype)
            out = np.empty((B, n_out), dtype=dtype)
            dout = (rng.random((B, n_out)) - 0.5).astype(dtype)
            dinp = np.empty((B, n_in), dtype=dtype)
            scale = np.dtype(dtype).type(-1e-9 / B)  # a tiny step: W barely moves
            calls = {"forward": lambda: K.dense_forward(out, inp, W, b, K.SIGMOID),
                     "grad+step": lambda: K.dense_grad(W, b, dout, inp, scale, True)}
            if l > 0:
                calls["delta"] = lambda: K.dense_backward(dinp, dout, W, inp, K.SIGMOID)
            for kernel, call in calls.items():
                seconds = _time(call, min_seconds)
                rows.append({"workload": name, "layer": l, "kernel": kernel,
                             "shape": f"{B}x{n_in}->{n_out}", "seconds": seconds,
                             "gflops": 2 * B * n_in * n_out / seconds / 1e9})
    return rows


def matmul_gflops(dtype, threads, env, timeout=300):
    """GFLOP/s of NumPy's ``MATMUL_N`` x ``MATMUL_N`` product in a fresh process with
    ``threads`` BLAS threads and environment ``env``."""
    env = dict(env, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", MATMUL_CODE, str(MATMUL_N), dtype],
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"the matmul process failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)["gflops"]


def report(workload_names, dtype, threads, peer_env, json_path=None, min_seconds=0.5):
    """Measure in fresh processes (kernels: fastbp's environment; matmul: the peers'), print
    the table, write the JSON report to ``json_path`` ('-': stdout instead of the table)."""
    cmd = [sys.executable, "-m", "fastbp.bench.kernels", "--workloads", ",".join(workload_names),
           "--dtype", dtype, "--threads", str(threads), "--min-seconds", str(min_seconds)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"the kernel process failed: {proc.stderr.strip()[-500:]}")
    rows = json.loads(proc.stdout)
    peak = matmul_gflops(dtype, threads, peer_env)
    for row in rows:
        row["fraction_of_matmul"] = row["gflops"] / peak
    result = {"dtype": dtype, "threads": threads, "matmul_n": MATMUL_N, "matmul_gflops": peak,
              "kernels": rows}
    if json_path == "-":
        print(json.dumps(result, indent=2))
        return result
    if json_path:
        with open(json_path, "w") as fh:
            json.dump(result, fh, indent=2)
    print(f"NumPy {dtype} {MATMUL_N}x{MATMUL_N} matmul, {threads} threads: {peak:.1f} GFLOP/s")
    print(f"{'workload':12s} {'layer':>5s} {'kernel':10s} {'B x in -> out':>18s} "
          f"{'GFLOP/s':>8s} {'of matmul':>9s}")
    for r in rows:
        print(f"{r['workload']:12s} {r['layer']:5d} {r['kernel']:10s} {r['shape']:>18s} "
              f"{r['gflops']:8.1f} {r['fraction_of_matmul']:9.0%}")
    return result


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastbp.bench.kernels")
    p.add_argument("--workloads", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-seconds", type=float, default=0.5)
    args = p.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    print(json.dumps(measure(names, args.dtype, args.threads, args.min_seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
