"""fastbp in multiprocessing workers (docs/threads.md, docs/robustness.md).

Each scenario runs in a fresh interpreter (a subprocess with a timeout), so a worker that
aborts or hangs fails the test instead of taking pytest down. The parent trains with threads
before it starts its workers: GNU OpenMP cannot be used again in a child forked after that, so
fastbp runs such a child's kernels serially. The workers' results must equal the parent's.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import multiprocessing as mp
    import sys

    import numba
    import numpy as np
    import fastbp

    def train(job):
        seed, batch_size, optimizer = job
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((128, 48))
        y = np.argmax(X[:, :10], axis=1)
        net = fastbp.MLP([48, 96, 10], activation="tanh", loss="cross_entropy", seed=seed)
        with fastbp.threads(2):  # asks for threads; a forked child after OpenMP gets 1
            net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=optimizer, lr=0.01)
            out = net.forward(X)
            used = fastbp.get_num_threads()
        return net.params, out, used

    def layer():
        try:
            return numba.threading_layer()
        except ValueError:
            return None

    def worker(job):
        params, out, used = train(job)
        return params, out, used, layer()

    if __name__ == "__main__":
        method, train_first = sys.argv[1], sys.argv[2] == "1"
        jobs = [(1, 32, "sgd"), (2, 16, "adam"), (3, 1, "sgd")]
        if train_first:  # the parent runs the threaded kernels before starting its workers
            reference = [train(job) for job in jobs]
            parent_layer = layer()
        with mp.get_context(method).Pool(2) as pool:
            results = pool.map_async(worker, jobs).get(timeout=120)
        if not train_first:
            reference = [train(job) for job in jobs]
            parent_layer = layer()
        for job, ref, got in zip(jobs, reference, results):
            assert np.array_equal(got[0], ref[0]), ("params differ", job)
            assert np.array_equal(got[1], ref[1]), ("outputs differ", job)
        print(json.dumps({"parent_layer": parent_layer, "parent_threads": reference[0][2],
                          "child_threads": [r[2] for r in results],
                          "child_layers": [r[3] for r in results]}))
""")


def run(tmp_path, method, train_first):
    script = tmp_path / "mp_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    env.pop("NUMBA_THREADING_LAYER", None)
    proc = subprocess.run([sys.executable, str(script), method, "1" if train_first else "0"],
                          env=env, capture_output=True, text=True, timeout=600,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_workers_after_the_parent_trained(tmp_path):
    info = run(tmp_path, "fork", train_first=True)
    assert info["parent_threads"] == 2
    if info["parent_layer"] == "omp":  # GNU OpenMP: the children run serially
        assert info["child_threads"] == [1, 1, 1]
    else:
        assert info["child_threads"] == [2, 2, 2]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_workers_before_the_parent_trained(tmp_path):
    info = run(tmp_path, "fork", train_first=False)
    assert info["child_threads"] == [2, 2, 2]  # nothing to protect: the children use threads


def test_spawn_workers(tmp_path):
    info = run(tmp_path, "spawn", train_first=True)
    assert info["child_threads"] == [2, 2, 2]
    assert info["child_layers"] == [info["parent_layer"]] * 3
