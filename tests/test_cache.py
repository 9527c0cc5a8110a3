"""The on-disk compile cache (fastbp._cache): compiled on first use, one kernel set at a time.

Every scenario runs fresh interpreters on a cache folder of its own. The reference is the same
work in one process with ``FASTBP_CACHE=0`` (everything compiled in process): every process,
whatever it loaded, built or compiled before, in whatever order, must give bitwise its numbers
(numba issue 8578 and issue 17 of this project).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fastbp
from fastbp import _cache, _config
from fastbp.kernels import dense, network as knet

# Runs the steps named on the command line; prints one JSON line: each step's digest of the
# trained parameters (or outputs), the fastbp kernels compiled in this process, and how many of
# them call parallel kernels.
STEPS = textwrap.dedent("""
    import hashlib, json, sys
    from numba.core import event
    compiled = []
    class Listener(event.Listener):
        def on_start(self, ev):
            compiled.append(ev.data["dispatcher"])
        def on_end(self, ev):
            pass
    event.register("numba:compile", Listener())
    import numpy as np
    import fastbp
    from fastbp import _cache, _config

    def data(dtype):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 13)).astype(dtype)
        return X, rng.integers(0, 3, 64)

    def digest(a):
        return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]

    def step(name):
        kind, dtype = name.split("-")
        X, y = data(dtype)
        net = fastbp.MLP([13, 11, 3], dtype=dtype, seed=0)
        if kind == "sgd1":
            net.fit(X, y, epochs=2, batch_size=1, lr=0.1)
        elif kind == "sgd16":
            net.fit(X, y, epochs=2, batch_size=16, lr=0.1)
        elif kind == "adam":
            net.fit(X, y, epochs=2, batch_size=16, optimizer="adam", lr=0.01)
        elif kind == "predict":
            return digest(net.forward(X))
        return digest(net.params)

    result = {name: step(name) for name in sys.argv[1:]}
    ours = [d for d in compiled if any(d is k for k in _config.DISPATCHERS)]
    print(json.dumps({"result": result, "compiled": len(ours),
                      "parallel_callers": sum(map(_cache.calls_parallel, ours))}))
""")

ALL_STEPS = ["sgd1-float32", "sgd16-float32", "adam-float32", "sgd1-float64", "predict-float64"]


def _env(cache, **changes):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTBP_CACHE="1")
    env.pop(_cache.BUILDER_ENV, None)
    env.update(changes)
    return env


def _start(cache, steps, **env_changes):
    return subprocess.Popen([sys.executable, "-c", STEPS, *steps], env=_env(cache, **env_changes),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1]), err


def _run(cache, steps, **env_changes):
    return _finish(_start(cache, steps, **env_changes))


def _messages(stderr):
    return [line for line in stderr.splitlines() if line.startswith("fastbp: compiling")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every step in one process with caching off."""
    out, err = _run(tmp_path_factory.mktemp("unused"), ALL_STEPS, FASTBP_CACHE="0")
    assert not _messages(err)
    return out["result"]


def test_import_compiles_nothing(tmp_path):
    out, err = _run(tmp_path, [])
    assert out["compiled"] == 0 and not err
    assert not any(tmp_path.rglob("*.nbi"))


def test_any_order_of_paths_gives_the_uncached_numbers(tmp_path, reference):
    """Sets built and loaded in different orders by fresh processes on one cache: float64 after
    a process loaded float32 from disk, per-sample after mini-batch, Adam after SGD, then 1, 2
    and 3 threads on the full cache. A set is announced once, by the process that builds it;
    a process that loads says nothing and compiles no kernel that calls parallel ones."""
    built = []
    for steps in (["sgd1-float32"], ["sgd1-float32", "sgd1-float64"],
                  ["sgd16-float32", "sgd1-float32"], ["sgd16-float32", "adam-float32"],
                  ["predict-float64"]):
        out, err = _run(tmp_path, steps)
        assert out["result"] == {s: reference[s] for s in steps}, steps
        assert out["parallel_callers"] == 0, steps
        built += _messages(err)
    assert len(built) == len(set(built)) == 5, built  # per-sample x2, batches, segment, predict
    assert any("float64" in m and "per-sample" in m for m in built)
    for threads in ("1", "2", "3"):
        out, err = _run(tmp_path, ALL_STEPS, NUMBA_NUM_THREADS=threads)
        assert out["result"] == reference, threads
        assert not _messages(err) and out["parallel_callers"] == 0, err


