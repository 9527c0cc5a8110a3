"""The benchmark tool (fastbp.bench): every engine trains the same network the same way, the
worker prints its JSON line, the runner completes and reports. Correctness only: no timing."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastbp.bench import (DEFAULT_WORKLOADS, ENGINES, WORKLOADS, available, initial_weights,
                          main, make_data, make_epoch)
from fastbp.bench.runner import (WORKER, format_table, run_worker, summarize, usable_cpus,
                                 worker_env)

TEST_WORKLOADS = ("test-tiny", "test-ragged")
PEERS = ("numpy", "torch", "jax", "jax-scan")
TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": dict(rtol=1e-4, atol=2e-6)}


def _needs(engine):
    """Skip when the engine's library is not installed."""
    if engine == "torch":
        pytest.importorskip("torch")
    elif engine.startswith("jax"):
        pytest.importorskip("jax")


def _trained(engine, workload, dtype, epochs=2):
    epoch = make_epoch(engine, workload, dtype)
    for _ in range(epochs):
        epoch()
    return epoch.get_weights()


def _assert_same_weights(got, want, dtype):
    assert len(got) == len(want)
    for l, ((W, b), (W_ref, b_ref)) in enumerate(zip(got, want)):
        assert W.dtype == np.float64 and b.dtype == np.float64
        np.testing.assert_allclose(W, W_ref, err_msg=f"W{l}", **TOL[dtype])
        np.testing.assert_allclose(b, b_ref, err_msg=f"b{l}", **TOL[dtype])


# ---- workloads ---------------------------------------------------------------------------------
def test_workloads_cover_the_issue():
    for name in ("seed-b1", "tiny-b1", "mnist-b32", "odd-b1", "odd-b17", "mnist-b256",
                 "wide-b128", "deep-b256", "deep-b1024", "odd-b65", "single-b128", "narrow-b64"):
        assert name in WORKLOADS
    assert WORKLOADS["odd-b65"].layers == (1000, 777, 33) and WORKLOADS["odd-b65"].batch == 65
    assert WORKLOADS["single-b128"].layers[-1] == 1
    assert DEFAULT_WORKLOADS == ("seed-b1", "tiny-b1", "mnist-b32")
    assert WORKLOADS["seed-b1"].layers == (784, 128, 10) and WORKLOADS["seed-b1"].batch == 1
    assert WORKLOADS["tiny-b1"].layers == (64, 32, 10) and WORKLOADS["tiny-b1"].batch == 1
    assert WORKLOADS["mnist-b32"].layers == (784, 128, 10) and WORKLOADS["mnist-b32"].batch == 32
    for w in WORKLOADS.values():
        if not w.name.startswith("test-"):
            assert w.lr == 0.01
            assert w.n_samples % w.batch == 0, w.name  # no ragged batch in the benchmarks
    assert WORKLOADS["test-ragged"].n_samples % WORKLOADS["test-ragged"].batch != 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_make_data_is_fixed_random_one_hot(dtype):
    w = WORKLOADS["test-ragged"]
    X, Y = make_data(w, dtype)
    assert X.shape == (w.n_samples, w.layers[0]) and Y.shape == (w.n_samples, w.layers[-1])
    assert X.dtype == dtype and Y.dtype == dtype
    assert X.flags.c_contiguous and Y.flags.c_contiguous
    assert X.min() >= 0 and X.max() < 1
    np.testing.assert_array_equal(Y.sum(axis=1), 1)
    assert set(np.unique(Y)) == {0, 1}
    X2, Y2 = make_data(w.name, dtype)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(Y, Y2)
    assert not np.array_equal(X, make_data(w, dtype, seed=1)[0])


def test_initial_weights_shapes_and_determinism():
    w = WORKLOADS["test-ragged"]
    params = initial_weights(w)
    assert [(W.shape, b.shape) for W, b in params] == [((4, 7), (4,)), ((3, 4), (3,)),
                                                        ((2, 3), (2,))]
    assert all(W.dtype == np.float64 and b.dtype == np.float64 for W, b in params)
    again = initial_weights(w.name)
    for (W, b), (W2, b2) in zip(params, again):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)


# ---- engines -----------------------------------------------------------------------------------
def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="unknown engine"):
        make_epoch("tensorflow", "test-tiny")
    with pytest.raises(ValueError, match="unknown engine"):
        available("tensorflow")
    with pytest.raises(ValueError, match="unknown workload"):
        make_epoch("numpy", "no-such-workload")
    with pytest.raises(TypeError, match="dtype"):
        make_epoch("numpy", "test-tiny", dtype="float16")


def test_fastbp_and_numpy_are_always_available():
    assert ENGINES == ("fastbp", "numpy", "torch", "jax", "jax-scan")
    assert available("fastbp") and available("numpy")


