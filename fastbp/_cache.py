"""fastbp's on-disk cache of compiled kernels: compiled on first use, one kernel set at a time.

Nothing is compiled at ``import fastbp``. Each training or inference path of the Python API is
a *kernel set* (``PATHS``: per-sample SGD, mini-batch SGD, the deferred mini-batch region for
shuffled batches and for in-order ones, the other optimizers' segments, Hogwild, inference,
gradients, the optimizers' ``step``), per dtype. The first call on a set that is not in the
cache compiles that set, and only that set, then every later process loads it from disk in
milliseconds.

Why a set is compiled in a child process. Numba (0.68 and earlier) can write a cache entry that
crashes the *next* process that loads it: when a function that calls a parallel (``prange``)
kernel is compiled in a process where that kernel was *loaded* from the cache, the entry it
saves lacks the kernel's parallel part (numba issue #8578). So:

* ``require(path, dtype)`` (called by the API before it runs a set's kernels) checks the set's
  marker file; if it is missing, it takes a file lock and runs ``python -m fastbp._build PATH
  DTYPE``: a fresh process that compiles the set with every parallel kernel, and every kernel
  that calls one, compiled there and then (never loaded), saves it and writes the marker. The
  calling process then loads the set from disk like any later one. (Every process runs the
  same machine code for a kernel whether it compiled or loaded it: each kernel carries its own
  copies of its callees, ``_config``'s "own copies".) Three processes starting together wait on the lock; a build killed
  half-way leaves no marker (numba replaces its files atomically), so the next process builds
  again.
* A process that is not a builder never *saves* a kernel that calls a parallel kernel (it
  compiles such a kernel only for a signature outside the sets, e.g. a driver called from the
  user's own ``@njit`` code, and keeps it in memory). Every such entry on disk therefore comes
  from a builder. Kernels that call no parallel kernel are cached wherever they compile.
* A marker lists the kernels its build compiled and saved (not those compiled only for another
  kernel to link, which are never saved: ``_config``'s "deferred kernels"), by their names,
  which carry the digest of the sources they can inline (``_config.module_digest``): an edit
  recompiles the sets that use the edited code and no others. A process that finds one of
  those kernels missing from the cache (it compiles it) removes the marker, and the next
  process builds the set again.
* A set a child could not build (no ``python`` to start, a build that crashed or was killed)
  is compiled in the calling process instead, with one warning, and not cached.

``FASTBP_CACHE=0`` turns caching off (each process compiles what it uses, in process);
``fastbp.warmup()`` builds sets ahead of time.
"""
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import types

import numba
import numpy as np
from numba.core import event

from . import _config

# Set by ``require`` in the environment of its child: this process is a builder.
BUILDER_ENV = "_FASTBP_BUILDER"

# Each set: what it covers (for the first-use message) and about how long it compiles (seconds
# on one core of a 2-core Xeon (AVX-512), float32; docs/performance.md has the table).
PATHS = {
    "sgd-per-sample": ("per-sample SGD (fit with batch_size=1)", 5),
    "sgd-batches": ("mini-batch SGD", 12),
    "sgd-deferred": ("mini-batch SGD with the deferred first-layer step", 11),
    "sgd-deferred-slices": ("mini-batch SGD with the deferred first-layer step, unshuffled", 10),
    "train-segment": ("training with momentum, Adam or sample weights", 14),
    "sgd-hogwild": ("Hogwild per-sample SGD", 7),
    "predict": ("inference (forward, predict, loss, validation)", 8),
    "gradients": ("gradients", 12),
    "optimizer-step": ("optimizer steps", 2),
    "data-parallel": ("data-parallel training (fit with comm=...)", 13),
}

_lock = threading.Lock()
_state = {"builder": os.environ.get(BUILDER_ENV) == "1", "ready": set(), "installed": False,
          "current": None, "kernels": {}, "fallback_warned": False}


def _callees(dispatcher):
    """The fastbp kernels a kernel's code names: globals, and attributes of global modules."""
    func = dispatcher.py_func
    names = func.__code__.co_names
    kernels = {id(d) for d in _config.DISPATCHERS}
    found = []
    for name in names:
        value = func.__globals__.get(name)
        candidates = [value]
        if isinstance(value, types.ModuleType):
            candidates = [getattr(value, n, None) for n in names]
        found.extend(c for c in candidates if id(c) in kernels and c is not dispatcher)
    return found


def calls_parallel(dispatcher, _seen=None):
    """Whether a fastbp kernel calls a parallel (``prange``) kernel, directly or not."""
    seen = set() if _seen is None else _seen
    if id(dispatcher) in seen:
        return False
    seen.add(id(dispatcher))
    return any(c.targetoptions.get("parallel") or calls_parallel(c, seen)
               for c in _callees(dispatcher))


