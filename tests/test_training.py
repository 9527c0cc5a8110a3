"""The training API: fit / partial_fit, History, callbacks, early stopping, progress, sample
weights, scores, reproducibility, and the training driver against naive and torch versions."""
import io
import pickle
import sys

import numba
import numpy as np
import pytest

import fastbp
import naive
from fastbp import optim
from fastbp.callbacks import Callback, EarlyStopping, History

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


def classification(rng, N=70, n=5, m=3, dtype=np.float64):
    X = rng.standard_normal((N, n)).astype(dtype)
    y = np.argmax(X[:, :m] + 0.3 * rng.standard_normal((N, m)), axis=1)
    return X, y


def regression(rng, N=70, n=4, m=2, dtype=np.float64):
    X = rng.standard_normal((N, n)).astype(dtype)
    Y = np.tanh(X[:, :m] - 0.5 * X[:, 1:m + 1]).astype(dtype)
    return X, Y


def net_ce(dtype=np.float64, sizes=(5, 8, 3), seed=0, activation="tanh"):
    return fastbp.MLP(list(sizes), activation=activation, loss="cross_entropy", dtype=dtype,
                      seed=seed)


OPTIMIZER_SPECS = [
    ("sgd", 0.1),                                              # the fused plain-SGD path
    ({"name": "sgd", "momentum": 0.9, "nesterov": True}, 0.05),
    ({"name": "sgd", "weight_decay": 0.01}, 0.1),
    ("adam", 0.01),
    ({"name": "adamw", "schedule": "plateau"}, 0.01),
    ({"name": "adam", "schedule": "cosine", "schedule.T_max": 3}, 0.02),
]
SPEC_IDS = ["sgd", "nesterov", "sgd-l2", "adam", "adamw-plateau", "adam-cosine"]


# ---- fit basics -----------------------------------------------------------------------------
def test_fit_returns_history(rng):
    X, y = classification(rng)
    net = net_ce()
    hist = net.fit(X, y, epochs=3, batch_size=8, lr=0.1, validation_data=(X[:20], y[:20]))
    assert isinstance(hist, History) and hist is net.history_
    assert len(hist) == 3 and hist.epoch == [1, 2, 3]
    assert hist.metric == "accuracy" and hist.has_validation
    assert hist.loss == net.loss_curve_
    assert all(np.isfinite(hist[k]).all() for k in History.KEYS)
    assert hist.lr == [0.1] * 3
    assert all(s > 0 for s in hist.seconds) and all(r > 0 for r in hist.samples_per_s)
    assert hist.val_loss[-1] == pytest.approx(net.loss(X[:20], y[:20]), rel=1e-12)
    assert hist.val_metric[-1] == net.score(X[:20], y[:20])
    assert net.n_epochs_ == 3 and net.n_steps_ == 3 * 9
    assert isinstance(net.optimizer_, optim.SGD)
    assert "History(3 epochs" in repr(hist)


def test_fit_keeps_core_positional_signature(rng):
    X, y = classification(rng)
    a, b = net_ce(), net_ce()
    a.fit(X, y, 2, 4, 0.2, "sgd", False)
    b.fit(X, y, epochs=2, batch_size=4, lr=0.2, optimizer="sgd", shuffle=False)
    assert np.array_equal(a.params, b.params)
    assert a.loss_curve_ == b.loss_curve_


def test_plain_sgd_fit_matches_naive_epochs(rng, dtype):
    """The seed algorithm through fit (fused path): in-order mini-batch SGD as the oracle."""
    X, y = classification(rng, N=30, dtype=dtype)
    net = net_ce(dtype)
    Ws = [w.astype(np.float64) for w in net.weights]
    bs = [b.astype(np.float64) for b in net.biases]
    Y = np.eye(3)[y]
    net.fit(X, y, epochs=2, batch_size=4, lr=0.3, shuffle=False)
    for _ in range(2):
        Ws, bs = naive.sgd_epoch(Ws, bs, ["tanh", "softmax"], "cross_entropy", X, Y, 0.3, 4)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    for l in range(2):
        np.testing.assert_allclose(net.weights[l], Ws[l], rtol=tol, atol=tol)
        np.testing.assert_allclose(net.biases[l], bs[l], rtol=tol, atol=tol)