def test_three_processes_on_an_empty_cache(tmp_path, reference):
    """Started together: one builds, the others wait for it and load; all right, and the cache
    is complete after (a fourth process compiles nothing that calls a parallel kernel)."""
    procs = [_start(tmp_path, ["sgd1-float32"]) for _ in range(3)]
    results = [_finish(p) for p in procs]
    for out, _ in results:
        assert out["result"]["sgd1-float32"] == reference["sgd1-float32"]
    assert sum(len(_messages(err)) for _, err in results) == 1
    out, err = _run(tmp_path, ["sgd1-float32"])
    assert out["result"]["sgd1-float32"] == reference["sgd1-float32"]
    assert not _messages(err) and out["parallel_callers"] == 0


def _builder_pids(cache_dir):
    """The builders working on ``cache_dir`` (not those of other test runs on the machine)."""
    pids = []
    want = f"NUMBA_CACHE_DIR={cache_dir}".encode()
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"fastbp._build" not in fh.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if want in fh.read().split(b"\0"):
                    pids.append(int(pid))
        except (OSError, ValueError):
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the builder in /proc")
def test_a_build_killed_half_way_is_built_again(tmp_path, reference):
    """SIGKILL the builder once it has written part of the set: the process that waited on it
    still finishes right (compiling in process, with a warning), and the next process rebuilds
    the set and is right too."""
    proc = _start(tmp_path, ["sgd1-float32"])
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None and not killed:
        pids = _builder_pids(tmp_path)
        if pids and any(tmp_path.rglob("*.nbi")):
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    assert killed, "the builder finished before it could be killed"
    out, err = _finish(proc)
    assert out["result"]["sgd1-float32"] == reference["sgd1-float32"]
    assert "compiling them in this process instead" in err
    assert not list(tmp_path.rglob("fastbp-set-*.json"))
    out, err = _run(tmp_path, ["sgd1-float32"])
    assert out["result"]["sgd1-float32"] == reference["sgd1-float32"]
    assert len(_messages(err)) == 1 and out["parallel_callers"] == 0
    assert len(list(tmp_path.rglob("fastbp-set-sgd-per-sample-float32-*.json"))) == 1


def test_a_set_with_a_lost_entry_is_rebuilt(tmp_path, reference):
    """A set whose marker survives an entry's loss (a cleaned folder, a lost index update): the
    process that finds the gap compiles in process, drops the marker, and the next one builds."""
    _run(tmp_path, ["predict-float64"])
    lost = list(tmp_path.rglob("*predict_into*.nbi"))
    assert lost
    for index in lost:
        index.unlink()
    out, err = _run(tmp_path, ["predict-float64"])
    assert out["result"]["predict-float64"] == reference["predict-float64"]
    assert not list(tmp_path.rglob("fastbp-set-predict-*.json"))
    out, err = _run(tmp_path, ["predict-float64"])
    assert out["result"]["predict-float64"] == reference["predict-float64"]
    assert len(_messages(err)) == 1