def _parallel_or_calls_parallel(dispatcher):
    return bool(dispatcher.targetoptions.get("parallel")) or calls_parallel(dispatcher)


def install():
    """Wrap every fastbp kernel's cache (after all kernel modules are imported): a builder
    compiles the parallel kernels and their callers afresh; any other process does not save the
    callers it compiles itself. Called once by ``fastbp/__init__``."""
    if _state["installed"] or not _config.CACHE:
        return
    _state["installed"] = True
    for d in _config.DISPATCHERS:
        cache = d._cache
        if not hasattr(cache, "save_overload") or type(cache).__name__ == "NullCache":
            continue
        risky = calls_parallel(d)
        fresh = risky or bool(d.targetoptions.get("parallel"))
        if _state["builder"] and fresh:
            cache.load_overload = lambda sig, ctx: None
        elif not _state["builder"] and risky:
            cache.save_overload = lambda sig, data: None
    if not _state["builder"]:
        event.register("numba:compile", _StrayListener())


class _StrayListener(event.Listener):
    """A kernel of the current set (one its builder compiled) compiled again in a process that
    is not a builder: its entry is missing from the cache (a lost index update, a deleted file),
    so the set on disk is incomplete. Compiled here and not saved; the marker goes, so that the
    next process builds the set again. Other kernels compiled here (a driver called from the
    user's own ``@njit`` code, say) leave the sets alone."""

    def on_start(self, ev):
        current = _state["current"]
        d = ev.data.get("dispatcher")
        if current is None or not any(d is k for k in _config.DISPATCHERS):
            return
        if d.py_func.__qualname__ in _state["kernels"].get(current, ()):
            with contextlib.suppress(OSError):
                os.remove(_marker(*current))

    def on_end(self, ev):
        pass


def _cache_dir():
    for d in _config.DISPATCHERS:
        path = getattr(d._cache, "cache_path", None)
        if path:
            return path
    return None


def _target_tag():
    """The marker's tag for what numba's cache index is keyed by: the CPU target (name and
    features), numba's and Python's versions."""
    import hashlib
    from numba.core.registry import cpu_target
    magic = cpu_target.target_context.codegen().magic_tuple()
    text = repr((magic, numba.__version__, sys.version_info[:2]))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _marker(path, dtype):
    return os.path.join(_cache_dir(), f"fastbp-set-{path}-{dtype}-{_target_tag()}.json")


