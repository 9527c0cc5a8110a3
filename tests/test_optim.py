"""Optimizers and learning-rate schedules (fastbp.optim, fastbp.kernels.optim): each against a
naive NumPy version over several steps, against torch.optim where it is installed, and their
state as plain data."""
import math

import numpy as np
import pytest

from fastbp import optim
from fastbp.kernels import optim as kopt
from fastbp.kernels.network import SERIAL_ONLY

try:
    import torch
except ImportError:  # pragma: no cover - torch is in the test extra
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

N_STEPS = 7


# ---- naive oracles (float64, written from the formulas in the docstrings) -------------------
def naive_sgd(p, grads, lrs, momentum=0.0, nesterov=False, weight_decay=0.0):
    p = np.array(p, dtype=np.float64)
    v = np.zeros_like(p)
    for g, lr in zip(grads, lrs):
        g = np.asarray(g, dtype=np.float64) + weight_decay * p
        if momentum:
            v = momentum * v + g
            g = g + momentum * v if nesterov else v
        p = p - lr * g
    return p


def naive_adam(p, grads, lrs, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
               decoupled=False):
    p = np.array(p, dtype=np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        g = np.asarray(g, dtype=np.float64)
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.05, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}),
    ("adam", {"lr": 1e-2}),
    ("adam", {"lr": 3e-3, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "weight_decay": 0.05}),
    ("adamw", {"lr": 1e-2, "weight_decay": 0.1}),
]
CASE_IDS = [f"{name}-{'-'.join(k for k in kw if k != 'lr') or 'plain'}" for name, kw in CASES]


def naive_for(name, kw, p, grads, lrs):
    kw = {k: v for k, v in kw.items() if k != "lr"}
    if name == "sgd":
        return naive_sgd(p, grads, lrs, **kw)
    return naive_adam(p, grads, lrs, decoupled=(name == "adamw"), **kw)