def test_loss_curve_accumulates_over_fits(rng):
    X, y = classification(rng)
    net = net_ce()
    net.fit(X, y, epochs=2, batch_size=8)
    net.fit(X, y, epochs=1, batch_size=8)
    assert len(net.loss_curve_) == 3 and len(net.history_) == 1
    assert net.history_.epoch == [3] and net.n_epochs_ == 3


# ---- the general driver against naive and torch ----------------------------------------------
def naive_train(net, X, Y, epochs, batch_size, opt_step, sw=None):
    """In-order mini-batch training in float64 with the naive gradients; opt_step(params,
    grads, t) updates a flat float64 parameter vector."""
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    shapes = [w.shape for w in net.weights]
    params = net.params.astype(np.float64)

    def unflatten(p):
        Ws, bs, off = [], [], 0
        for (o, i) in shapes:
            Ws.append(p[off:off + o * i].reshape(o, i))
            off += o * i
            bs.append(p[off:off + o])
            off += o
        return Ws, bs

    t = 0
    for _ in range(epochs):
        for s in range(0, len(X), batch_size):
            Ws, bs = unflatten(params)
            xb, yb = X[s:s + batch_size], Y[s:s + batch_size]
            if sw is None:
                dWs, dbs = naive.network_gradients(Ws, bs, acts, net.loss_name, xb, yb)
            else:  # weighted mean of per-sample gradients
                wb = sw[s:s + batch_size]
                dWs = [np.zeros(sh) for sh in shapes]
                dbs = [np.zeros(sh[0]) for sh in shapes]
                for r in range(len(xb)):
                    gW, gb = naive.network_gradients(Ws, bs, acts, net.loss_name,
                                                     xb[r:r + 1], yb[r:r + 1])
                    for l in range(len(shapes)):
                        dWs[l] += wb[r] * gW[l] / wb.sum()
                        dbs[l] += wb[r] * gb[l] / wb.sum()
            grads = np.concatenate([np.concatenate([dW.ravel(), db]) for dW, db in
                                    zip(dWs, dbs)])
            t += 1
            params = opt_step(params, grads, t)
    return params


def test_adam_fit_matches_naive(rng):
    X, y = classification(rng, N=26)
    net = net_ce()
    Y = np.eye(3)[y]
    state = {"m": 0.0, "v": 0.0}

    def adam(p, g, t, lr=0.01, b1=0.9, b2=0.999, eps=1e-8, wd=0.001):
        g = g + wd * p
        state["m"] = b1 * state["m"] + (1 - b1) * g
        state["v"] = b2 * state["v"] + (1 - b2) * g * g
        return p - lr * (state["m"] / (1 - b1 ** t)) / (np.sqrt(state["v"] / (1 - b2 ** t))
                                                       + eps)

    expect = naive_train(net, X, Y, 3, 8, adam)
    net.fit(X, y, epochs=3, batch_size=8, optimizer=optim.Adam(lr=0.01, weight_decay=0.001),
            shuffle=False)
    np.testing.assert_allclose(net.params, expect, rtol=1e-10, atol=1e-12)
    assert net.optimizer_.step_count == 3 * 4


@pytest.mark.parametrize("fast", [True, False], ids=["sgd-fused", "momentum-driver"])
def test_sample_weight_matches_naive(rng, fast):
    X, Y = regression(rng, N=23)
    sw = rng.uniform(0.0, 2.0, size=len(X))
    sw[3] = 0.0
    net = fastbp.MLP([4, 6, 2], activation="tanh", loss="mse", dtype="float64", seed=1)
    momentum = 0.0 if fast else 0.7
    vel = {"v": 0.0}

    def sgd(p, g, t, lr=0.2):
        vel["v"] = momentum * vel["v"] + g
        return p - lr * vel["v"]

    expect = naive_train(net, X, Y, 2, 5, sgd, sw=sw)
    net.fit(X, Y, epochs=2, batch_size=5, lr=0.2, shuffle=False, sample_weight=sw,
            optimizer={"name": "sgd", "momentum": momentum})
    np.testing.assert_allclose(net.params, expect, rtol=1e-10, atol=1e-12)


def test_integer_sample_weights_equal_repeated_samples(rng):
    """Full-batch: weight 2 on a sample is the same as the sample twice (loss and step)."""
    X, y = classification(rng, N=12)
    sw = np.ones(12)
    sw[[2, 7]] = 2.0
    rep = np.concatenate([np.arange(12), [2, 7]])
    a, b = net_ce(), net_ce()
    ha = a.fit(X, y, epochs=3, batch_size=12, lr=0.5, shuffle=False, sample_weight=sw)
    hb = b.fit(X[rep], y[rep], epochs=3, batch_size=14, lr=0.5, shuffle=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)


