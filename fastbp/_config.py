"""Numba options for every fastbp kernel, in one place.

* ``FASTMATH``: the LLVM fast-math flags fastbp compiles with. It allows reassociation (so the
  dot products and reductions vectorize) and contraction into FMA, but *not* ``nnan``/``ninf``:
  the compiler may not assume that values are finite, so NaN and infinity checks keep working.
* ``CACHE``: compiled kernels are cached on disk (numba's ``cache=True``). Numba writes next to
  the module's ``__pycache__`` and falls back to a per-user cache directory when the package
  directory is read-only. ``FASTBP_CACHE=0`` in the environment turns caching off;
  ``NUMBA_CACHE_DIR`` chooses another directory (numba's own variable). Where neither folder
  is writable (a read-only install with a read-only home), numba refuses ``cache=True``
  outright; fastbp then compiles those kernels without a cache (each process compiles what it
  uses), warns once, and lists them in ``UNCACHED``.
* ``SOURCE_DIGEST``: numba checks a cached function against its own source file only, but a
  fastbp kernel inlines the kernels it calls from other files, so an edited (or upgraded)
  ``fused.py`` would leave ``network.py``'s cached driver running the old code. Every cached
  kernel's name therefore carries a digest of all of fastbp's sources: any change compiles
  everything afresh.
* ``jit(noalias=True)``: the layer kernels are compiled with numba's ``noalias`` flag, which marks
  every array argument's data as not overlapping any other argument's *written* data (C's
  ``restrict``). The compiler can then vectorize loops that store to several rows of one array
  while reading others, without run-time overlap checks. The contract is the one the checked
  wrappers (:mod:`fastbp.kernels.checked`) enforce: an output never shares memory with another
  argument. Numba gives its ``prange`` bodies the same flag by itself when they make no views.
"""
import hashlib
import os
import types
import warnings

from numba import njit
from numba.core import compiler

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
UNCACHED = []     # kernels numba found no writable cache folder for (compiled in each process)

NO_CACHE_FOLDER = (
    "fastbp: numba found no writable folder for its compile cache (neither next to fastbp's "
    "modules nor numba's per-user cache folder), so fastbp's kernels are compiled in every "
    "process that uses them. Set NUMBA_CACHE_DIR to a writable folder to cache them, or "
    "FASTBP_CACHE=0 to turn caching off without this warning.")


class _NoAliasCompiler(compiler.CompilerBase):
    """Numba's standard nopython pipeline with the ``noalias`` flag set (see the module notes)."""

    def define_pipelines(self):
        self.state.flags.noalias = True
        return [compiler.DefaultPassBuilder.define_nopython_pipeline(self.state)]


def jit(parallel=False, noalias=False):
    """The decorator for a fastbp kernel: ``@jit()`` serial, ``@jit(parallel=True)`` threaded;
    ``noalias=True`` for kernels whose outputs never overlap their other arguments.

    ``nogil=True`` so that kernels release the GIL and models can train in several Python threads.
    With caching on, the function's ``__qualname__`` (which names its cache files) gets the
    suffix ``__<SOURCE_DIGEST>``.
    """
    def decorate(pyfunc):
        if CACHE:
            pyfunc.__qualname__ = f"{pyfunc.__qualname__}__{SOURCE_DIGEST}"
        options = {"pipeline_class": _NoAliasCompiler} if noalias else {}

        def compile_with(cache):
            return njit(parallel=parallel, fastmath=set(FASTMATH), cache=cache, nogil=True,
                        error_model="numpy", **options)(pyfunc)

        try:
            dispatcher = compile_with(CACHE)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            if not CACHE or "no locator available" not in str(exc):
                raise
            if not UNCACHED:
                warnings.warn(NO_CACHE_FOLDER, RuntimeWarning, stacklevel=2)
            UNCACHED.append(pyfunc.__name__)
            dispatcher = compile_with(False)
        DISPATCHERS.append(dispatcher)
        return dispatcher
    return decorate


def jit_pair(pyfunc):
    """Compile one Python kernel body twice: serial and parallel (``prange`` runs as ``range``
    in the serial one), both with ``noalias`` (outputs never overlap the other arguments).
    Returns ``(serial, parallel)``; the orchestration code picks the serial
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
    return jit(parallel=False, noalias=True)(twin), jit(parallel=True)(pyfunc)