def problem(rng, dtype, P=37, steps=N_STEPS):
    p0 = rng.standard_normal(P).astype(dtype)
    grads = [rng.standard_normal(P).astype(dtype) for _ in range(steps)]
    return p0, grads


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_optimizer_matches_naive(name, kw, dtype, rng):
    p0, grads = problem(rng, dtype)
    opt = optim.make_optimizer({"name": name, **kw})
    p = p0.copy()
    for g in grads:
        opt.step(p, g)
    assert p.dtype == dtype
    assert opt.step_count == len(grads)
    expect = naive_for(name, kw, p0, grads, [kw["lr"]] * len(grads))
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(p, expect, rtol=tol, atol=tol)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_optimizer_with_schedule_matches_naive(name, kw, rng):
    """Steps spread over epochs: the learning rate of each step comes from the schedule."""
    p0, grads = problem(rng, np.float64, steps=9)
    sched = optim.StepLR(step_size=2, gamma=0.5)
    opt = optim.make_optimizer({"name": name, **kw, "schedule": sched})
    p = p0.copy()
    lrs = []
    for k, g in enumerate(grads):
        lrs.append(kw["lr"] * 0.5 ** ((k // 3) // 2))
        assert opt.current_lr() == pytest.approx(lrs[-1], rel=1e-15)
        opt.step(p, g)
        if k % 3 == 2:  # three steps per epoch
            opt.end_epoch({"loss": 1.0})
    np.testing.assert_allclose(p, naive_for(name, kw, p0, grads, lrs), rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_optimizer_matches_torch(name, kw, rng):
    p0, grads = problem(rng, np.float64)
    opt = optim.make_optimizer({"name": name, **kw})
    p = p0.copy()
    for g in grads:
        opt.step(p, g)
    tp = torch.tensor(p0, dtype=torch.float64, requires_grad=True)
    if name == "sgd":
        topt = torch.optim.SGD([tp], lr=kw["lr"], momentum=kw.get("momentum", 0.0),
                               nesterov=kw.get("nesterov", False),
                               weight_decay=kw.get("weight_decay", 0.0))
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        topt = cls([tp], lr=kw["lr"], betas=(kw.get("beta1", 0.9), kw.get("beta2", 0.999)),
                   eps=kw.get("eps", 1e-8), weight_decay=kw.get("weight_decay", opt.weight_decay))
    for g in grads:
        tp.grad = torch.tensor(g, dtype=torch.float64)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_update_kernels_serial_and_threaded_agree_bitwise(name, kw, dtype, rng):
    """Each element is updated on its own: the threaded kernel equals the serial one."""
    P = 70_001
    p0, grads = problem(rng, dtype, P=P, steps=3)
    opt = optim.make_optimizer({"name": name, **kw})
    results = []
    for min_par in (0, SERIAL_ONLY):
        p = p0.copy()
        kind, hp, s1, s2 = opt.copy().kernel_args(P, dtype)
        for t, g in enumerate(grads, start=1):
            kopt.apply_update(p, g, kind, hp, s1, s2, t, min_par)
        results.append(p)
    assert np.array_equal(results[0], results[1])


# ---- schedules ------------------------------------------------------------------------------
def lrs_of(schedule, base, epochs, metrics=None):
    opt = optim.SGD(lr=base, schedule=schedule)
    out = []
    for e in range(epochs):
        out.append(opt.current_lr())
        opt.end_epoch({"loss": 1.0 if metrics is None else metrics[e]})
    return out


def test_schedules_match_formulas():
    base = 0.2
    assert lrs_of(None, base, 4) == [base] * 4
    assert lrs_of("constant", base, 3) == [base] * 3
    np.testing.assert_allclose(lrs_of(optim.StepLR(3, gamma=0.5), base, 8),
                               [base * 0.5 ** (e // 3) for e in range(8)], rtol=1e-15)
    np.testing.assert_allclose(lrs_of(optim.ExponentialLR(0.9), base, 6),
                               [base * 0.9 ** e for e in range(6)], rtol=1e-15)
    cos = [0.01 + (base - 0.01) * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(6)]
    np.testing.assert_allclose(lrs_of(optim.CosineLR(5, eta_min=0.01), base, 8),
                               cos + [0.01, 0.01], rtol=1e-15)


def naive_plateau(base, metrics, factor, patience, threshold, cooldown, min_lr):
    lr, best, bad, cool, out = base, math.inf, 0, 0, []
    for x in metrics:
        out.append(lr)
        if x < best * (1 - threshold):
            best, bad = x, 0
        else:
            bad += 1
        if cool > 0:
            cool, bad = cool - 1, 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            if lr - new > 1e-8:
                lr = new
            cool, bad = cooldown, 0
    return out


PLATEAU_METRICS = [1.0, 0.9, 0.95, 0.9, 0.91, 0.92, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9,
                   0.79995, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]
PLATEAU_KW = [dict(factor=0.5, patience=2, threshold=1e-4, cooldown=0, min_lr=0.0),
              dict(factor=0.5, patience=1, threshold=1e-3, cooldown=2, min_lr=0.02),
              dict(factor=0.1, patience=0, threshold=0.0, cooldown=0, min_lr=0.0)]


@pytest.mark.parametrize("kw", PLATEAU_KW)
def test_plateau_matches_naive(kw):
    got = lrs_of(optim.ReduceLROnPlateau(**kw), 0.1, len(PLATEAU_METRICS), PLATEAU_METRICS)
    assert got == pytest.approx(naive_plateau(0.1, PLATEAU_METRICS, **kw), rel=1e-15)
    assert min(got) < 0.1  # the sequences do trigger reductions


@needs_torch
@pytest.mark.parametrize("kw", PLATEAU_KW)
def test_plateau_matches_torch(kw):
    got = lrs_of(optim.ReduceLROnPlateau(**kw), 0.1, len(PLATEAU_METRICS), PLATEAU_METRICS)
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode="min", **kw)
    expect = []
    for x in PLATEAU_METRICS:
        expect.append(topt.param_groups[0]["lr"])
        sched.step(x)
    np.testing.assert_allclose(got, expect, rtol=1e-14)


@needs_torch
@pytest.mark.parametrize("case", ["step", "exponential", "cosine"])
def test_schedules_match_torch(case):
    epochs = 12
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.3)
    lrs = torch.optim.lr_scheduler
    if case == "step":
        ours, theirs = optim.StepLR(4, gamma=0.3), lrs.StepLR(topt, step_size=4, gamma=0.3)
    elif case == "exponential":
        ours, theirs = optim.ExponentialLR(0.8), lrs.ExponentialLR(topt, gamma=0.8)
    else:  # compared up to T_max, where both anneal the same way
        ours, theirs = optim.CosineLR(epochs, 0.001), lrs.CosineAnnealingLR(topt, epochs, 0.001)
    expect = []
    for _ in range(epochs):
        expect.append(topt.param_groups[0]["lr"])
        topt.step()
        theirs.step()
    np.testing.assert_allclose(lrs_of(ours, 0.3, epochs), expect, rtol=1e-12)


# ---- configuration and state as plain data --------------------------------------------------
SCHEDULE_SPECS = [None, optim.StepLR(2, 0.5), optim.ExponentialLR(0.9), optim.CosineLR(4, 0.01),
                  optim.ReduceLROnPlateau(factor=0.5, patience=0)]


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
@pytest.mark.parametrize("schedule", SCHEDULE_SPECS, ids=lambda s: getattr(s, "name", "none"))
def test_config_is_plain_and_rebuilds(name, kw, schedule):
    opt = optim.make_optimizer({"name": name, **kw, "schedule": schedule})
    config = opt.get_config()
    assert all(isinstance(k, str) for k in config)
    assert all(isinstance(v, (str, int, float, bool)) for v in config.values()), config
    again = optim.make_optimizer(config)
    assert type(again) is type(opt)
    assert again.get_config() == config
    assert again.schedule == opt.schedule
    assert repr(opt).startswith(type(opt).__name__ + "(")


@pytest.mark.parametrize("name,kw", CASES, ids=CASE_IDS)
def test_state_arrays_resume_bitwise(name, kw, dtype, rng):
    """Saving the state mid-way and loading it into a rebuilt optimizer continues exactly."""
    p0, grads = problem(rng, dtype, steps=8)
    metrics = [1.0, 1.0, 1.0, 1.0]
    sched = optim.ReduceLROnPlateau(factor=0.5, patience=0)

    def run(opt, p, gs, epochs):
        for e, g in enumerate(gs):
            opt.step(p, g)
            if e % 2 == 1:
                opt.end_epoch({"loss": metrics[epochs.pop(0)]})

    full = optim.make_optimizer({"name": name, **kw, "schedule": sched})
    p_full = p0.copy()
    run(full, p_full, grads, [0, 1, 2, 3])

    first = optim.make_optimizer({"name": name, **kw, "schedule": sched})
    p = p0.copy()
    run(first, p, grads[:4], [0, 1])
    state = first.state_arrays()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    assert int(state["step"]) == 4 and int(state["epoch"]) == 2
    resumed = optim.make_optimizer(first.get_config())
    resumed.load_state_arrays(state)
    assert resumed.current_lr() == first.current_lr()
    run(resumed, p, grads[4:], [2, 3])
    assert np.array_equal(p, p_full)
    assert resumed.current_lr() == full.current_lr()


def test_state_arrays_are_copies_and_checked(rng):
    opt = optim.Adam(lr=0.01)
    p, grads = problem(rng, np.float64, steps=1)
    opt.step(p, grads[0])
    state = opt.state_arrays()
    assert set(state) == {"step", "epoch", "m", "v"}
    state["m"][:] = 123.0
    assert not np.any(opt.state_arrays()["m"] == 123.0)
    with pytest.raises(ValueError, match="unknown optimizer state"):
        optim.Adam().load_state_arrays({**state, "velocity": state["m"]})
    with pytest.raises(ValueError, match="lacks"):
        optim.Adam().load_state_arrays({"m": state["m"]})
    short = optim.Adam()
    short.load_state_arrays({**state, "m": state["m"][:5], "v": state["v"][:5]})
    with pytest.raises(ValueError, match="parameters"):
        short.step(p, grads[0])
    f32 = optim.Adam()
    f32.load_state_arrays(state)
    with pytest.raises(TypeError, match="float64"):
        f32.step(p.astype(np.float32), grads[0].astype(np.float32))


def test_sgd_without_momentum_keeps_no_buffer(rng):
    opt = optim.SGD(lr=0.1, weight_decay=0.1)
    p, grads = problem(rng, np.float32, steps=2)
    for g in grads:
        opt.step(p, g)
    assert set(opt.state_arrays()) == {"step", "epoch"}
    assert optim.SGD(lr=0.1).is_plain_sgd() and not opt.is_plain_sgd()
    assert not optim.SGD(momentum=0.5).is_plain_sgd() and not optim.Adam().is_plain_sgd()


def test_make_optimizer_forms():
    assert isinstance(optim.make_optimizer("adam"), optim.Adam)
    assert optim.make_optimizer("adam", lr=0.5).lr == 0.5
    assert optim.make_optimizer("sgd").lr == 0.1
    assert optim.make_optimizer("adamw").weight_decay == 0.01
    template = optim.SGD(lr=0.3, momentum=0.5)
    copy = optim.make_optimizer(template)
    assert copy is not template and copy.get_config() == template.get_config()
    sched = optim.make_optimizer({"name": "sgd", "schedule": {"name": "step", "step_size": 3}})
    assert sched.schedule == optim.StepLR(3)
    assert optim.make_schedule("plateau") == optim.ReduceLROnPlateau()


@pytest.mark.parametrize("call,exc,match", [
    (lambda: optim.SGD(lr=0), ValueError, "lr"),
    (lambda: optim.SGD(lr="fast"), TypeError, "lr"),
    (lambda: optim.SGD(lr=float("nan")), ValueError, "lr"),
    (lambda: optim.SGD(momentum=1.0), ValueError, "momentum"),
    (lambda: optim.SGD(momentum=-0.1), ValueError, "momentum"),
    (lambda: optim.SGD(nesterov=True), ValueError, "nesterov"),
    (lambda: optim.SGD(nesterov=1), TypeError, "nesterov"),
    (lambda: optim.SGD(weight_decay=-1), ValueError, "weight_decay"),
    (lambda: optim.Adam(beta1=1.0), ValueError, "beta1"),
    (lambda: optim.Adam(beta2=-0.5), ValueError, "beta2"),
    (lambda: optim.Adam(eps=0), ValueError, "eps"),
    (lambda: optim.make_optimizer("rmsprop"), ValueError, "optimizer"),
    (lambda: optim.make_optimizer(3), TypeError, "optimizer"),
    (lambda: optim.make_optimizer({"name": "sgd", "beta1": 0.9}), ValueError, "beta1"),
    (lambda: optim.make_optimizer({"name": "sgd", "lr": 0.1}, lr=0.2), ValueError, "lr"),
    (lambda: optim.make_optimizer(optim.Adam(), lr=0.2), ValueError, "lr"),
    (lambda: optim.StepLR(0), ValueError, "step_size"),
    (lambda: optim.StepLR(2, gamma=0), ValueError, "gamma"),
    (lambda: optim.ExponentialLR(-1.0), ValueError, "gamma"),
    (lambda: optim.CosineLR(0), ValueError, "T_max"),
    (lambda: optim.CosineLR(5, eta_min=-1), ValueError, "eta_min"),
    (lambda: optim.ReduceLROnPlateau(factor=1.0), ValueError, "factor"),
    (lambda: optim.ReduceLROnPlateau(monitor="val_acc"), ValueError, "monitor"),
    (lambda: optim.make_schedule("step"), ValueError, "step_size"),
    (lambda: optim.make_schedule("linear"), ValueError, "schedule"),
    (lambda: optim.make_schedule(0.5), TypeError, "schedule"),
])
def test_invalid_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_step_checks_its_arrays(rng):
    opt = optim.SGD()
    p = rng.standard_normal(5)
    with pytest.raises(ValueError, match="grads"):
        opt.step(p, np.zeros(4))
    with pytest.raises(ValueError, match="grads"):
        opt.step(p, np.zeros(5, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN"):
        opt.step(p, np.array([0, 0, np.nan, 0, 0.0]))
    with pytest.raises(TypeError, match="params"):
        opt.step(list(p), np.zeros(5))
    with pytest.raises(ValueError, match="C-contiguous"):
        opt.step(np.zeros(10)[::2], np.zeros(5))
    assert opt.step_count == 0
