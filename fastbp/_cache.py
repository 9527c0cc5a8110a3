"""Keeping numba's on-disk cache of fastbp's kernels consistent.

Numba (0.68 and earlier) can write a cache entry that crashes the *next* process that loads it:
when a function that calls a parallel (``prange``) kernel is compiled in a process where that
kernel itself was loaded from the cache, the entry it saves does not carry the kernel's parallel
part (numba issue #8578: "Segfault when calling nested parallel function with caching"). Entries
compiled in one process together with their parallel kernels are sound.

So fastbp treats its cache as one set, built in one process:

* On first use in a process (``ensure()``), if the marker ``fastbp-complete-<digest>`` is missing
  from the cache folder, this process takes a file lock, deletes fastbp's cache files, compiles
  every entry point the Python API uses, for both dtypes (``fastbp.warmup``), and writes the
  marker. Everything in the cache then comes from that one process.
* A process that later compiles, while running from that cache, a fastbp function that calls
  a parallel kernel (a signature the warm-up did not cover, e.g. a driver called by hand with
  other argument types) removes the marker at once, so the next process rebuilds the set
  instead of trusting it. Kernels that call no parallel kernel are safe to compile anywhere.

``FASTBP_CACHE=0`` turns caching (and all of this) off.
"""
import contextlib
import glob
import os
import sys
import threading
import types

from numba.core import event

from . import _config

_lock = threading.Lock()
_state = {"checked": False, "building": False, "fresh": False, "marker": None}


def _cache_dirs():
    dirs = []
    for d in _config.DISPATCHERS:
        path = d.stats.cache_path
        if path and path not in dirs:
            dirs.append(path)
    return dirs


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


def _callees(dispatcher):
    """The fastbp kernels a kernel's code names: globals, and attributes of global modules."""
    func = dispatcher.py_func
    names = func.__code__.co_names
    found = []
    for name in names:
        value = func.__globals__.get(name)
        candidates = [value]
        if isinstance(value, types.ModuleType):
            candidates = [getattr(value, n, None) for n in names]
        found.extend(c for c in candidates
                     if any(c is d for d in _config.DISPATCHERS) and c is not dispatcher)
    return found


def calls_parallel(dispatcher, _seen=None):
    """Whether a fastbp kernel calls a parallel (``prange``) kernel, directly or not."""
    seen = set() if _seen is None else _seen
    if id(dispatcher) in seen:
        return False
    seen.add(id(dispatcher))
    return any(c.targetoptions.get("parallel") or calls_parallel(c, seen)
               for c in _callees(dispatcher))


def _on_compile(event):
    """A fastbp kernel is being compiled (not loaded): if it calls a parallel kernel and this
    process did not build the cache itself, the entry it writes may be unsound, so the set is
    no longer trusted."""
    if _state["fresh"] or _state["building"] or _state["marker"] is None:
        return
    dispatcher = event.data.get("dispatcher")
    if any(dispatcher is d for d in _config.DISPATCHERS) and calls_parallel(dispatcher):
        with contextlib.suppress(OSError):
            os.remove(_state["marker"])


def ensure():
    """Make sure the kernels this process loads from disk come from one consistent build
    (see the module's docstring). Cheap after the first call."""
    if _state["checked"] or not _config.CACHE:
        return
    with _lock:
        if _state["checked"] or _state["building"]:
            return
        dirs = _cache_dirs()
        if not dirs:  # numba found no writable place: it does not cache
            _state["checked"] = True
            return
        marker = os.path.join(dirs[0], f"fastbp-complete-{_config.SOURCE_DIGEST}")
        _state["building"] = True
        try:
            with _file_lock(os.path.join(dirs[0], "fastbp-cache.lock")):
                if not os.path.exists(marker):
                    _rebuild(dirs, marker)
        finally:
            _state["building"] = False
        _state["marker"] = marker
        _state["checked"] = True
        event.register("numba:compile", _CompileListener())


class _CompileListener(event.Listener):
    def on_start(self, ev):
        _on_compile(ev)

    def on_end(self, ev):
        pass


def _rebuild(dirs, marker):
    """Delete fastbp's cache files, compile everything here, then write the marker. Runs
    before this process has loaded any fastbp kernel (``ensure`` runs at import)."""
    from ._warmup import warmup_all
    for folder in dirs:
        for pattern in ("*.nbi", "*.nbc", "fastbp-complete-*"):
            for path in glob.glob(os.path.join(folder, pattern)):
                with contextlib.suppress(OSError):
                    os.remove(path)
    print("fastbp: compiling the kernels for first use (a few minutes; they are cached "
          "afterwards)", file=sys.stderr, flush=True)
    _state["fresh"] = True
    warmup_all()
    with open(marker, "w") as fh:
        fh.write("fastbp kernels compiled together in one process\n")
