"""fastbp's airspeed velocity (asv) benchmarks; see docs/benchmarking.md.

* ``training``: ``MLP.fit`` epochs, one SGD step, peak memory, samples per second;
* ``inference``: ``MLP.forward`` and ``MLP.predict``;
* ``kernels``: each kernel alone, threaded and serial;
* ``convergence``: loss and digits test accuracy after a fixed training (correctness tracked);
* ``cold_start``: import and the first use of each kernel path in a new interpreter, numba's
  cache warm and cold;
* ``peers``: fastbp, NumPy, PyTorch and JAX on the same workloads (``fastbp.bench``);
* ``common``: the profiles (``FASTBP_ASV_PROFILE=fast|regular``), grids and base class.
"""