def test_an_edit_recompiles_only_what_can_see_it(tmp_path):
    """Kernel names carry the digest of their module and of the fastbp modules it imports: an
    edit to kernels/optim.py renames the optimizer kernels and none of the dense ones."""
    package = os.path.dirname(os.path.abspath(fastbp.__file__))
    copy = tmp_path / "fastbp"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "kernels" / "optim.py", "a") as fh:
        fh.write("\n# an edit\n")
    script = ("import fastbp, json; from fastbp.kernels import dense, optim; "
              "print(json.dumps([dense.dense_forward.py_func.__qualname__, "
              "optim.apply_update.py_func.__qualname__]))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path), FASTBP_CACHE="1",
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    dense_name, optim_name = json.loads(res.stdout)
    from fastbp.kernels import optim
    assert dense_name == dense.dense_forward.py_func.__qualname__
    assert optim_name != optim.apply_update.py_func.__qualname__


@pytest.mark.skipif(not _config.CACHE, reason="names carry digests only with caching on")
def test_every_kernel_name_carries_its_module_digest():
    for d in _config.DISPATCHERS:
        digest = _config.module_digest(d.py_func.__module__)
        assert d.py_func.__qualname__.endswith("__" + digest), d.py_func.__qualname__
    assert _config.module_digest("fastbp.kernels.dense") != _config.module_digest(
        "fastbp.kernels.optim")


def test_literal_arguments_compile_one_build():
    """A kernel called with constants and with variables of the same types is compiled once
    (``_config._plain_calls``); without it, numba compiles a build per literal."""
    import numpy as np
    from numba import njit

    def make():
        @njit
        def callee(x, k, flag):
            return x[0] + k if flag else x[0]
        return callee

    plain, literal = make(), make()
    _config._plain_calls(plain)
    for callee in (plain, literal):
        @njit
        def caller(x):
            return callee(x, 0, True) + callee(x, x.size, x.size > 0)
        assert caller(np.ones(3)) == 5.0
    assert len(plain.signatures) == 1
    assert len(literal.signatures) == 2
    for d in _config.DISPATCHERS:  # every fastbp kernel
        assert d.get_call_template.__name__ == "plain_call_template", d.py_func.__qualname__


def test_kernels_know_which_kernels_call_parallel_ones():
    assert _cache.calls_parallel(knet.train_epoch)
    assert _cache.calls_parallel(knet.train_batches)
    assert _cache.calls_parallel(knet.predict_into)
    assert not _cache.calls_parallel(dense.dense_forward)
    assert not _cache.calls_parallel(fastbp.kernels.loss_sum)


def test_warmup_checks_its_arguments():
    with pytest.raises(ValueError, match="paths: unknown kernel set 'sgd'"):
        fastbp.warmup(paths="sgd")
    with pytest.raises((TypeError, ValueError), match="dtype"):
        fastbp.warmup(dtypes="int32")


def test_warmup_builds_the_sets_named(tmp_path):
    script = ("import fastbp, json; s = fastbp.warmup('float64', paths=['predict']); "
              "print(json.dumps(s >= 0))")
    res = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert len(_messages(res.stderr)) == 1
    assert len(list(tmp_path.rglob("fastbp-set-*.json"))) == 1
    assert list(tmp_path.rglob("fastbp-set-predict-float64-*.json"))
    out, err = _run(tmp_path, ["predict-float64"])
    assert not _messages(err) and out["parallel_callers"] == 0


def test_own_copies_of_callees(tmp_path):
    """A fastbp kernel's module keeps its own copies of the kernels it calls (internal symbols,
    not weak ones that would bind to another build), so a fresh compile and a cached load run
    the same code (_config's module notes)."""
    script = textwrap.dedent("""
        import json
        import numpy as np
        import fastbp
        from fastbp.kernels import network as knet
        fastbp.MLP([3, 4, 2], seed=0).forward(np.zeros((2, 3), np.float32))
        library = next(iter(knet.predict_into.overloads.values())).library
        print(json.dumps(sorted({fn.linkage.name for fn in library._final_module.functions
                                 if not fn.is_declaration})))
    """)
    res = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path, FASTBP_CACHE="0"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    linkages = json.loads(res.stdout)
    assert "internal" in linkages and "linkonce_odr" not in linkages, linkages


# Starts a script: ``emitted`` lists the code libraries whose machine code is emitted.
EMIT_SPY = textwrap.dedent("""
    from numba.core import codegen
    emitted = []
    emit = codegen.JITCodeLibrary._finalize_specific
    def spy(library):
        emitted.append(library.name)
        return emit(library)
    codegen.JITCodeLibrary._finalize_specific = spy
""")


def test_prange_wrappers_of_fastbp_kernels_emit_no_machine_code(tmp_path):
    """numba's two wrapper libraries around a fastbp kernel's ``prange`` loop are linked into the
    kernel without their own optimization and machine code (_config, "link-only"), and the
    loop's body without machine code of its own; a user's own parallel function still gets
    numba's usual build, and both compute the right numbers."""
    script = EMIT_SPY + textwrap.dedent("""
        import json
        import numba
        import numpy as np
        import fastbp
        from fastbp import _config
        from fastbp.kernels import dense
        wrappers = lambda: [n for n in emitted
                            if n.startswith(_config._PARFOR_WRAPPERS + (_config._PARFOR_BODY,))]

        rng = np.random.default_rng(0)
        x = rng.standard_normal((64, 40)).astype(np.float32)
        W = rng.standard_normal((48, 40)).astype(np.float32)
        b = rng.standard_normal(48).astype(np.float32)
        out = np.empty((64, 48), np.float32)
        dense.dense_forward(out, x, W, b, 0)  # 0: identity
        ours = wrappers()
        error = float(np.abs(out - (x.astype(np.float64) @ W.T + b)).max())
        emitted.clear()

        @numba.njit(parallel=True)
        def user(v):
            s = np.empty_like(v)
            for i in numba.prange(v.shape[0]):
                s[i] = 2.0 * v[i]
            return s
        doubled = user(np.arange(1000.0))
        print(json.dumps({"ours": ours, "kernel_error": error, "user": wrappers(),
                          "user_ok": bool((doubled == 2 * np.arange(1000.0)).all())}))
    """)
    res = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path, FASTBP_CACHE="0"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["ours"] == [] and out["kernel_error"] < 1e-3, out
    assert len(out["user"]) == 3 and out["user_ok"], out


DEFERRED = EMIT_SPY + textwrap.dedent("""
    import json
    import numpy as np
    import fastbp
    from fastbp import _config
    from fastbp.kernels import dense, layout as klayout, network as knet
    def own_code():
        return [n for n in emitted if n.startswith("dense_forward__")]

    rng = np.random.default_rng(0)
    lay, n_params = klayout.make_layout([40, 48], [0])
    params = rng.standard_normal(n_params).astype(np.float32)
    x = rng.standard_normal((64, 40)).astype(np.float32)
    acts = np.zeros(64 * 48, np.float32)
    through_driver = knet.forward_batch(acts, x, params, lay, 0).copy()  # 0: always threaded
    entries = list(dense.dense_forward.overloads.values())
    report = {"deferred": [_config.is_deferred(c) for c in entries], "emitted": own_code()}
    W, b = params[:48 * 40].reshape(48, 40), params[48 * 40:]
    out = np.empty((64, 48), np.float32)
    dense.dense_forward(out, x, W, b, 0)  # from Python: now it gets its own machine code
    report["after"] = [_config.is_deferred(c) for c in dense.dense_forward.overloads.values()]
    report["emitted_after"] = len(own_code())
    report["same"] = bool((out == through_driver).all())
    report["error"] = float(np.abs(out - (x.astype(np.float64) @ W.T + b)).max())
    report["hits"] = sum(dense.dense_forward.stats.cache_hits.values())
    print(json.dumps(report))
""")


def test_kernels_compiled_for_another_kernel_are_deferred(tmp_path):
    """A fastbp kernel compiled only because another one calls it is linked into the caller
    without machine code of its own (_config, "deferred kernels"); the first call from Python
    emits it, gives the same numbers, and saves the kernel to the cache, where the next process
    finds it."""
    def run():
        res = subprocess.run([sys.executable, "-c", DEFERRED], env=_env(tmp_path),
                             capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)
    first = run()
    assert first["deferred"] == [True] and first["emitted"] == [], first
    assert first["after"] == [False] and first["emitted_after"] == 1, first
    assert first["same"] and first["error"] < 1e-3 and first["hits"] == 0, first
    second = run()  # the driver and the kernel come from the cache
    assert second["deferred"] == [False] and second["hits"] == 1, second
    assert second["same"] and second["error"] < 1e-3, second
