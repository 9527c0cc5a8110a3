"""Data-parallel training over MPI (``fit(..., comm=...)``), run for real: ``mpiexec -n 2
python -m mpi4py tests/mpi_worker.py`` in its own process group, killed on timeout, on the
loopback only. Compared with single-process training on the same global batches."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp.training import LocalComm
from mpi_problem import OPTIMIZERS, data, net

pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'fastbp[mpi]')")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which(
    "mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install 'fastbp[mpi]' brings MPICH's)", allow_module_level=True)

WORKER = os.path.join(os.path.dirname(__file__), "mpi_worker.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))


def mpirun(mode, tmp_path, timeout=240, argv=None):
    """Run the worker (or ``argv`` after ``python -m mpi4py``) on 2 ranks, in its own process
    group, on the loopback; returns (exit status, stdout, stderr, the results of rank 0)."""
    out = str(tmp_path / f"{mode}.npz")
    env = dict(os.environ, UCX_NET_DEVICES="lo", FI_PROVIDER="shm", OMPI_MCA_btl="self,sm",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [WORKER, mode, out] if argv is None else argv
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "mpi4py", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"mpiexec {mode} did not finish in {timeout} s")
    results = None
    if proc.returncode == 0 and argv[0] == WORKER:
        with np.load(out, allow_pickle=False) as f:
            results = {k: f[k] for k in f.files}
    return proc.returncode, stdout, stderr, results




def test_two_ranks_equal_one_process(tmp_path):
    rc, _, err, res = mpirun("whole", tmp_path)
    assert rc == 0, err
    X, y, w = data()
    for name, opt in OPTIMIZERS.items():
        for shuffle in (False, True):
            for weighted in (False, True):
                key = f"{name}-{shuffle}-{weighted}"
                ranks = res[key + "-params"]
                np.testing.assert_array_equal(ranks[0], ranks[1], err_msg=key)  # bitwise
                one = net()
                one.fit(X, y, epochs=3, batch_size=8, optimizer=opt, lr=0.05, shuffle=shuffle,
                        sample_weight=w if weighted else None)
                np.testing.assert_allclose(ranks[0], one.params, rtol=0, atol=1e-9,
                                           err_msg=key)
                np.testing.assert_allclose(res[key + "-loss"][0], one.loss_curve_, rtol=1e-9,
                                           err_msg=key)
    np.testing.assert_array_equal(res["blocking-params"], res["adam-False-False-params"][0])
    one = net()
    one.fit(X, y, epochs=3, batch_size=8, optimizer="adam", lr=0.05)
    np.testing.assert_allclose(res["partial-params"], one.params, rtol=0, atol=1e-9)
    hist = res["history"]  # losses, validation, early stopping: the same on both ranks
    np.testing.assert_array_equal(hist[0], hist[1])
    n_epochs = int(hist[0][-1])
    assert 0 < hist[0][-2] == n_epochs < 30  # stopped early
    model = fastbp.load(str(tmp_path / "whole.npz.model.npz"))  # written once, by rank 0
    assert model.n_epochs_ == n_epochs
    import numba
    cores = len(os.sched_getaffinity(0))
    assert int(res["threads"]) == max(1, min(cores // 2, numba.config.NUMBA_NUM_THREADS))
    assert str(res["mpi"]) == "rank 0 of 2"


def test_sharded_ranks_equal_one_process_on_the_same_batches(tmp_path):
    rc, _, err, res = mpirun("sharded", tmp_path)
    assert rc == 0, err
    X, y, _ = data(44)
    # global batch k: rows 4k..4k+3 of rank 0's 24, then of rank 1's 20 (none in the last)
    order = np.concatenate([np.r_[4 * k:4 * k + 4, 24 + 4 * k:min(24 + 4 * k + 4, 44)]
                            for k in range(6)])
    one = net()
    one.fit(X[order], y[order], epochs=3, batch_size=8, optimizer="adam", lr=0.05,
            shuffle=False)
    ranks = res["sharded-False-params"]
    np.testing.assert_array_equal(ranks[0], ranks[1])
    np.testing.assert_allclose(ranks[0], one.params, rtol=0, atol=1e-9)
    np.testing.assert_allclose(res["sharded-False-loss"], one.loss_curve_, rtol=1e-9)
    shuffled = res["sharded-True-params"]
    np.testing.assert_array_equal(shuffled[0], shuffled[1])
    assert np.isfinite(shuffled).all() and not np.array_equal(shuffled[0], ranks[0])


def test_an_error_on_one_rank_ends_the_run(tmp_path):
    t = time.monotonic()
    rc, _, err, _ = mpirun("bad-rank", tmp_path, timeout=120)
    assert rc != 0
    assert "X contains NaN" in err or "NaN" in err, err
    assert time.monotonic() - t < 120


def test_fastbp_train_under_mpiexec(tmp_path):
    import json
    model = tmp_path / "m.npz"
    rc, out, err, _ = mpirun("cli", tmp_path, argv=[
        "-m", "fastbp", "train", "--epochs", "2", "--batch-size", "16", "--quiet", "--json",
        "--save", str(model)])
    assert rc == 0, err
    report = json.loads(out)  # one JSON document: rank 0 alone prints
    assert len(report["history"]["loss"]) == 2 and report["metrics"]["test"]["n"] == 450
    assert fastbp.load(str(model)).n_epochs_ == 2


def test_different_models_on_the_ranks_are_an_error(tmp_path):
    rc, _, err, _ = mpirun("other-model", tmp_path, timeout=120)
    assert rc != 0 and "the same network and optimizer on every rank" in err, err


def test_local_comm_is_the_single_process_path():
    """``comm`` of one process runs the data-parallel kernels: the same result as without."""
    X, y, w = data()
    for opt in ("sgd", "adam"):
        a, b = net(), net()
        a.fit(X, y, epochs=2, batch_size=8, optimizer=opt, lr=0.05, sample_weight=w)
        b.fit(X, y, epochs=2, batch_size=8, optimizer=opt, lr=0.05, sample_weight=w,
              comm=LocalComm())
        np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-12)


def test_comm_arguments_are_checked():
    X, y, _ = data()
    with pytest.raises(TypeError, match="comm must be an MPI communicator"):
        net().fit(X, y, comm=object())
    with pytest.raises(ValueError, match="sharded=True needs comm"):
        net().fit(X, y, sharded=True)
    with pytest.raises(ValueError, match="no hogwild"):
        net().fit(X, y, comm=LocalComm(), hogwild=True)
