"""``fastbp.warmup()``: compile kernel sets ahead of time."""
import time

from . import _cache, _config
from . import _validation as V


def warmup(dtypes=("float32", "float64"), paths=None):
    """Compile the kernel sets ``paths`` (default: all of ``fastbp._cache.PATHS``) for
    ``dtypes`` into the on-disk cache now, instead of on their first use. Returns the seconds
    spent (about 0 when they are cached already).

    Use it where first-use compiling would land in the wrong place: a Docker image's build
    step, a shared environment on a cluster (compile once, before the jobs start), a service
    that must answer its first request at full speed. Layer sizes, activations and losses are
    run-time arguments, so one set covers every network of its dtype. With ``FASTBP_CACHE=0``
    the sets are compiled into this process only.
    """
    if isinstance(dtypes, str):
        dtypes = (dtypes,)
    dtypes = [V.check_dtype(d).name for d in dtypes]
    if paths is None:
        paths = list(_cache.PATHS)
    elif isinstance(paths, str):
        paths = [paths]
    for path in paths:
        if path not in _cache.PATHS:
            raise ValueError(f"paths: unknown kernel set {path!r}; expected some of "
                             f"{list(_cache.PATHS)}")
    t0 = time.perf_counter()
    for dtype in dtypes:
        for path in paths:
            if _config.CACHE and not _config.UNCACHED:
                _cache.require(path, dtype)
            else:
                _cache.run_path(path, dtype)
    return time.perf_counter() - t0
