"""One benchmark measurement in a fresh process; prints one JSON line.

    python -m fastbp.bench.worker --engine numpy --workload mnist-b32 --threads 2 --epochs 3

runs a warm-up epoch and then ``--epochs`` timed epochs of one engine on one workload, and
prints ``{"ok": true, "samples_per_s": ..., "startup_s": ..., "peak_rss_mb": ..., ...}``.

The runner (:mod:`fastbp.bench.runner`) starts this file by its path, ``python .../worker.py``,
not with ``-m``: ``-m fastbp.bench.worker`` imports the ``fastbp`` package (and numba) first,
which would add fastbp's import time and memory to every peer's startup and peak RSS and would
let numba read its thread count before ``--threads`` is applied. Run as a file, the worker loads
its sibling modules (workloads, engines: NumPy only) as a private package, and only the fastbp
engine imports fastbp. The thread-count variables are set here before any numerical library is
imported.

Times: ``startup_s`` runs from ``--t0`` (the parent's ``time.time()`` just before it started
this process; without it, the process's start time from /proc, or this module's first line) to
the end of the warm-up epoch, less the time spent generating the random data (``data_s``, the
same for every engine): interpreter start, imports, model construction, compilation (or loading
it from a cache) and the first epoch. ``startup_wall_s`` includes the data. ``samples_per_s``
is ``n_samples`` over the median of the timed epochs. ``peak_rss_mb`` is the process's peak
resident set size, data included (``VmHWM`` of /proc/self/status; ``ru_maxrss`` where there
is no /proc: on Linux that one also carries the peak of the process that started this one).
"""
import time

_T_MODULE = time.time()  # the earliest moment this process can take a timestamp

import argparse  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

# The thread-count variables the numerical libraries read when they are imported.
THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS")
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

_PRIVATE_PACKAGE = "_fastbp_bench_standalone"
_FASTBP_PREIMPORTED = "fastbp" in sys.modules  # true under -m: see the module docstring


def set_thread_environment(environ, engine, threads):
    """Set the variables that fix ``threads`` for ``engine`` in the mapping ``environ``."""
    for var in THREAD_VARIABLES:
        environ[var] = str(threads)
    if engine.startswith("jax"):
        environ.setdefault("JAX_PLATFORMS", "cpu")
        if threads == 1:  # XLA's CPU backend has no flag for N > 1 threads: it uses every core
            flags = environ.get("XLA_FLAGS", "")
            if XLA_ONE_THREAD not in flags:
                environ["XLA_FLAGS"] = f"{flags} {XLA_ONE_THREAD}".strip()


def _bench_modules():
    """``(workloads, engines)``: relative imports when this is part of the imported package;
    run as a file, the siblings are loaded as a private package that does not import fastbp."""
    if __package__:
        from . import engines, workloads
        return workloads, engines
    here = os.path.dirname(os.path.abspath(__file__))
    # sys.path[0] is this folder when run as a file; use the folder holding this copy of the
    # fastbp package instead, so that the fastbp engine measures the same fastbp as the runner.
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        sys.path[0] = os.path.dirname(os.path.dirname(here))
    if _PRIVATE_PACKAGE not in sys.modules:
        pkg = types.ModuleType(_PRIVATE_PACKAGE)
        pkg.__path__ = [here]
        sys.modules[_PRIVATE_PACKAGE] = pkg
    return (importlib.import_module(f"{_PRIVATE_PACKAGE}.workloads"),
            importlib.import_module(f"{_PRIVATE_PACKAGE}.engines"))


def peak_rss_mb():
    """Peak resident set size of this process in MiB: ``VmHWM`` from /proc/self/status (kB).

    Linux's ``ru_maxrss`` survives ``exec``: a process reports at least the peak of the one that
    started it (seen here: every worker of a benchmark run at 910 MB, PyTorch's and fastbp's
    alike), so it is only the fallback (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def process_start_time():
    """When this process started, as time.time() (Linux: its age from /proc, 10 ms
    resolution), or None where that is not known."""
    try:
        with open("/proc/self/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - started)
    except (OSError, IndexError, ValueError):
        return None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m fastbp.bench.worker",
                                description="Time one engine on one workload in this process "
                                            "and print the result as one JSON line.")
    p.add_argument("--engine", required=True)
    p.add_argument("--workload", required=True)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--t0", type=float, default=None,
                   help="time.time() of the parent just before it started this process")
    p.add_argument("--pin", action="store_true",
                   help="restrict the process to its first THREADS allowed CPUs")
    p.add_argument("--weights-out", default=None,
                   help="save the trained weights here (.npz: W0, b0, W1, b1, ...)")
    args = p.parse_args(argv)
    if args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.epochs < 1:
        p.error(f"--epochs must be >= 1, got {args.epochs}")
    return args


def run(args, t0):
    """Measure; returns the result dict. ``t0``: the process's start as time.time()."""
    set_thread_environment(os.environ, args.engine, args.threads)
    if args.pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))[:args.threads]
        os.sched_setaffinity(0, cpus)
    workloads, engines = _bench_modules()   # imports NumPy
    workload = workloads.get_workload(args.workload)
    if not engines.available(args.engine):
        raise SystemExit(f"engine {args.engine!r} is not installed")

    t = time.time()
    data = workloads.make_data(workload, args.dtype, args.seed)
    data_s = time.time() - t

    t = time.time()
    epoch = engines.make_epoch(args.engine, workload, args.dtype, args.seed, data=data,
                               threads=args.threads)
    del data  # engines that copied the data to their own memory do not keep NumPy's
    setup_s = time.time() - t

    t = time.time()
    epoch()
    t_first = time.time()
    warmup_epoch_s = t_first - t

    epoch_s = []
    for _ in range(args.epochs):
        t = time.perf_counter()
        epoch()
        epoch_s.append(time.perf_counter() - t)

    if args.weights_out:
        import numpy as np
        arrays = {}
        for l, (W, b) in enumerate(epoch.get_weights()):
            arrays[f"W{l}"], arrays[f"b{l}"] = W, b
        np.savez(args.weights_out, **arrays)

    median = statistics.median(epoch_s)
    return {
        "ok": True,
        "engine": args.engine,
        "workload": workload.name,
        "layers": list(workload.layers),
        "batch": workload.batch,
        "n_samples": workload.n_samples,
        "dtype": args.dtype,
        "threads": args.threads,
        "pinned": bool(args.pin),
        "epoch_s": epoch_s,
        "samples_per_s": workload.n_samples / median if median > 0 else None,
        "startup_s": t_first - t0 - data_s,
        "startup_wall_s": t_first - t0,
        "data_s": data_s,
        "setup_s": setup_s,
        "warmup_epoch_s": warmup_epoch_s,
        "peak_rss_mb": peak_rss_mb(),
        "fastbp_preimported": _FASTBP_PREIMPORTED,
        "versions": engines.versions(args.engine),
    }


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    t0 = args.t0
    if t0 is None:
        t0 = process_start_time() or _T_MODULE
    print(json.dumps(run(args, t0)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