@pytest.mark.parametrize("workload", TEST_WORKLOADS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fastbp_epoch_trains_and_leaves_the_data_alone(workload, dtype):
    X, Y = make_data(workload, dtype)
    epoch = make_epoch("fastbp", workload, dtype, data=(X, Y))
    start = initial_weights(workload)
    # Setup (kernel loading on a throwaway network) must not train the measured one.
    for (W, b), (W0, b0) in zip(epoch.get_weights(), start):
        np.testing.assert_allclose(W, W0, rtol=1e-6)
        np.testing.assert_allclose(b, b0, rtol=1e-6)
    epoch()
    moved = max(np.abs(W - W0).max() for (W, _), (W0, _) in zip(epoch.get_weights(), start))
    assert moved > 1e-3
    np.testing.assert_array_equal(X, make_data(workload, dtype)[0])


# JAX float64 needs jax_enable_x64 process-wide: test_jax_float64_in_a_worker checks it in a
# worker process instead of here.
@pytest.mark.parametrize("workload", TEST_WORKLOADS)
@pytest.mark.parametrize("engine,dtype", [(e, d) for e in PEERS for d in ("float32", "float64")
                                          if not (e.startswith("jax") and d == "float64")])
def test_peer_trains_the_same_weights_as_fastbp(engine, workload, dtype):
    _needs(engine)
    _assert_same_weights(_trained(engine, workload, dtype), _trained("fastbp", workload, dtype),
                         dtype)


@pytest.mark.parametrize("engine", ["jax", "jax-scan"])
def test_jax_float64_in_a_worker(engine, tmp_path):
    _needs(engine)
    out = tmp_path / "weights.npz"
    proc = subprocess.run([sys.executable, WORKER, "--engine", engine, "--workload",
                           "test-ragged", "--dtype", "float64", "--epochs", "1",
                           "--weights-out", str(out)],
                          env=worker_env(engine, 1), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    saved = np.load(out)
    got = [(saved[f"W{l}"], saved[f"b{l}"]) for l in range(3)]
    # the worker ran the warm-up epoch and one timed epoch
    _assert_same_weights(got, _trained("fastbp", "test-ragged", "float64", epochs=2), "float64")


def test_epoch_runner_describes_itself():
    epoch = make_epoch("numpy", "test-tiny")
    assert epoch.engine == "numpy" and epoch.n_samples == 16
    assert "test-tiny" in repr(epoch)


# ---- the worker process ------------------------------------------------------------------------
def test_peak_rss_is_the_process_own_not_its_parents():
    """A worker started by a process that once held 400 MB reports its own peak: Linux's
    ``ru_maxrss`` would carry the parent's 400 MB across ``exec``."""
    child = ("import sys; sys.path.insert(0, %r); import worker; print(worker.peak_rss_mb())"
             % os.path.dirname(WORKER))
    parent = ("import subprocess, sys\n"
              "big = bytearray(400 * 2**20)\n"
              "big[::4096] = b'x' * len(big[::4096])\n"  # touch every page
              "del big\n"
              f"subprocess.run([sys.executable, '-c', {child!r}], check=True)\n")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    peak = float(out.stdout.strip().splitlines()[-1])
    assert 0 < peak < 200, peak


@pytest.mark.parametrize("engine", ["fastbp", "numpy"])
def test_worker_prints_one_json_line(engine):
    proc = subprocess.run([sys.executable, WORKER, "--engine", engine, "--workload", "test-tiny",
                           "--epochs", "2", "--threads", "1"],
                          env=worker_env(engine, 1), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    res = json.loads(lines[0])
    assert res["ok"] is True and res["engine"] == engine and res["workload"] == "test-tiny"
    assert res["n_samples"] == 16 and res["batch"] == 2 and res["threads"] == 1
    assert len(res["epoch_s"]) == 2 and all(t > 0 for t in res["epoch_s"])
    assert res["samples_per_s"] > 0
    assert res["startup_s"] > 0 and res["startup_wall_s"] >= res["startup_s"]
    assert res["peak_rss_mb"] > 0
    # run as a file, a peer's process never imports fastbp (or numba)
    assert res["fastbp_preimported"] is False
    assert res["versions"]["numpy"] == np.__version__
    if engine == "fastbp":
        assert res["versions"]["numba_threads"] == 1


def test_worker_env_treats_peers_and_fastbp_differently(monkeypatch):
    base = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "PATH": "/bin"}
    fastbp_env = worker_env("fastbp", 2, base)
    assert fastbp_env["OPENBLAS_CORETYPE"] == "Haswell"
    assert fastbp_env["OPENBLAS_L2_SIZE"] == "1048576"
    assert fastbp_env["NUMBA_NUM_THREADS"] == "2"
    for peer in PEERS:
        env = worker_env(peer, 2, base)
        assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
        assert env["PATH"] == "/bin" and env["OMP_NUM_THREADS"] == "2"
    assert "intra_op_parallelism_threads=1" in worker_env("jax", 1, base)["XLA_FLAGS"]
    assert "XLA_FLAGS" not in worker_env("jax-scan", 2, base)
    assert base == {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576",
                    "PATH": "/bin"}


def test_a_failing_worker_is_reported_not_raised():
    res = run_worker("numpy", "test-tiny", timeout=0.001)
    assert res["ok"] is False and "timed out" in res["error"]
    res = run_worker("numpy", "test-tiny", epochs=0)  # the worker rejects it
    assert res["ok"] is False and "exit status" in res["error"]
    rows, summary = summarize([dict(res, round=1)], ["test-tiny"], ["fastbp", "numpy"])
    assert rows[1]["samples_per_s"] is None and rows[1]["errors"]
    assert summary["test-tiny"]["fastbp_over_best_peer"] is None
    table = format_table(rows, summary)
    assert "FAILED" in table and "n/a" in table


# ---- the command -------------------------------------------------------------------------------
def test_main_runs_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = main(["--workloads", "test-tiny", "--engines", "fastbp,numpy", "--rounds", "1",
               "--epochs", "1", "--threads", "1", "--quiet", "--json", str(path)])
    assert rc == 0
    table = capsys.readouterr().out
    assert "test-tiny: fastbp / best peer = " in table
    report = json.loads(path.read_text())
    assert set(report) >= {"config", "results", "summary", "runs"}
    assert report["config"]["engines"] == ["fastbp", "numpy"]
    assert report["config"]["rounds"] == 1 and report["config"]["threads"] == 1
    assert len(report["runs"]) == 2 and all(r["ok"] for r in report["runs"])
    rows = {r["engine"]: r for r in report["results"]}
    assert set(rows) == {"fastbp", "numpy"}
    for r in rows.values():
        assert r["workload"] == "test-tiny" and r["ok_runs"] == 1
        assert r["samples_per_s"] > 0 and r["startup_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["fastbp_ratio"] == pytest.approx(rows["fastbp"]["samples_per_s"]
                                                  / r["samples_per_s"])
        assert r["fastbp_rss_ratio"] > 0
    assert rows["fastbp"]["fastbp_ratio"] == 1
    s = report["summary"]["test-tiny"]
    assert s["best_peer"] == "numpy"
    assert s["fastbp_over_best_peer"] == pytest.approx(rows["numpy"]["fastbp_ratio"])


def test_main_json_flag_prints_json(capsys):
    rc = main(["--workloads", "test-tiny", "--engines", "numpy", "--rounds", "1", "--epochs",
               "1", "--threads", "1", "--quiet", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["results"][0]["engine"] == "numpy"


def test_main_rejects_bad_options(capsys):
    for argv in (["--workloads", "nope"], ["--engines", "fastbp,tensorflow"], ["--rounds", "0"],
                 ["--timeout", "nan"], ["--timeout", "0"], ["--seed", "-5"],
                 ["--threads", str(usable_cpus() + 1)], ["--threads", "999", "--kernels"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert argv[0] in capsys.readouterr().err
    assert main(["--list"]) == 0
    assert "mnist-b32" in capsys.readouterr().out


def test_command_line_dispatch():
    proc = subprocess.run([sys.executable, "-m", "fastbp", "bench", "--help"],
                          capture_output=True, text=True, timeout=120,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr
    assert "--workloads" in proc.stdout and "--json" in proc.stdout


def test_kernel_report_in_gflops_next_to_matmul():
    """``fastbp bench --kernels``: every dense kernel of every layer, timed, with the matmul
    speed of the same run (the kernels in one fresh process, the matmul in another)."""
    proc = subprocess.run([sys.executable, "-m", "fastbp", "bench", "--kernels", "--workloads",
                           "test-ragged", "--threads", "1", "--json", "-"], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["matmul_gflops"] > 0 and report["matmul_n"] == 2048
    got = {(r["layer"], r["kernel"]) for r in report["kernels"]}
    assert got == {(0, "forward"), (0, "grad+step"), (1, "forward"), (1, "grad+step"),
                   (1, "delta"), (2, "forward"), (2, "grad+step"), (2, "delta")}
    for r in report["kernels"]:
        assert r["gflops"] > 0 and r["seconds"] > 0
        assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / report["matmul_gflops"])
    assert report["kernels"][0]["shape"] == "3x7->4"
