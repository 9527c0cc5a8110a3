"""``python -m fastbp bench``: fastbp against NumPy, PyTorch and JAX, each in a fresh process.

For every round, workload and engine the runner starts one worker process
(:mod:`fastbp.bench.worker`), which trains a warm-up epoch and ``--epochs`` timed ones. Engines
are interleaved: each round runs every engine once per workload, so a slow spell of the machine
hits all engines alike; the order rotates from round to round (round 1: fastbp, numpy, torch,
...; round 2: numpy, torch, ..., fastbp) so that no engine always runs first. The table gives
per engine the median over rounds of samples/s, startup time and peak RSS, and fastbp's ratio
to it; the summary line per workload compares fastbp with the fastest peer.

The peers' processes get the environment without ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
(settings tuned for fastbp's machine that must not steer the peers' BLAS); fastbp's keeps it.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from .engines import ENGINES, available
from .workloads import DEFAULT_WORKLOADS, WORKLOADS

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
PEER_UNSET = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def worker_env(engine, threads, base=None):
    """The environment of ``engine``'s worker: ``base`` (os.environ), less PEER_UNSET for peers,
    with the thread-count variables for ``threads``."""
    from .worker import set_thread_environment  # not at import: see worker's -m entry point
    env = dict(os.environ if base is None else base)
    if engine != "fastbp":
        for var in PEER_UNSET:
            env.pop(var, None)
    set_thread_environment(env, engine, threads)
    return env


def _tail(text, n=800):
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def run_worker(engine, workload, dtype="float32", threads=1, epochs=3, seed=0, timeout=600.0,
               pin=False, python=None):
    """Run one worker process; returns its result dict, or ``{"ok": False, "error": ...}``."""
    cmd = [python or sys.executable, WORKER, "--engine", engine, "--workload", workload,
           "--dtype", dtype, "--threads", str(threads), "--epochs", str(epochs),
           "--seed", str(seed)]
    if pin:
        cmd.append("--pin")
    env = worker_env(engine, threads)
    failed = {"ok": False, "engine": engine, "workload": workload}
    t0 = time.time()
    try:
        proc = subprocess.run(cmd + ["--t0", repr(t0)], env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(failed, error=f"timed out after {timeout:g} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        why = _tail(proc.stderr) or _tail(proc.stdout) or "no output"
        return dict(failed, error=f"exit status {proc.returncode}: {why}")
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        return dict(failed, error=f"unreadable worker output ({exc}): {_tail(lines[-1])}")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs, workloads, engines):
    """Per (workload, engine): medians over the successful runs and fastbp's ratios; per
    workload: fastbp against its fastest peer."""
    rows = []
    for w in workloads:
        group = {e: [r for r in runs if r["workload"] == w and r["engine"] == e]
                 for e in engines}
        stats = {}
        for e in engines:
            ok = [r for r in group[e] if r.get("ok")]
            sps = [r["samples_per_s"] for r in ok if r.get("samples_per_s")]
            stats[e] = {
                "workload": w,
                "engine": e,
                "runs": len(group[e]),
                "ok_runs": len(ok),
                "samples_per_s": _median(sps),
                "samples_per_s_runs": sps,
                "startup_s": _median([r.get("startup_s") for r in ok]),
                "peak_rss_mb": _median([r.get("peak_rss_mb") for r in ok]),
                "errors": [r["error"] for r in group[e] if not r.get("ok")],
                "versions": ok[-1].get("versions", {}) if ok else {},
            }
        fb = stats.get("fastbp", {})
        for e in engines:
            s = stats[e]
            s["fastbp_ratio"] = _ratio(fb.get("samples_per_s"), s["samples_per_s"])
            s["fastbp_rss_ratio"] = _ratio(fb.get("peak_rss_mb"), s["peak_rss_mb"])
            s["fastbp_startup_ratio"] = _ratio(fb.get("startup_s"), s["startup_s"])
            rows.append(s)
    summary = {}
    for w in workloads:
        peers = [s for s in rows if s["workload"] == w and s["engine"] != "fastbp"
                 and s["samples_per_s"]]
        fb = next((s for s in rows if s["workload"] == w and s["engine"] == "fastbp"), None)
        best = max(peers, key=lambda s: s["samples_per_s"]) if peers else None
        summary[w] = {
            "fastbp_samples_per_s": fb["samples_per_s"] if fb else None,
            "best_peer": best["engine"] if best else None,
            "best_peer_samples_per_s": best["samples_per_s"] if best else None,
            "fastbp_over_best_peer": best["fastbp_ratio"] if best else None,
        }
    return rows, summary


def _ratio(a, b):
    return a / b if a is not None and b else None


def _fmt(value, spec, missing="-"):
    return missing if value is None else format(value, spec)


def format_table(rows, summary):
    head = ("workload", "engine", "samples/s", "spread", "startup s", "peak RSS MB",
            "fastbp/engine", "RSS fastbp/engine")
    lines = []
    for s in rows:
        if s["samples_per_s"] is None:
            reason = s["errors"][0].splitlines()[0][:60] if s["errors"] else "no result"
            lines.append((s["workload"], s["engine"], f"FAILED: {reason}", "", "", "", "", ""))
            continue
        runs = s["samples_per_s_runs"]
        spread = (max(runs) - min(runs)) / s["samples_per_s"] if len(runs) > 1 else None
        note = "" if s["ok_runs"] == s["runs"] else f" ({s['runs'] - s['ok_runs']} failed)"
        lines.append((s["workload"], s["engine"] + note, f"{s['samples_per_s']:,.0f}",
                      _fmt(spread, ".0%"), _fmt(s["startup_s"], ".2f"),
                      _fmt(s["peak_rss_mb"], ".0f"), _fmt(s["fastbp_ratio"], ".2f"),
                      _fmt(s["fastbp_rss_ratio"], ".2f")))
    widths = [max(len(str(r[k])) for r in [head] + lines) for k in range(len(head))]
    left = 2  # workload and engine left-aligned, numbers right-aligned

    def fmt_line(r):
        cells = [str(c).ljust(w) if k < left or str(c).startswith("FAILED") else str(c).rjust(w)
                 for k, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(cells).rstrip()

    out = [fmt_line(head), fmt_line(["-" * w for w in widths])]
    previous = None
    for r in lines:
        if previous is not None and r[0] != previous:
            out.append("")
        out.append(fmt_line(r))
        previous = r[0]
    out.append("")
    for w, s in summary.items():
        if s["fastbp_over_best_peer"] is None:
            out.append(f"{w}: fastbp / best peer = n/a")
        else:
            out.append(f"{w}: fastbp / best peer = {s['fastbp_over_best_peer']:.2f} "
                       f"(best peer: {s['best_peer']}, "
                       f"{s['best_peer_samples_per_s']:,.0f} samples/s)")
    return "\n".join(out)


def _csv(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def add_arguments(p):
    """Add ``fastbp bench``'s options to parser ``p`` (also used by ``fastbp --help`` and the
    docs' CLI reference)."""
    p.description = ("Training throughput of fastbp against NumPy, PyTorch and JAX on the seed "
                    "network (sigmoid, 1/2||a-y||^2, plain SGD, no shuffling, fixed random data). "
                    "Every engine runs in a fresh process per measurement: a warm-up epoch, "
                    "then timed epochs. Reports median samples/s over the rounds, startup time "
                    "(process start to the end of the first epoch, data generation excluded), "
                    "peak RSS, and fastbp's ratio to each engine.")
    p.epilog = "workloads: " + "; ".join(
        f"{w.name} ({'-'.join(map(str, w.layers))}, batch {w.batch}, {w.n_samples} samples)"
        for w in WORKLOADS.values())
    p.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS),
                   help="comma-separated workload names (default: %(default)s)")
    p.add_argument("--engines", default=None,
                   help=f"comma-separated, from {','.join(ENGINES)} (default: every installed "
                        "one)")
    p.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    p.add_argument("--threads", type=int, default=2,
                   help="threads per engine (numba, BLAS, PyTorch; XLA: 1 or all cores) "
                        "(default: %(default)s)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs per process after the warm-up (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds before a worker is killed (default: %(default)s)")
    p.add_argument("--pin", action="store_true",
                   help="pin each worker to its first THREADS CPUs (sched_setaffinity)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="write the results as JSON to PATH; without PATH print JSON instead "
                        "of the table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--list", action="store_true", help="list workloads and engines, then exit")
    p.add_argument("--kernels", action="store_true",
                   help="instead of training: GFLOP/s of each dense-layer kernel (forward, "
                        "delta, grad+step) at the workloads' layer shapes, next to NumPy's "
                        "2048x2048 matmul measured in the same run")
    return p


