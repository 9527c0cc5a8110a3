"""Training-throughput benchmark: fastbp against NumPy, PyTorch and JAX on the seed network.

Command line (``python -m fastbp bench --help``)::

    python -m fastbp bench                                   # the three target workloads
    python -m fastbp bench --workloads mnist-b32 --engines fastbp,torch --rounds 5 --json out.json

As a library (the asv suite uses these)::

    from fastbp.bench import WORKLOADS, make_data, initial_weights, make_epoch
    epoch = make_epoch("fastbp", "mnist-b32", dtype="float32")   # setup and compilation
    epoch()                                                       # one epoch of SGD
    epoch.get_weights()                                           # [(W, b), ...] float64

* :mod:`.workloads`: ``WORKLOADS`` (name -> Workload), ``make_data``, ``initial_weights``.
* :mod:`.engines`: ``ENGINES``, ``available(engine)``, ``make_epoch(engine, workload, ...)``.
* :mod:`.worker`: one measurement in a fresh process, one JSON line.
* :mod:`.runner`: the command: rounds of interleaved workers, the table and the JSON report.

The peers are optional (``pip install fastbp[peers]``: torch, jax); NumPy is always there.
"""
from .engines import ENGINES, EpochRunner, available, available_engines, make_epoch, versions
from .runner import main, run_worker
from .workloads import DEFAULT_WORKLOADS, WORKLOADS, Workload, initial_weights, make_data

__all__ = ["ENGINES", "DEFAULT_WORKLOADS", "WORKLOADS", "EpochRunner", "Workload",
           "available", "available_engines", "initial_weights", "main", "make_data",
           "make_epoch", "run_worker", "versions"]
