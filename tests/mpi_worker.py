"""Run by tests/test_mpi.py under ``mpiexec -n 2 python -m mpi4py tests/mpi_worker.py MODE OUT``:
data-parallel fits on every rank; rank 0 writes what the test compares into OUT (.npz)."""
import sys

import numpy as np
from mpi4py import MPI

import fastbp
from mpi_problem import OPTIMIZERS, data, net

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
mode, out = sys.argv[1], sys.argv[2]




results = {}
if mode == "whole":
    X, y, w = data()
    for name, opt in OPTIMIZERS.items():
        for shuffle in (False, True):
            for weighted in (False, True):
                m = net()
                m.fit(X, y, epochs=3, batch_size=8, optimizer=opt, lr=0.05, shuffle=shuffle,
                      sample_weight=w if weighted else None, comm=comm)
                key = f"{name}-{shuffle}-{weighted}"
                every = comm.gather(m.params.copy(), root=0)
                losses = comm.gather(list(m.loss_curve_), root=0)
                if rank == 0:
                    results[key + "-params"] = np.array(every)
                    results[key + "-loss"] = np.array(losses)
    # partial_fit continues: 3 calls equal one fit of 3 epochs
    m = net()
    for _ in range(3):
        m.partial_fit(X, y, batch_size=8, optimizer="adam", lr=0.05, comm=comm)
    if rank == 0:
        results["partial-params"] = m.params.copy()
    # the reductions after the whole backward pass instead of one per layer: the same sums
    from fastbp.training import DataParallel
    DataParallel.OVERLAP = False
    m = net()
    m.fit(X, y, epochs=3, batch_size=8, optimizer="adam", lr=0.05, shuffle=False, comm=comm)
    DataParallel.OVERLAP = True
    if rank == 0:
        results["blocking-params"] = m.params.copy()
    # validation, early stopping, history and save from rank 0
    m = net()
    h = m.fit(X[:40], y[:40], epochs=30, batch_size=4, optimizer="adam", lr=0.2,
              validation_data=(X[40:], y[40:]), early_stopping=2, comm=comm)
    hist = comm.gather(np.concatenate([h.loss, h.val_loss, h.val_metric,
                                       [h.stopped_epoch or 0, len(h)]]), root=0)
    m.save(out + ".model.npz", comm=comm)
    threads = []  # fastbp's threads inside a fit: ranks x threads <= cores
    net().fit(X, y, epochs=1, batch_size=8, comm=comm,
              callbacks=[lambda e, h, model: threads.append(fastbp.get_num_threads())])
    if rank == 0:
        results["history"] = np.array(hist)
        results["threads"] = np.array(threads[0])
        results["mpi"] = np.array(fastbp._info.config_dict()["mpi"])
elif mode == "sharded":
    X, y, _ = data(44)
    mine = slice(0, 24) if rank == 0 else slice(24, 44)  # 24 and 20 rows
    for shuffle in (False, True):
        m = net()
        m.fit(X[mine], y[mine], epochs=3, batch_size=8, optimizer="adam", lr=0.05,
              shuffle=shuffle, comm=comm, sharded=True)
        every = comm.gather(m.params.copy(), root=0)
        if rank == 0:
            results[f"sharded-{shuffle}-params"] = np.array(every)
            results[f"sharded-{shuffle}-loss"] = np.array(m.loss_curve_)
elif mode == "other-model":
    X, y, _ = data()
    sizes = [7, 6, 3] if rank == 0 else [7, 5, 3]
    fastbp.MLP(sizes, loss="cross_entropy", seed=1).fit(X, y, batch_size=8, comm=comm)
elif mode == "bad-rank":
    X, y, _ = data()
    if rank == 1:
        X = X.copy()
        X[3, 2] = np.nan
    net().fit(X, y, epochs=2, batch_size=8, comm=comm)
if rank == 0:
    np.savez(out, **results)