def usable_cpus():
    """The CPUs this process may run on (its affinity where the system has one), or None."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parse_args(argv, prog="fastbp bench"):
    p = add_arguments(argparse.ArgumentParser(prog=prog))
    args = p.parse_args(argv)
    for name in ("rounds", "threads", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    cpus = usable_cpus()
    if cpus and args.threads > cpus:
        # more threads than cores time the operating system's scheduler, not the engines
        p.error(f"--threads must be at most {cpus}, the CPUs this process may run on, got "
                f"{args.threads}")
    if not 0 < args.timeout < float("inf"):  # (nan too)
        p.error(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    if args.seed < 0:
        p.error(f"--seed must be >= 0, got {args.seed}")
    args.workloads = _csv(args.workloads)
    unknown = [w for w in args.workloads if w not in WORKLOADS]
    if unknown or not args.workloads:
        p.error(f"unknown workload(s) {', '.join(unknown) or '(none given)'}; known: "
                f"{', '.join(WORKLOADS)}")
    if args.engines is None:
        args.engines = list(ENGINES)
        args.explicit_engines = False
    else:
        args.engines = _csv(args.engines)
        args.explicit_engines = True
        unknown = [e for e in args.engines if e not in ENGINES]
        if unknown or not args.engines:
            p.error(f"unknown engine(s) {', '.join(unknown) or '(none given)'}; known: "
                    f"{', '.join(ENGINES)}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for w in WORKLOADS.values():
            print(f"{w.name:12s} {'-'.join(map(str, w.layers)):14s} batch {w.batch:4d}  "
                  f"{w.n_samples:6d} samples  lr {w.lr:g}  {w.description}")
        print()
        for e in ENGINES:
            print(f"{e:12s} {'installed' if available(e) else 'not installed'}")
        return 0

    if args.kernels:
        from . import kernels
        env = {k: v for k, v in os.environ.items() if k not in PEER_UNSET}
        kernels.report(args.workloads, args.dtype, args.threads, env, args.json)
        return 0
    engines = [e for e in args.engines if available(e)]
    skipped = [e for e in args.engines if e not in engines]
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr,
                                                                    flush=True))
    if skipped:
        log(f"not installed, skipped: {', '.join(skipped)}")
    if not engines:
        print("no engine to run", file=sys.stderr)
        return 1

    cpus = usable_cpus()
    if (any(e.startswith("jax") for e in engines) and 1 < args.threads < (cpus or 0)
            and not args.pin):
        log(f"note: XLA has no thread-count setting between 1 and all cores; JAX will use all "
            f"{cpus} CPUs while the other engines use {args.threads} (--pin makes it fair)")

    runs = []
    for r in range(args.rounds):
        order = engines[r % len(engines):] + engines[:r % len(engines)]
        for w in args.workloads:
            for e in order:
                t = time.time()
                res = run_worker(e, w, dtype=args.dtype, threads=args.threads,
                                 epochs=args.epochs, seed=args.seed, timeout=args.timeout,
                                 pin=args.pin)
                res["round"] = r + 1
                runs.append(res)
                status = (f"{res['samples_per_s']:,.0f} samples/s" if res.get("ok")
                          else "FAILED: " + res["error"].splitlines()[0][:100])
                log(f"round {r + 1}/{args.rounds}  {w:12s} {e:9s} {status}  "
                    f"({time.time() - t:.1f} s)")

    rows, summary = summarize(runs, args.workloads, engines)
    report = {
        "config": {
            "workloads": {w: {"layers": list(WORKLOADS[w].layers), "batch": WORKLOADS[w].batch,
                              "lr": WORKLOADS[w].lr, "n_samples": WORKLOADS[w].n_samples}
                          for w in args.workloads},
            "engines": engines,
            "skipped_engines": skipped,
            "rounds": args.rounds,
            "threads": args.threads,
            "dtype": args.dtype,
            "epochs": args.epochs,
            "seed": args.seed,
            "pin": args.pin,
            "timeout_s": args.timeout,
            "python": sys.executable,
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "results": rows,
        "summary": summary,
        "runs": runs,
    }
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=2)
        print(format_table(rows, summary))
    failed = any(not r.get("ok") for r in runs) or (args.explicit_engines and skipped)
    return 1 if failed else 0
