"""fastbp from several Python threads (docs/threads.md, docs/robustness.md): models trained at
the same time give the results of sequential training, a model shared for prediction is safe,
thread settings are per Python thread, and with numba's ``workqueue`` threading layer (which
aborts the process on concurrent parallel calls) fastbp takes turns instead of crashing."""
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastbp

# Big enough that the first layer's kernels take their threaded builds at batch 16 and 32
# (fastbp.kernels.network.batch_threaded), small enough to train in a fraction of a second.
SIZES = [96, 128, 10]
SPECS = [  # (optimizer, lr, batch_size): the fused SGD path, per-sample SGD, the general path
    ("sgd", 0.1, 32),
    ("sgd", 0.05, 1),
    ({"name": "adam"}, 0.01, 16),
]


def problem(seed, N=192):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, SIZES[0]))
    y = np.argmax(X[:, :SIZES[-1]], axis=1)
    return X, y


def train(seed, spec, dtype="float64", epochs=2, threads=None):
    optimizer, lr, batch_size = spec
    X, y = problem(seed)
    net = fastbp.MLP(SIZES, activation="tanh", loss="cross_entropy", dtype=dtype, seed=seed)
    if threads is None:
        net.fit(X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer)
    else:
        with fastbp.threads(threads):
            net.fit(X, y, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer)
    return net


