"""``fastbp.show_config()``: what fastbp runs on."""
import os
import platform
import sys

import numba
import numpy as np

from . import _cache, _config, _threads


def config_dict():
    """The facts ``show_config`` prints, as a dict of plain values."""
    from . import __version__
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = f"not started yet (requested: {numba.config.THREADING_LAYER})"
    cache_dir = os.environ.get("NUMBA_CACHE_DIR") or "next to the modules (__pycache__), " \
        "or numba's per-user cache directory where that is read-only"
    return {
        "fastbp": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numba": numba.__version__,
        "llvmlite": __import__("llvmlite").__version__,
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threading_layer": layer,
        "numba_pool_threads": numba.config.NUMBA_NUM_THREADS,
        "fastbp_threads": _threads.get_num_threads(),
        "fastbp_threads_setting": _threads._process_threads,
        "serial_only_after_fork": _threads._serial_only,
        "cache": _config.CACHE and not _config.UNCACHED,
        "cache_dir": (cache_dir if _config.CACHE and not _config.UNCACHED else
                      "(caching off: FASTBP_CACHE=0)" if not _config.CACHE else
                      f"(no writable folder: {len(_config.UNCACHED)} kernels compiled in each "
                      f"process; set NUMBA_CACHE_DIR)"),
        "compiled_sets": _cache.compiled_sets() if _config.CACHE and not _config.UNCACHED
        else [],
        "fastmath": sorted(_config.FASTMATH),
        "mpi": _mpi(),
    }


def _mpi():
    """Rank and size of MPI.COMM_WORLD once mpi4py's MPI is imported (importing it would
    initialize MPI, so this does not)."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None:
        return "not in use (mpi4py.MPI not imported)"
    world = mpi.COMM_WORLD
    return f"rank {world.Get_rank()} of {world.Get_size()}"


def show_config(file=None):
    """Print versions, the threading layer, thread counts and the compile-cache policy."""
    info = config_dict()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}", file=file or sys.stdout)
