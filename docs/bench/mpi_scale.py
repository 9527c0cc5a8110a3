"""Scaling of data-parallel training (docs/mpi.md, "Measured here"): run as
mpiexec -n R python -m mpi4py mpi_scale.py   (NUMBA_NUM_THREADS=1: one thread per rank)."""
import sys, time
import numpy as np
from mpi4py import MPI
import fastbp
from fastbp.bench.workloads import WORKLOADS

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
fastbp.set_num_threads(1)
for name in sys.argv[1:] or ["mnist-b32", "deep-b256"]:
    w = WORKLOADS[name]
    rng = np.random.default_rng(0)
    X = rng.random((w.n_samples, w.layers[0]), dtype=np.float32)
    y = rng.integers(0, w.layers[-1], w.n_samples)
    from fastbp.training import DataParallel
    modes = [("comm-overlap", comm, True), ("comm-blocking", comm, False)] + (
        [("plain", None, True)] if size == 1 else [])
    for label, c, overlap in modes:
        DataParallel.OVERLAP = overlap
        net = fastbp.MLP(list(w.layers), seed=0)
        net.fit(X, y, epochs=1, batch_size=w.batch, lr=w.lr, shuffle=False, comm=c)  # warm-up
        comm.Barrier()
        t = time.perf_counter()
        net.fit(X, y, epochs=3, batch_size=w.batch, lr=w.lr, shuffle=False, comm=c)
        comm.Barrier()
        dt = time.perf_counter() - t
        if rank == 0:
            print(f"{name} ranks={size} path={label}: {3 * w.n_samples / dt:,.0f} samples/s")
    P = net.params.shape[0]
    g = np.ones(P, dtype=np.float32)
    for _ in range(5):
        comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(50):
        comm.Allreduce(MPI.IN_PLACE, g, op=MPI.SUM)
    dt = (time.perf_counter() - t) / 50
    steps = -(-w.n_samples // w.batch)
    if rank == 0:
        print(f"{name} ranks={size}: Allreduce of {P:,} float32 ({4 * P / 1e6:.2f} MB) "
              f"{dt * 1e3:.3f} ms per step, {steps} steps per epoch")