def run_together(funcs, timeout=300):
    """Run each function in its own Python thread, started together; return their results
    (re-raising the first exception)."""
    barrier = threading.Barrier(len(funcs))
    results, errors = [None] * len(funcs), []

    def body(k):
        try:
            barrier.wait()
            results[k] = funcs[k]()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    workers = [threading.Thread(target=body, args=(k,)) for k in range(len(funcs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout)
        assert not w.is_alive(), "a thread did not finish"
    if errors:
        raise errors[0]
    return results


@pytest.mark.parametrize("spec", SPECS, ids=["sgd-batch", "sgd-per-sample", "adam"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_models_trained_in_parallel_threads_equal_sequential_training(spec, dtype):
    seeds = [1, 2, 3]
    sequential = [train(s, spec, dtype).params for s in seeds]
    for _ in range(2):  # twice: different interleavings
        nets = run_together([lambda s=s: train(s, spec, dtype) for s in seeds])
        for net, ref in zip(nets, sequential):
            assert np.array_equal(net.params, ref)


def test_thread_settings_are_per_python_thread():
    """One thread trains with fastbp.threads(1), another with the process setting; each gets
    its own count, and both results equal sequential training."""
    spec = SPECS[0]
    ref = [train(4, spec).params, train(5, spec).params]
    seen = {}

    def one():
        with fastbp.threads(1):
            seen["one"] = fastbp.get_num_threads()
            return train(4, spec).params

    def other():
        seen["other"] = fastbp.get_num_threads()
        return train(5, spec).params

    got = run_together([one, other])
    assert seen["one"] == 1 and seen["other"] == fastbp.get_num_threads()
    assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1])


def test_a_model_shared_for_prediction_is_safe():
    net = train(6, SPECS[0])
    X, y = problem(7, N=300)
    ref = (net.forward(X), net.predict(X), net.loss(X, y), net.gradients(X, y),
           net.score(X, y))

    def use():
        for _ in range(5):
            out = (net.forward(X), net.predict(X), net.loss(X, y), net.gradients(X, y),
                   net.score(X, y))
            assert np.array_equal(out[0], ref[0]) and np.array_equal(out[1], ref[1])
            assert out[2] == ref[2] and out[4] == ref[4]
            for a, b in zip(out[3][0] + out[3][1], ref[3][0] + ref[3][1]):
                assert np.array_equal(a, b)
        return True

    assert all(run_together([use] * 4))


def test_prediction_while_another_model_trains():
    spec = SPECS[2]
    ref_trained = train(8, spec).params
    shared = train(9, SPECS[0])
    X, _ = problem(10)
    ref_out = shared.forward(X)

    def predict():
        return all(np.array_equal(shared.forward(X), ref_out) for _ in range(20))

    got = run_together([lambda: train(8, spec).params, predict, predict])
    assert np.array_equal(got[0], ref_trained) and got[1] and got[2]


def test_one_model_trained_from_two_threads_raises_at_once():
    """While one thread trains a model (held inside a callback here, so that the overlap is
    certain), a second fit, partial_fit or assignment to the model's state from another
    thread raises RuntimeError at once and changes nothing; reading works; the first training
    finishes with the numbers it would have given alone, and the model is free afterwards."""
    X, y = problem(11)
    spec = SPECS[2]
    ref = train(12, spec, epochs=2)
    net = fastbp.MLP(SIZES, activation="tanh", loss="cross_entropy", dtype="float64", seed=12)
    inside, release = threading.Event(), threading.Event()

    def hold(epoch, history, model):
        if not inside.is_set():  # the end of the first epoch
            inside.set()
            assert release.wait(60)

    def fit():
        optimizer, lr, batch_size = spec
        net.fit(*problem(12), epochs=2, batch_size=batch_size, lr=lr, optimizer=optimizer,
                callbacks=[hold])
        return net.params.copy()

    worker = ThreadPoolExecutor(1)
    job = worker.submit(fit)
    try:
        assert inside.wait(60)
        params, state = net.params.copy(), net.get_training_state()
        attempts = {
            "MLP.fit": lambda: net.fit(X, y, epochs=1, batch_size=8),
            "MLP.partial_fit": lambda: net.partial_fit(X, y, batch_size=8),
            r"weights\[0\] = ": lambda: net.weights.__setitem__(0, np.zeros((128, 96))),
            r"biases\[1\] = ": lambda: net.biases.__setitem__(1, np.zeros(10)),
            "MLP.set_training_state": lambda: net.set_training_state(state),
            "MLP.rng_state": lambda: setattr(net, "rng_state", state["rng_state"]),
        }
        for what, attempt in attempts.items():
            with pytest.raises(RuntimeError, match=what + ".*in MLP.fit in another thread"):
                attempt()
        assert np.array_equal(net.params, params)
        assert net.forward(X).shape == (X.shape[0], SIZES[-1])  # reading is not guarded
    finally:
        release.set()
        got = job.result(timeout=120)
        worker.shutdown()
    assert np.array_equal(got, ref.params)
    net.fit(X, y, epochs=1, batch_size=8)  # free again
    net.weights[0] = np.zeros((128, 96))
    assert not net.weights[0].any()


def test_save_pickle_and_copy_from_another_thread_during_training_raise(tmp_path):
    """A snapshot from another thread would pair mid-epoch parameters with the counters of the
    last finished epoch: save, pickling and copying take the training guard and refuse at once.
    From a callback of the training thread (between epochs) they work and are consistent."""
    import copy
    import io
    import pickle
    X, y = problem(15)
    net = fastbp.MLP(SIZES, activation="tanh", loss="cross_entropy", seed=15)
    inside, release = threading.Event(), threading.Event()
    ends, files = {}, []

    def hold(epoch, history, model):
        ends[epoch] = model.params.copy()
        buf = io.BytesIO()
        model.save(buf)  # the training thread itself, between epochs
        files.append(buf.getvalue())
        files.append(pickle.dumps(model))
        assert copy.deepcopy(model).n_epochs_ == epoch
        if not inside.is_set():
            inside.set()
            assert release.wait(60)

    worker = ThreadPoolExecutor(1)
    job = worker.submit(lambda: net.fit(X, y, epochs=2, batch_size=16, optimizer="adam",
                                        callbacks=[hold]))
    try:
        assert inside.wait(60)
        attempts = [("MLP.save", lambda: net.save(tmp_path / "m.npz")),
                    ("copying or pickling", lambda: pickle.dumps(net)),
                    ("copying or pickling", lambda: copy.deepcopy(net))]
        for what, attempt in attempts:
            with pytest.raises(RuntimeError, match=what + ".*in MLP.fit in another thread"):
                attempt()
        assert os.listdir(tmp_path) == []
    finally:
        release.set()
        job.result(timeout=120)
        worker.shutdown()
    assert len(files) == 4
    for data in files:
        back = fastbp.load(io.BytesIO(data)) if data[:2] == b"PK" else pickle.loads(data)
        np.testing.assert_array_equal(back.params, ends[back.n_epochs_])
        assert len(back.loss_curve_) == back.n_epochs_
    net.save(tmp_path / "m.npz")  # free again
    assert fastbp.load(tmp_path / "m.npz").n_epochs_ == 2


def test_a_callback_may_assign_the_weights_but_not_train_again():
    X, y = problem(13)
    net = fastbp.MLP(SIZES, activation="tanh", loss="cross_entropy", seed=13)
    saved = [w.copy() for w in net.weights]
    errors = []

    def restore(epoch, history, model):
        for l, w in enumerate(saved):
            model.weights[l] = w  # the training thread may assign (early stopping does)
        try:
            model.fit(X, y, epochs=1)
        except RuntimeError as exc:
            errors.append(str(exc))

    net.fit(X, y, epochs=1, batch_size=16, callbacks=[restore])
    assert all(np.array_equal(w, s) for w, s in zip(net.weights, saved))
    assert len(errors) == 1 and "MLP.fit: called during this model's MLP.fit" in errors[0]


def test_a_copied_or_unpickled_model_has_a_guard_of_its_own():
    import copy
    import pickle
    net = train(14, SPECS[1], epochs=1)
    for other in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert other._guard is not net._guard
        other.weights[0] = np.zeros((128, 96))
        assert not other.weights[0].any() and net.weights[0].any()


WORKQUEUE_SCRIPT = textwrap.dedent("""
    import threading
    import numba
    import numpy as np
    import fastbp

    def train(seed, batch_size, optimizer):
        rng = np.random.default_rng(seed)
        X = rng.standard_normal((128, 48))
        y = np.argmax(X[:, :10], axis=1)
        net = fastbp.MLP([48, 96, 10], activation="tanh", loss="cross_entropy", seed=seed)
        net.fit(X, y, epochs=2, batch_size=batch_size, optimizer=optimizer, lr=0.01)
        return net.params, net.forward(X)

    jobs = [(1, 32, "sgd"), (2, 16, "adam"), (3, 32, "sgd"), (4, 8, "adam")]
    results = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def body(k):
        barrier.wait()
        results[k] = train(*jobs[k])

    # The first parallel call happens in several threads at once: the layer is still unknown.
    threads = [threading.Thread(target=body, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert numba.threading_layer() == "workqueue", numba.threading_layer()
    for job, got in zip(jobs, results):
        ref = train(*job)
        assert np.array_equal(got[0], ref[0]) and np.array_equal(got[1], ref[1]), job
    print("workqueue ok", fastbp.get_num_threads())
""")


def test_workqueue_layer_concurrent_training_does_not_abort():
    """numba's workqueue layer aborts the interpreter when two Python threads run parallel
    kernels at once; fastbp serializes its calls on that layer, so this process survives and
    gets the sequential results."""
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue", NUMBA_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", WORKQUEUE_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "workqueue ok 2" in proc.stdout