def _marker_kernels(marker):
    """The kernels a set's marker lists, or None where the marker is missing, unreadable or
    names a kernel that no longer exists (its source changed)."""
    try:
        with open(marker) as fh:
            names = json.load(fh)["kernels"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    current = {d.py_func.__qualname__ for d in _config.DISPATCHERS}
    return set(names) if set(names) <= current else None


@contextlib.contextmanager
def _file_lock(path):
    try:
        import fcntl
    except ImportError:  # not POSIX: no inter-process lock
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def compiled_sets():
    """The kernel sets in the cache for this CPU target and numba, as ``'path/dtype'`` (for
    ``show_config``); the others compile on first use."""
    return [f"{path}/{dtype}" for dtype in ("float32", "float64") for path in PATHS
            if _cache_dir() is not None and _marker_kernels(_marker(path, dtype)) is not None]


def _dtype_name(dtype):
    return np.dtype(dtype).name


def require(path, dtype):
    """Make sure kernel set ``path`` for ``dtype`` is in the on-disk cache before the API runs
    it (see the module notes). Cheap after the first call for a set in a process."""
    if not _config.CACHE or _config.UNCACHED or _state["builder"]:
        return
    key = (path, _dtype_name(dtype))
    if key in _state["ready"]:
        _state["current"] = key
        return
    with _lock:
        if key not in _state["ready"]:
            folder = _cache_dir()
            if folder is not None:
                marker = _marker(*key)
                kernels = _marker_kernels(marker)
                if kernels is None:
                    os.makedirs(folder, exist_ok=True)
                    with _file_lock(marker[:-len(".json")] + ".lock"):
                        kernels = _marker_kernels(marker)
                        if kernels is None:
                            _build_in_child(key, marker)
                            kernels = _marker_kernels(marker)
                _state["kernels"][key] = kernels or set()
            _state["ready"].add(key)
        _state["current"] = key


def _build_in_child(key, marker):
    path, dtype = key
    what, seconds = PATHS[path]
    print(f"fastbp: compiling the {dtype} kernels for {what} on first use (about {seconds} s; "
          f"cached for later runs)", file=sys.stderr, flush=True)
    env = dict(os.environ)
    env[BUILDER_ENV] = "1"
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    if numba.config.CACHE_DIR:
        env["NUMBA_CACHE_DIR"] = numba.config.CACHE_DIR
    try:
        proc = subprocess.run([sys.executable, "-m", "fastbp._build", path, dtype], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=3600)
        failure = None if proc.returncode == 0 and _marker_kernels(marker) is not None else \
            f"exit code {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    except (OSError, subprocess.SubprocessError) as exc:
        failure = repr(exc)
    if failure is not None and not _state["fallback_warned"]:
        _state["fallback_warned"] = True
        import warnings
        warnings.warn(f"fastbp: building the {dtype} {path} kernels in a child process failed "
                      f"({failure}); compiling them in this process instead (not cached)",
                      RuntimeWarning, stacklevel=4)


def build(path, dtype):
    """In a builder process (``python -m fastbp._build``): compile set ``path`` for ``dtype``
    by running it on a tiny problem, then write its marker. Returns the seconds spent."""
    if path not in PATHS:
        raise ValueError(f"unknown kernel set {path!r}; expected one of {sorted(PATHS)}")
    dtype = _dtype_name(dtype)
    compiled = []

    class Recorder(event.Listener):
        def on_start(self, ev):
            d = ev.data.get("dispatcher")
            if any(d is k for k in _config.DISPATCHERS) and _parallel_or_calls_parallel(d):
                compiled.append(d.py_func.__qualname__)

        def on_end(self, ev):
            pass

    t0 = time.perf_counter()
    with event.install_listener("numba:compile", Recorder()):
        run_path(path, dtype)
    seconds = time.perf_counter() - t0
    # a kernel compiled only for other kernels to link is deferred and not saved (_config):
    # not listed, so that a later process that compiles it keeps the set
    compiled = [name for name in compiled if any(
        not _config.is_deferred(c) for c in _config._BY_NAME[name].overloads.values())]
    folder = _cache_dir()
    if _config.CACHE and folder is not None:
        marker = _marker(path, dtype)
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            json.dump({"path": path, "dtype": dtype, "seconds": round(seconds, 2),
                       "kernels": sorted(set(compiled))}, fh)
        os.replace(tmp, marker)
    return seconds


def run_path(path, dtype):
    """Run kernel set ``path`` once for ``dtype`` on a tiny problem, through the public API
    (so that exactly the signatures the API uses are compiled)."""
    from .model import MLP
    from .optim import SGD, Adam

    dt = np.dtype(dtype)
    X = np.linspace(-1, 1, 18, dtype=dt).reshape(6, 3)
    y = np.array([0, 1, 0, 1, 1, 0])
    net = MLP([3, 4, 2], loss="cross_entropy", dtype=dt, seed=0)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        if path == "sgd-per-sample":
            net.fit(X, y, epochs=1, batch_size=1, lr=0.1, hogwild=False)
        elif path == "sgd-batches":
            net.fit(X, y, epochs=1, batch_size=2, lr=0.1)
        elif path in ("sgd-deferred", "sgd-deferred-slices"):
            # a first layer big enough to be shared between threads (deterministic=True: by
            # work size, whatever the thread count), the rest not: the deferred region, for
            # shuffled batches (rows read through their indices) or in-order ones (slices)
            Xd = np.linspace(-1, 1, 64 * 64, dtype=dt).reshape(64, 64)
            yd = np.arange(64) % 10
            deep = MLP([64, 64, 10], dtype=dt, seed=0)
            deep.fit(Xd, yd, epochs=1, batch_size=32, lr=0.1,
                     shuffle=path == "sgd-deferred", deterministic=True)
        elif path == "train-segment":
            net.fit(X, y, epochs=1, batch_size=2, optimizer="adam", sample_weight=np.ones(6))
        elif path == "sgd-hogwild":
            net.fit(X, y, epochs=1, batch_size=1, lr=0.1, hogwild=True, deterministic=True)
        elif path == "predict":
            net.forward(X)
            net.loss(X, y)
        elif path == "gradients":
            net.gradients(X, y)
        elif path == "data-parallel":
            from .training import LocalComm
            deep = MLP([3, 4, 4, 2], loss="cross_entropy", dtype=dt, seed=0)  # every layer kind
            deep.fit(X, y, epochs=1, batch_size=2, optimizer="adam", sample_weight=np.ones(6),
                     comm=LocalComm())
        elif path == "optimizer-step":
            params = np.zeros(4, dtype=dt)
            for opt in (SGD(momentum=0.9), Adam()):
                opt.step(params, np.ones(4, dtype=dt))
