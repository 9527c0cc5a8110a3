"""fastbp's thread count under threadpoolctl: ``threadpoolctl.threadpool_limits(n)`` (and what is
built on it) limits fastbp's kernels as it limits BLAS and OpenMP.

threadpoolctl finds libraries by the file names of the shared libraries a process has loaded,
and numba's threading layer (the OpenMP, TBB or workqueue pool) is loaded only when the first
parallel kernel runs. fastbp's controller is therefore tied to numba's ``_helperlib``
extension, loaded with numba itself, so that a limit set before any kernel has run (joblib
sets its workers' limits when they start) still applies. Its setting is fastbp's process-wide
thread count (``fastbp.set_num_threads``); ``with fastbp.threads(n):`` in a Python thread still
takes precedence there. In threadpoolctl's listings it is ``user_api='fastbp'``.

``register()`` is called by ``import fastbp.sklearn``; ``import fastbp`` does not import
threadpoolctl.
"""
import numba

from . import __version__
from . import _threads

_registered = False


def register():
    """Register fastbp's controller with threadpoolctl, once; returns whether it is registered
    (False when threadpoolctl is not installed)."""
    global _registered
    if _registered:
        return True
    try:
        import threadpoolctl
    except ImportError:
        return False

    class FastbpController(threadpoolctl.LibController):
        """fastbp's kernels' thread count (see :mod:`fastbp._threadpool`)."""

        user_api = "fastbp"
        internal_api = "fastbp"
        filename_prefixes = ("_helperlib",)
        check_symbols = ("numba_list_append",)  # numba's _helperlib, not another one

        def get_num_threads(self):
            return _threads.get_num_threads()

        def set_num_threads(self, num_threads):
            # A count equal to numba's clears fastbp's setting: leaving a limit restores the
            # count read on entry, and fastbp should go on following numba after it.
            n = max(1, min(int(num_threads), _threads._max_threads()))
            _threads.set_num_threads(None if n == numba.get_num_threads() else n)

        def get_version(self):
            return __version__

    threadpoolctl.register(FastbpController)
    _registered = True
    return True
