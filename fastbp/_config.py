"""Numba options for every fastbp kernel, in one place.

* ``FASTMATH``: the LLVM fast-math flags fastbp compiles with. It allows reassociation (so the
  dot products and reductions vectorize) and contraction into FMA, but *not* ``nnan``/``ninf``:
  the compiler may not assume that values are finite, so NaN and infinity checks keep working.
* ``CACHE``: compiled kernels are cached on disk (numba's ``cache=True``). Numba writes next to
  the module's ``__pycache__`` and falls back to a per-user cache directory when the package
  directory is read-only. ``FASTBP_CACHE=0`` in the environment turns caching off;
  ``NUMBA_CACHE_DIR`` chooses another directory (numba's own variable).
* ``SOURCE_DIGEST``: numba checks a cached function against its own source file only, but a
  fastbp kernel inlines the kernels it calls from other files, so an edited (or upgraded)
  ``fused.py`` would leave ``network.py``'s cached driver running the old code. Every cached
  kernel's name therefore carries a digest of all of fastbp's sources: any change compiles
  everything afresh.
"""
import hashlib
import os
import types

from numba import njit

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

CACHE = os.environ.get("FASTBP_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def _sources_digest():
    root = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as fh:
                    digest.update(name.encode() + b"\0" + fh.read())
    return digest.hexdigest()[:12]


SOURCE_DIGEST = _sources_digest() if CACHE else ""

DISPATCHERS = []  # every fastbp kernel, for fastbp._cache


def jit(parallel=False):
    """The decorator for a fastbp kernel: ``@jit()`` serial, ``@jit(parallel=True)`` threaded.

    ``nogil=True`` so that kernels release the GIL and models can train in several Python threads.
    With caching on, the function's ``__qualname__`` (which names its cache files) gets the
    suffix ``__<SOURCE_DIGEST>``.
    """
    def decorate(pyfunc):
        if CACHE:
            pyfunc.__qualname__ = f"{pyfunc.__qualname__}__{SOURCE_DIGEST}"
        dispatcher = njit(parallel=parallel, fastmath=set(FASTMATH), cache=CACHE, nogil=True,
                          error_model="numpy")(pyfunc)
        DISPATCHERS.append(dispatcher)
        return dispatcher
    return decorate


def jit_pair(pyfunc):
    """Compile one Python kernel body twice: serial and parallel (``prange`` runs as ``range``
    in the serial one). Returns ``(serial, parallel)``; the orchestration code picks the serial
    one where the work is too small to pay for waking the thread pool.

    The serial twin is a copy of the function under another ``__qualname__`` (``name_serial``):
    numba's on-disk cache keys entries by qualified name and signature, not by the ``parallel``
    option, so two dispatchers of one function object would overwrite each other's cache.
    """
    twin = types.FunctionType(pyfunc.__code__, pyfunc.__globals__, pyfunc.__name__ + "_serial",
                              pyfunc.__defaults__, pyfunc.__closure__)
    twin.__qualname__ = pyfunc.__qualname__ + "_serial"
    twin.__module__ = pyfunc.__module__
    twin.__doc__ = pyfunc.__doc__
    return jit(parallel=False)(twin), jit(parallel=True)(pyfunc)
