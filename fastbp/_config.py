"""Numba options for every fastbp kernel, in one place.

* ``FASTMATH``: the LLVM fast-math flags fastbp compiles with. It allows reassociation (so the
  dot products and reductions vectorize) and contraction into FMA, but *not* ``nnan``/``ninf``:
  the compiler may not assume that values are finite, so NaN and infinity checks keep working.
* ``CACHE``: compiled kernels are cached on disk (numba's ``cache=True``). Numba writes next to
  the module's ``__pycache__`` and falls back to a per-user cache directory when the package
  directory is read-only. ``FASTBP_CACHE=0`` in the environment turns caching off;
  ``NUMBA_CACHE_DIR`` chooses another directory (numba's own variable).
"""
import os
import types

from numba import njit

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})

CACHE = os.environ.get("FASTBP_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def jit(parallel=False):
    """The decorator for a fastbp kernel: ``@jit()`` serial, ``@jit(parallel=True)`` threaded.

    ``nogil=True`` so that kernels release the GIL and models can train in several Python threads.
    """
    return njit(parallel=parallel, fastmath=set(FASTMATH), cache=CACHE, nogil=True,
                error_model="numpy")


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
