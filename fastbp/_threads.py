"""Thread control: how many threads fastbp's kernels use, and running them safely.

* ``set_num_threads(n)`` sets fastbp's thread count for the whole process (every Python thread);
  ``with threads(n):`` overrides it for the calling Python thread only, and restores it on exit.
  With neither, fastbp uses numba's current setting of the calling thread (by default all cores,
  or ``NUMBA_NUM_THREADS``). Numba's own setting is per Python thread; every fastbp entry point
  applies fastbp's setting for the duration of the call (``kernel_scope``) and restores numba's.
* Threading layer: fastbp does not choose one for you (that is process-wide numba state). Numba
  takes TBB if it can load it, else OpenMP, else its own ``workqueue``. ``workqueue`` aborts the
  process when two Python threads run parallel kernels at once, so while the layer is unknown or
  is ``workqueue``, fastbp's entry points take turns on a process-wide lock (correct, not
  concurrent). GNU OpenMP (numba's OpenMP on Linux) cannot be used in a child forked from a
  process that already used it; in such a child fastbp runs every kernel serially instead.
"""
import contextlib
import os
import threading

import numba

from .kernels.network import PARALLEL_MIN_WORK, SERIAL_ONLY

_process_threads = None            # set_num_threads(); None: numba's per-thread setting
_local = threading.local()         # .threads: the threads() override of this Python thread
_workqueue_lock = threading.RLock()
_serial_only = False               # True in a child forked after GNU OpenMP was started


def _max_threads():
    return numba.config.NUMBA_NUM_THREADS


def _check_n(n):
    from ._validation import check_int
    n = check_int("n", n, low=1)
    if n > _max_threads():
        raise ValueError(f"n must be between 1 and {_max_threads()} (numba's thread pool size, "
                         f"NUMBA_NUM_THREADS), got {n}")
    return n


def set_num_threads(n):
    """Use ``n`` threads in fastbp's kernels, in every Python thread; returns the previous
    setting (None when fastbp had none and followed numba's)."""
    global _process_threads
    n = None if n is None else _check_n(n)
    previous, _process_threads = _process_threads, n
    return previous


def get_num_threads():
    """The number of threads fastbp's kernels use when called from this Python thread."""
    n = getattr(_local, "threads", None) or _process_threads
    return 1 if _serial_only else (n or numba.get_num_threads())


@contextlib.contextmanager
def threads(n):
    """``with fastbp.threads(n):`` fastbp's kernels use ``n`` threads in this Python thread."""
    n = _check_n(n)
    previous = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield n
    finally:
        _local.threads = previous


def _layer_known_safe():
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False


@contextlib.contextmanager
def kernel_scope(deterministic=False):
    """Run fastbp kernels: applies fastbp's thread count to numba for this Python thread and
    yields ``min_par``, the work threshold the drivers take.

    With one thread the drivers run every kernel serially (``SERIAL_ONLY``), unless
    ``deterministic``: then the choice between a kernel's serial and threaded build depends on
    the work size alone, never on the thread count. In a child forked after GNU OpenMP started,
    everything is serial (threads there would abort the process).
    """
    if _serial_only:
        yield SERIAL_ONLY
        return
    n = get_num_threads()
    if n == 1 and not deterministic:
        yield SERIAL_ONLY
        return
    saved = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        if _layer_known_safe():
            yield PARALLEL_MIN_WORK
        else:
            with _workqueue_lock:
                yield PARALLEL_MIN_WORK
    finally:
        numba.set_num_threads(saved)


def _after_fork_in_child():
    global _serial_only
    try:
        layer = numba.threading_layer()
    except ValueError:
        return  # the parent never started the thread pool: the child may
    if layer == "omp":
        _serial_only = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