def test_unit_sample_weights_change_nothing(rng):
    X, y = classification(rng)
    a, b = net_ce(), net_ce()
    a.fit(X, y, epochs=2, batch_size=8, optimizer="adam")
    b.fit(X, y, epochs=2, batch_size=8, optimizer="adam", sample_weight=np.ones(len(X)))
    assert np.array_equal(a.params, b.params)
    assert a.loss_curve_ == b.loss_curve_


@needs_torch
@pytest.mark.parametrize("spec", ["adam", "adamw", "nesterov"])
def test_fit_matches_torch_training(rng, spec):
    """A whole training run against torch.nn + torch.optim, same batches, float64."""
    X, y = classification(rng, N=40)
    net = net_ce(sizes=(5, 7, 6, 3))
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    with torch.no_grad():
        for layer, W, b in zip(model[::2], net.weights, net.biases):
            layer.weight.copy_(torch.from_numpy(W.copy()))
            layer.bias.copy_(torch.from_numpy(b.copy()))
    if spec == "adam":
        ours = optim.Adam(lr=0.02, weight_decay=0.01, schedule=optim.StepLR(2, 0.5))
        theirs = torch.optim.Adam(model.parameters(), lr=0.02, weight_decay=0.01)
    elif spec == "adamw":
        ours = optim.AdamW(lr=0.02, weight_decay=0.1, schedule=optim.StepLR(2, 0.5))
        theirs = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.1)
    else:
        ours = optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01,
                         schedule=optim.StepLR(2, 0.5))
        theirs = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                                 weight_decay=0.01)
    sched = torch.optim.lr_scheduler.StepLR(theirs, 2, 0.5)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(4):
        for s in range(0, 40, 16):
            theirs.zero_grad()
            torch.nn.functional.cross_entropy(model(Xt[s:s + 16]), yt[s:s + 16]).backward()
            theirs.step()
        sched.step()
    hist = net.fit(X, y, epochs=4, batch_size=16, optimizer=ours, shuffle=False)
    assert hist.lr == pytest.approx([0.02, 0.02, 0.01, 0.01] if spec != "nesterov"
                                    else [0.1, 0.1, 0.05, 0.05])
    for layer, W, b in zip(model[::2], net.weights, net.biases):
        np.testing.assert_allclose(W, layer.weight.detach().numpy(), rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(b, layer.bias.detach().numpy(), rtol=1e-9, atol=1e-11)


# ---- partial_fit and resuming -----------------------------------------------------------------
@pytest.mark.parametrize("spec,lr", OPTIMIZER_SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("batch_size", [1, 7])
def test_partial_fit_equals_fit_bitwise(rng, spec, lr, batch_size, dtype):
    X, y = classification(rng, N=40, dtype=dtype)
    sw = rng.uniform(0.5, 1.5, size=len(X)) if spec == "adam" else None
    a, b = net_ce(dtype), net_ce(dtype)
    a.fit(X, y, epochs=4, batch_size=batch_size, lr=lr, optimizer=spec, sample_weight=sw,
          validation_data=(X[:10], y[:10]))
    for _ in range(4):
        b.partial_fit(X, y, batch_size=batch_size, lr=lr, optimizer=spec, sample_weight=sw,
                      validation_data=(X[:10], y[:10]))
    assert np.array_equal(a.params, b.params)
    assert a.loss_curve_ == b.loss_curve_
    assert a.history_.lr == b.history_.lr and a.history_.val_loss == b.history_.val_loss
    assert b.history_.epoch == [1, 2, 3, 4] and b.n_steps_ == a.n_steps_
    assert b.optimizer_.step_count == a.optimizer_.step_count
    assert b.optimizer_.epoch_count == 4


def test_partial_fit_continues_and_restarts_optimizer(rng):
    X, y = classification(rng)
    net = net_ce()
    net.partial_fit(X, y, batch_size=8, optimizer="adam")
    opt = net.optimizer_
    net.partial_fit(X, y, batch_size=8)  # None continues
    net.partial_fit(X, y, batch_size=8, optimizer=optim.Adam())  # same config continues
    assert net.optimizer_ is opt and opt.step_count == 27 and opt.epoch_count == 3
    net.partial_fit(X, y, batch_size=8, lr=0.005)  # a new base lr, state kept
    assert net.optimizer_ is opt and opt.lr == 0.005 and opt.step_count == 36
    net.partial_fit(X, y, batch_size=8, optimizer="sgd")  # a different optimizer: fresh
    assert isinstance(net.optimizer_, optim.SGD) and net.optimizer_.step_count == 9
    fresh = net_ce()
    fresh.partial_fit(X, y, batch_size=8)
    assert fresh.optimizer_.get_config() == optim.SGD(lr=0.1).get_config()
    net.fit(X, y, epochs=1, batch_size=8, optimizer=opt)  # fit: a fresh copy of the template
    assert net.optimizer_ is not opt and net.optimizer_.step_count == 9


@pytest.mark.parametrize("spec,lr", OPTIMIZER_SPECS[1:], ids=SPEC_IDS[1:])
def test_training_state_resumes_bitwise(rng, spec, lr):
    """What a saved model needs besides params: get/set_training_state (plain data)."""
    X, y = classification(rng)
    a = net_ce()
    for _ in range(5):
        a.partial_fit(X, y, batch_size=8, lr=lr, optimizer=spec)
    b = net_ce()
    for _ in range(2):
        b.partial_fit(X, y, batch_size=8, lr=lr, optimizer=spec)
    params, state = b.params.copy(), b.get_training_state()
    c = net_ce(seed=99)
    c.params[...] = params
    c.set_training_state(state)
    assert c.n_epochs_ == 2 and c.rng_state == b.rng_state
    for _ in range(3):
        c.partial_fit(X, y, batch_size=8, lr=lr, optimizer=spec)
    assert np.array_equal(a.params, c.params)
    assert a.loss_curve_ == c.loss_curve_ and a.history_.epoch == c.history_.epoch


def test_pickled_model_continues_bitwise(rng):
    X, y = classification(rng)
    a = net_ce()
    a.partial_fit(X, y, batch_size=8, optimizer="adam")
    b = pickle.loads(pickle.dumps(a))
    a.partial_fit(X, y, batch_size=8)
    b.partial_fit(X, y, batch_size=8)
    assert np.array_equal(a.params, b.params)


def test_history_round_trips_as_plain_data(rng):
    X, y = classification(rng)
    net = net_ce()
    hist = net.fit(X, y, epochs=2, batch_size=8)
    data = hist.to_dict()
    assert all(isinstance(v, list) for k, v in data.items() if k in History.KEYS)
    again = History.from_dict(data)
    assert again.to_dict()["loss"] == data["loss"]
    assert np.isnan(again.val_loss).all() and not again.has_validation


# ---- reproducibility --------------------------------------------------------------------------
@pytest.mark.parametrize("spec,lr", [OPTIMIZER_SPECS[0], OPTIMIZER_SPECS[3]], ids=["sgd", "adam"])
def test_same_random_state_same_weights(rng, spec, lr):
    X, y = classification(rng)
    a, b = net_ce(seed=3), net_ce(seed=3)
    a.fit(X, y, epochs=3, batch_size=5, lr=lr, optimizer=spec, random_state=11)
    b.fit(X, y, epochs=3, batch_size=5, lr=lr, optimizer=spec, random_state=11)
    assert np.array_equal(a.params, b.params)
    c = net_ce(seed=3)
    c.fit(X, y, epochs=3, batch_size=5, lr=lr, optimizer=spec, random_state=12)
    assert not np.array_equal(a.params, c.params)


@pytest.mark.parametrize("spec,lr", OPTIMIZER_SPECS[:4], ids=SPEC_IDS[:4])
@pytest.mark.parametrize("deterministic", [False, True])
def test_thread_count_does_not_change_results(rng, num_threads, spec, lr, deterministic,
                                              dtype):
    """Big enough for the threaded kernels (64 x 96 x 10 layers, batches of 32)."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2 to compare thread counts")
    X = rng.standard_normal((100, 64)).astype(dtype)
    y = rng.integers(0, 10, size=100)
    results = []
    for n in (1, 2):
        with num_threads(n):
            net = fastbp.MLP([64, 96, 10], activation="relu", loss="cross_entropy", dtype=dtype,
                             seed=0)
            net.fit(X, y, epochs=2, batch_size=32, lr=lr, optimizer=spec, random_state=0,
                    deterministic=deterministic)
            results.append((net.params.copy(), list(net.loss_curve_)))
    assert np.array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


# ---- callbacks, early stopping, schedules in fit -------------------------------------------
def test_function_callback_sees_epoch_history_model_and_can_stop(rng):
    X, y = classification(rng)
    net = net_ce()
    seen = []

    def cb(epoch, history, model):
        seen.append((epoch, len(history), model is net))
        return epoch == 3

    hist = net.fit(X, y, epochs=10, batch_size=8, callbacks=[cb])
    assert seen == [(1, 1, True), (2, 2, True), (3, 3, True)]
    assert len(hist) == 3 and hist.stopped_epoch == 3 and net.n_epochs_ == 3


def test_callback_object_hooks(rng):
    X, y = classification(rng)
    calls = []

    class Recorder(Callback):
        def on_train_begin(self, model, history):
            calls.append(("begin", len(history)))

        def on_epoch_end(self, epoch, history, model):
            calls.append(("epoch", epoch))

        def on_train_end(self, model, history):
            calls.append(("end", len(history)))

    net_ce().fit(X, y, epochs=2, batch_size=8, callbacks=Recorder())
    assert calls == [("begin", 0), ("epoch", 1), ("epoch", 2), ("end", 2)]


def test_early_stopping_stops_and_restores_best_weights(rng):
    """Validation targets are the wrong labels: the validation loss gets worse as the net
    learns the training labels, so the best epoch comes early and training stops
    ``patience`` epochs later with the weights of the best epoch back in place."""
    X, y = classification(rng, N=80)
    y_wrong = (y + 1) % 3
    net = net_ce()
    snapshots = {}

    def keep(epoch, history, model):
        snapshots[epoch] = model.params.copy()

    es = EarlyStopping(patience=3)
    hist = net.fit(X, y, epochs=50, batch_size=8, lr=0.2, callbacks=[keep], early_stopping=es,
                   validation_data=(X, y_wrong))
    best = int(np.argmin(hist.val_loss)) + 1
    assert es.best_epoch == best and hist.best_epoch == best
    assert hist.stopped_epoch == best + 3 == len(hist) == es.stopped_epoch
    assert len(hist) < 50
    assert np.array_equal(net.params, snapshots[best])
    assert net.loss(X, y_wrong) == pytest.approx(min(hist.val_loss), rel=1e-12)


def test_early_stopping_forms_and_monitors(rng):
    X, y = classification(rng)
    net = net_ce()
    hist = net.fit(X, y, epochs=4, batch_size=8, early_stopping=2)  # training loss, improving
    assert len(hist) == 4 and hist.stopped_epoch is None and hist.best_epoch is None
    es = EarlyStopping(monitor="val_metric", patience=1, restore_best_weights=False)
    net.fit(X, y, epochs=30, batch_size=8, lr=1e-6, early_stopping=es, validation_split=0.25)
    # the accuracy cannot move at this learning rate: epochs 5 (best) and 6 (stop) of the model
    assert es.best_epoch == 5 and es.stopped_epoch == 6 == net.n_epochs_
    with pytest.raises(ValueError, match="validation"):
        net.fit(X, y, epochs=2, early_stopping=EarlyStopping(monitor="val_loss"))


def test_plateau_schedule_in_fit(rng):
    X, y = classification(rng)
    net = net_ce()
    # at this learning rate the loss improves by far less than the relative threshold 1e-4
    opt = optim.SGD(lr=1e-6, schedule=optim.ReduceLROnPlateau(factor=0.5, patience=1))
    hist = net.fit(X, y, epochs=6, batch_size=8, optimizer=opt)
    assert hist.lr == pytest.approx([1e-6, 1e-6, 1e-6, 5e-7, 5e-7, 2.5e-7], rel=1e-12)
    with pytest.raises(ValueError, match="validation"):
        net.fit(X, y, optimizer=optim.SGD(schedule=optim.ReduceLROnPlateau(monitor="val_loss")))


def test_validation_split(rng):
    X, y = classification(rng, N=40)
    a, b = net_ce(), net_ce()
    ha = a.fit(X, y, epochs=2, batch_size=8, validation_split=0.25, random_state=5)
    hb = b.fit(X, y, epochs=2, batch_size=8, validation_split=0.25, random_state=5)
    assert ha.has_validation and ha.val_loss == hb.val_loss
    assert a.n_steps_ == 2 * 4  # 30 training samples in batches of 8
    assert np.array_equal(a.params, b.params)


# ---- progress and verbose ---------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["sgd", "adam"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_progress_does_not_change_results(rng, spec, batch_size, capsys):
    X, y = classification(rng, N=50)
    sw = rng.uniform(0.5, 2, size=50) if spec == "adam" and batch_size == 3 else None
    a, b = net_ce(), net_ce()
    a.fit(X, y, epochs=2, batch_size=batch_size, optimizer=spec, sample_weight=sw)
    b.fit(X, y, epochs=2, batch_size=batch_size, optimizer=spec, sample_weight=sw,
          progress=True)
    assert np.array_equal(a.params, b.params)
    np.testing.assert_allclose(a.loss_curve_, b.loss_curve_, rtol=1e-12)
    assert "epoch 2" in capsys.readouterr().err


def test_progress_plain_fallback_and_verbose(rng, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm fails
    X, y = classification(rng)
    net_ce().fit(X, y, epochs=2, batch_size=8, progress=True, verbose=1,
                 validation_data=(X, y))
    captured = capsys.readouterr()
    assert "epoch 1 [" in captured.err and "samples/s" in captured.err
    lines = [l for l in captured.out.splitlines() if l.startswith("epoch")]
    assert len(lines) == 2
    assert "val_accuracy" in lines[0] and "samples/s" in lines[0] and "lr 0.1" in lines[0]


def test_quiet_by_default(rng, capsys):
    X, y = classification(rng)
    net_ce().fit(X, y, epochs=2, batch_size=8)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---- scores ---------------------------------------------------------------------------------
def test_classifier_scores(rng):
    from sklearn.metrics import accuracy_score
    X, y = classification(rng)
    net = net_ce()
    net.fit(X, y, epochs=5, batch_size=8, optimizer="adam", lr=0.02)
    proba = net.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(np.argmax(proba, axis=1), net.predict(X))
    assert net.score(X, y) == pytest.approx(accuracy_score(y, net.predict(X)))
    assert net.score(X, np.eye(3)[y]) == net.score(X, y)
    w = rng.uniform(size=len(y))
    assert net.score(X, y, sample_weight=w) == pytest.approx(
        accuracy_score(y, net.predict(X), sample_weight=w))


def test_binary_scores(rng):
    from sklearn.metrics import accuracy_score
    X = rng.standard_normal((60, 3))
    y = (X[:, 0] > 0).astype(int)
    net = fastbp.MLP([3, 4, 1], activation="tanh", loss="bce", dtype="float64")
    net.fit(X, y, epochs=5, batch_size=4, lr=0.3)
    proba = net.predict_proba(X)
    assert proba.shape == (60, 2)
    np.testing.assert_allclose(proba[:, 1], net.forward(X)[:, 0])
    assert np.array_equal(np.argmax(proba, axis=1), net.predict(X))
    assert net.score(X, y) == pytest.approx(accuracy_score(y, net.predict(X)))
    assert net.score(X, y) > 0.8


def test_regression_score_is_r2(rng):
    from sklearn.metrics import r2_score
    X, Y = regression(rng)
    net = fastbp.MLP([4, 8, 2], activation="tanh", output_activation="identity", loss="mse",
                     dtype="float64")
    hist = net.fit(X, Y, epochs=5, batch_size=8, optimizer="adam", lr=0.01,
                   validation_data=(X, Y))
    assert hist.metric == "r2"
    assert net.score(X, Y) == pytest.approx(r2_score(Y, net.predict(X)), rel=1e-12)
    assert hist.val_metric[-1] == pytest.approx(net.score(X, Y), rel=1e-12)
    w = rng.uniform(size=len(Y))
    assert net.score(X, Y, sample_weight=w) == pytest.approx(
        r2_score(Y, net.predict(X), sample_weight=w), rel=1e-12)
    with pytest.raises(ValueError, match="predict_proba"):
        net.predict_proba(X)


def test_digits_adam_reaches_96_percent():
    X_train, X_test, y_train, y_test = fastbp.datasets.load_digits_split(dtype="float32")
    net = fastbp.MLP([64, 64, 10], activation="tanh", loss="cross_entropy", dtype="float32",
                     seed=0)
    hist = net.fit(X_train, y_train, epochs=30, batch_size=32, optimizer=optim.Adam(lr=1e-2),
                   random_state=0, validation_data=(X_test, y_test))
    assert len(hist) == 30
    assert net.score(X_test, y_test) >= 0.96  # the final weights, no selection on the test set
    assert hist.val_metric[-1] == net.score(X_test, y_test)
    assert net.params.dtype == np.float32


# ---- argument checks -----------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,exc,match", [
    ({"epochs": 0}, ValueError, "epochs"),
    ({"epochs": 1.5}, TypeError, "epochs"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"lr": -0.1}, ValueError, "lr"),
    ({"lr": "0.1"}, TypeError, "lr"),
    ({"optimizer": "lbfgs"}, ValueError, "optimizer"),
    ({"optimizer": optim.Adam(), "lr": 0.1}, ValueError, "lr"),
    ({"shuffle": "yes"}, TypeError, "shuffle"),
    ({"random_state": -1}, ValueError, "random_state"),
    ({"random_state": 1.5}, TypeError, "random_state"),
    ({"validation_split": 1.0}, ValueError, "validation_split"),
    ({"validation_split": -0.1}, ValueError, "validation_split"),
    ({"validation_split": 0.999}, ValueError, "validation_split"),
    ({"validation_split": 0.2, "validation_data": "V"}, ValueError, "not both"),
    ({"validation_data": "V"}, TypeError, "validation_data"),
    ({"validation_data": ("a", "b", "c", "d")}, TypeError, "validation_data"),
    ({"validation_data": (np.zeros((3, 4)), np.zeros(3))}, ValueError, "validation_data"),
    ({"validation_data": (np.zeros((3, 5)), np.zeros(4))}, ValueError, "validation_data"),
    ({"sample_weight": -np.ones(20)}, ValueError, "sample_weight"),
    ({"sample_weight": np.ones(19)}, ValueError, "sample_weight"),
    ({"sample_weight": np.zeros(20)}, ValueError, "sample_weight"),
    ({"sample_weight": np.full(20, np.nan)}, ValueError, "sample_weight"),
    ({"early_stopping": "yes"}, TypeError, "early_stopping"),
    ({"early_stopping": 0}, ValueError, "patience"),
    ({"callbacks": [1]}, TypeError, "callbacks"),
    ({"callbacks": 3}, TypeError, "callbacks"),
    ({"progress": 1}, TypeError, "progress"),
    ({"verbose": -1}, ValueError, "verbose"),
    ({"deterministic": None}, TypeError, "deterministic"),
])
def test_fit_rejects_bad_arguments(rng, kwargs, exc, match):
    X, y = classification(rng, N=20)
    net = net_ce()
    before = net.params.copy()
    with pytest.raises(exc, match=match):
        net.fit(X, y, **kwargs)
    assert np.array_equal(net.params, before) and net.n_epochs_ == 0


def test_partial_fit_rejects_bad_arguments(rng):
    X, y = classification(rng, N=20)
    net = net_ce()
    with pytest.raises(ValueError, match="batch_size"):
        net.partial_fit(X, y, batch_size=0)
    with pytest.raises(ValueError, match="lr"):
        net.partial_fit(X, y, lr=0)
    net.partial_fit(X, y)
    with pytest.raises(ValueError, match="lr"):
        net.partial_fit(X, y, lr=-1)
    with pytest.raises(TypeError):
        net.partial_fit(X, y, 8)  # training options are keyword-only
    with pytest.raises(TypeError, match="rng_state"):
        net.rng_state = 5
    with pytest.raises(ValueError, match="lacks"):
        net.set_training_state({"n_epochs": 1})


def test_divergence_is_reported(rng):
    X = rng.standard_normal((50, 4))
    Y = 100 * rng.standard_normal((50, 2))
    net = fastbp.MLP([4, 8, 2], activation="identity", loss="mse", dtype="float64")
    with pytest.raises(FloatingPointError, match="diverged"):
        net.fit(X, Y, epochs=5, batch_size=10, lr=10.0)


def test_verbose_line_format(rng):
    X, y = classification(rng)
    out = io.StringIO()
    from fastbp.callbacks import Progress
    show = Progress(False, 1, "accuracy", stream=out)
    show.end_epoch({"epoch": 4, "loss": 0.5, "val_loss": float("nan"), "val_metric": float("nan"),
                    "lr": 0.01, "seconds": 0.25, "samples_per_s": 1234.0})
    assert out.getvalue() == "epoch 4  loss 0.5  lr 0.01  0.250 s  1,234 samples/s\n"
