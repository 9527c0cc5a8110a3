"""Persistence: net.save / fastbp.load (an .npz without pickled objects), exact resumption,
atomic writes, rejection of broken or edited files, and pickle / deepcopy of models."""
import copy
import inspect
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp.io import FORMAT_VERSION, ModelFileError


def data(rng, N=40, n=5, m=3, dtype=np.float64):
    X = rng.standard_normal((N, n)).astype(dtype)
    y = np.argmax(X[:, :m] + 0.3 * rng.standard_normal((N, m)), axis=1)
    return X, y


def make_net(dtype="float64", loss="cross_entropy", seed=3):
    return fastbp.MLP([5, 7, 3], activation="tanh", loss=loss, dtype=dtype, seed=seed)


def trained(rng, dtype="float64", optimizer="adam", epochs=3, **kw):
    X, y = data(rng, dtype=dtype)
    net = make_net(dtype)
    net.fit(X, y, epochs=epochs, batch_size=8, optimizer=optimizer, lr=0.05, **kw)
    return net, X, y


def assert_same_history(h1, h2):
    assert (h1 is None) == (h2 is None)
    if h1 is None:
        return
    d1, d2 = h1.to_dict(), h2.to_dict()
    assert d1.keys() == d2.keys()
    for key in d1:
        if isinstance(d1[key], list):
            np.testing.assert_array_equal(np.asarray(d1[key], dtype=np.float64),
                                          np.asarray(d2[key], dtype=np.float64), err_msg=key)
        else:
            assert d1[key] == d2[key], key


def assert_same_model(a, b):
    """Same architecture, parameters (bitwise) and training state."""
    assert a.get_config() == b.get_config()
    assert a.params.dtype == b.params.dtype
    np.testing.assert_array_equal(a.params, b.params)
    sa, sb = a.get_training_state(), b.get_training_state()
    for key in ("n_epochs", "n_steps", "rng_state", "loss_curve", "optimizer_config"):
        assert sa[key] == sb[key], key
    assert sa["optimizer_state"].keys() == sb["optimizer_state"].keys()
    for key, arr in sa["optimizer_state"].items():
        other = sb["optimizer_state"][key]
        assert arr.dtype == other.dtype and arr.shape == other.shape, key
        np.testing.assert_array_equal(arr, other, err_msg=key)
    assert_same_history(a.history_, b.history_)


# ---- round trips --------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_roundtrip_untrained(tmp_path, dtype):
    net = make_net(dtype)
    path = tmp_path / "net.npz"
    net.save(path)
    back = fastbp.load(path)
    assert isinstance(back, fastbp.MLP)
    assert back.dtype == np.dtype(dtype) and back.params.dtype == np.dtype(dtype)
    assert_same_model(net, back)
    assert back.optimizer_ is None and back.history_ is None
    X = np.linspace(-1, 1, 15).reshape(3, 5)
    np.testing.assert_array_equal(net.predict_proba(X), back.predict_proba(X))
    # the views are views into the loaded buffer
    back.weights[0][0, 0] = 0.5
    assert back.params[0] == 0.5


@pytest.mark.parametrize("loss", ["mse", "bce", "cross_entropy"])
def test_roundtrip_losses_and_activations(tmp_path, rng, loss):
    m = 1 if loss == "bce" else 3
    net = fastbp.MLP([4, 6, 5, m], activation="relu", loss=loss, dtype="float32", seed=None)
    X = rng.standard_normal((20, 4))
    Y = (rng.random((20, m)) > 0.5).astype(float)
    net.fit(X, Y, epochs=2, batch_size=4)
    net.save(tmp_path / "a.npz")
    back = fastbp.load(tmp_path / "a.npz")
    assert_same_model(net, back)
    assert back.seed is None
    np.testing.assert_array_equal(net.forward(X), back.forward(X))


def test_file_holds_only_plain_arrays(tmp_path, rng):
    net, _, _ = trained(rng)
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        files = set(f.files)
        arrays = {k: f[k] for k in f.files}
    assert {"format", "format_version", "fastbp_version", "config", "params",
            "training", "optimizer.step", "optimizer.epoch", "optimizer.m",
            "optimizer.v"} == files
    assert str(arrays["format"]) == "fastbp.MLP"
    assert int(arrays["format_version"]) == FORMAT_VERSION
    assert all(a.dtype.kind in "iufU" for a in arrays.values())
    assert json.loads(str(arrays["config"])) == net.get_config()
    training = json.loads(str(arrays["training"]))
    assert training["n_epochs"] == 3 and training["loss_curve"] == net.loss_curve_


def test_get_config_covers_the_constructor():
    net = make_net()
    assert set(net.get_config()) == set(inspect.signature(fastbp.MLP).parameters)
    twin = fastbp.MLP(**net.get_config())
    np.testing.assert_array_equal(twin.params, net.params)


def test_path_used_as_given_and_file_objects(tmp_path, rng):
    net, X, _ = trained(rng)
    net.save(str(tmp_path / "model.bin"))
    assert os.listdir(tmp_path) == ["model.bin"]
    assert_same_model(net, fastbp.load(str(tmp_path / "model.bin")))
    buf = io.BytesIO()
    net.save(buf)
    buf.seek(0)
    assert_same_model(net, fastbp.load(buf))


def test_overwrite_and_permissions(tmp_path, rng):
    path = tmp_path / "m.npz"
    make_net(seed=1).save(path)
    net, _, _ = trained(rng)
    net.save(path)
    assert_same_model(net, fastbp.load(path))
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path) == ["m.npz"]


def test_history_with_validation_and_early_stopping(tmp_path, rng):
    X, y = data(rng, N=60)
    net = make_net()
    net.fit(X, y, epochs=40, batch_size=4, optimizer="sgd", lr=0.5, validation_split=0.3,
            early_stopping=2)
    hist = net.history_
    assert hist.has_validation and hist.stopped_epoch is not None
    net.save(tmp_path / "m.npz")
    back = fastbp.load(tmp_path / "m.npz")
    assert_same_model(net, back)
    assert back.history_.stopped_epoch == hist.stopped_epoch
    assert back.history_.best_epoch == hist.best_epoch


def test_history_nan_values_roundtrip(tmp_path, rng):
    net, _, _ = trained(rng)  # no validation: val_loss and val_metric are NaN
    assert np.isnan(net.history_.val_loss).all()
    net.save(tmp_path / "m.npz")
    back = fastbp.load(tmp_path / "m.npz")
    assert np.isnan(back.history_.val_loss).all() and len(back.history_) == 3


def test_other_bit_generator_roundtrip(tmp_path, rng):
    net, X, y = trained(rng)
    state = np.random.MT19937(5).state
    net.rng_state = state
    net.save(tmp_path / "m.npz")
    back = fastbp.load(tmp_path / "m.npz")
    assert back.rng_state["bit_generator"] == "MT19937"
    np.testing.assert_array_equal(back.rng_state["state"]["key"], state["state"]["key"])
    net.partial_fit(X, y, batch_size=8)
    back.partial_fit(X, y, batch_size=8)
    np.testing.assert_array_equal(net.params, back.params)


# ---- resuming exactly ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("batch_size", [1, 8])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_resume_equals_straight_training(tmp_path, rng, dtype, batch_size, optimizer):
    X, y = data(rng, N=37, dtype=dtype)
    straight = make_net(dtype)
    straight.fit(X, y, epochs=10, batch_size=batch_size, optimizer=optimizer, lr=0.05)

    first = make_net(dtype)
    first.fit(X, y, epochs=5, batch_size=batch_size, optimizer=optimizer, lr=0.05)
    first.save(tmp_path / "half.npz")
    del first
    resumed = fastbp.load(tmp_path / "half.npz")
    for _ in range(5):
        resumed.partial_fit(X, y, batch_size=batch_size)

    assert resumed.params.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(resumed.params, straight.params)
    assert resumed.loss_curve_ == straight.loss_curve_
    assert resumed.n_epochs_ == straight.n_epochs_ == 10
    assert resumed.n_steps_ == straight.n_steps_
    assert resumed.rng_state == straight.rng_state
    assert resumed.history_.epoch == list(range(1, 11))
    assert resumed.history_.loss == straight.history_.loss
    assert resumed.optimizer_.get_config() == straight.optimizer_.get_config()
    for key, arr in straight.optimizer_.state_arrays().items():
        np.testing.assert_array_equal(resumed.optimizer_.state_arrays()[key], arr)


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3},
    {"name": "adamw", "schedule": "plateau", "schedule.patience": 0, "schedule.factor": 0.5},
    {"name": "adam", "schedule": "cosine", "schedule.T_max": 6},
], ids=["nesterov", "adamw-plateau", "adam-cosine"])
def test_resume_with_momentum_and_schedules(tmp_path, rng, optimizer):
    X, y = data(rng, N=30)
    straight = make_net()
    straight.fit(X, y, epochs=8, batch_size=4, optimizer=optimizer)
    first = make_net()
    first.fit(X, y, epochs=4, batch_size=4, optimizer=optimizer)
    first.save(tmp_path / "m.npz")
    resumed = fastbp.load(tmp_path / "m.npz")
    for _ in range(4):
        resumed.partial_fit(X, y, batch_size=4)
    np.testing.assert_array_equal(resumed.params, straight.params)
    assert resumed.history_.lr == straight.history_.lr
    assert resumed.loss_curve_ == straight.loss_curve_


def test_save_of_loaded_model_is_identical(tmp_path, rng):
    net, _, _ = trained(rng)
    net.save(tmp_path / "a.npz")
    fastbp.load(tmp_path / "a.npz").save(tmp_path / "b.npz")
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key])


# ---- atomic writes ------------------------------------------------------------------------------
class DiskFull(OSError):
    pass


def failing_savez(exc):
    """A stand-in for np.savez that writes part of an archive, then fails."""
    def savez(file, *args, **arrays):
        file.write(b"PK\x03\x04" + b"\0" * 100)
        raise exc
    return savez


@pytest.mark.parametrize("exc", [DiskFull(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["oserror", "interrupt"])
def test_interrupted_save_keeps_previous_file(tmp_path, rng, monkeypatch, exc):
    old = make_net(seed=11)
    path = tmp_path / "m.npz"
    old.save(path)
    before = path.read_bytes()
    net, _, _ = trained(rng)
    monkeypatch.setattr(np, "savez", failing_savez(exc))
    with pytest.raises(type(exc)):
        net.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]  # the temporary file is gone
    assert_same_model(old, fastbp.load(path))


def test_failed_rename_leaves_no_temporary(tmp_path, rng, monkeypatch):
    path = tmp_path / "m.npz"
    make_net().save(path)
    before = path.read_bytes()

    def broken_replace(src, dst):
        raise PermissionError("rename refused")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(PermissionError):
        trained(rng)[0].save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]


def test_save_errors(tmp_path):
    net = make_net()
    with pytest.raises(FileNotFoundError):
        net.save(tmp_path / "missing-dir" / "m.npz")
    with pytest.raises(IsADirectoryError):
        net.save(tmp_path)
    assert os.listdir(tmp_path) == []
    with pytest.raises(TypeError, match="fastbp.MLP"):
        fastbp.io.save(object(), tmp_path / "x.npz")
    with pytest.raises(TypeError, match="path"):
        net.save(12)
    net.params[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        net.save(tmp_path / "nan.npz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name,value", [
    ("_activation", "relu"), ("_output_activation", "sigmoid"), ("_loss_name", "mse"),
    ("_seed", -5), ("_layer_sizes", (5, 8, 3)), ("_dtype", np.dtype("float32"))])
def test_save_refuses_a_config_that_does_not_describe_the_network(tmp_path, name, value):
    """The architecture is read-only (test_robustness.py); past private attributes, save still
    refuses to write a config that load would reject or rebuild as another network."""
    net = make_net()
    setattr(net, name, value)
    with pytest.raises(ValueError, match="cannot save this network: its configuration"):
        net.save(tmp_path / "m.npz")
    assert os.listdir(tmp_path) == []


# ---- rejecting bad files ------------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, rng):
    net, _, _ = trained(rng)
    path = tmp_path / "good.npz"
    net.save(path)
    return net, path


def members(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def rewrite(tmp_path, arrays, name="edited.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def edit_json(arrays, key, change):
    doc = json.loads(str(arrays[key]))
    change(doc)
    arrays[key] = np.array(json.dumps(doc))
    return arrays


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "nope.npz")
    assert issubclass(ModelFileError, ValueError)


def test_truncated_files(tmp_path, saved):
    _, path = saved
    raw = path.read_bytes()
    cuts = sorted({0, 1, 3, 4, 10, 30, 100, len(raw) // 3, len(raw) // 2, len(raw) - 200,
                   len(raw) - 23, len(raw) - 1} | set(range(0, len(raw), max(1, len(raw) // 50))))
    for n in cuts:
        bad = tmp_path / "cut.npz"
        bad.write_bytes(raw[:n])
        with pytest.raises(ModelFileError, match="cut.npz"):
            fastbp.load(bad)


def test_random_bytes_and_other_files(tmp_path, rng):
    bad = tmp_path / "noise.npz"
    for size in (1, 64, 5000):
        bad.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        with pytest.raises(ModelFileError):
            fastbp.load(bad)
    bad.write_bytes(b"PK\x03\x04" + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    with pytest.raises(ModelFileError):
        fastbp.load(bad)
    np.save(tmp_path / "plain.npy", np.arange(4.0))
    with pytest.raises(ModelFileError):
        fastbp.load(tmp_path / "plain.npy")
    np.savez(tmp_path / "other.npz", a=np.arange(3))
    with pytest.raises(ModelFileError, match="no 'format' member"):
        fastbp.load(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "text.zip", "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(ModelFileError, match="notes.txt"):
        fastbp.load(tmp_path / "text.zip")


def test_every_single_byte_corruption_is_caught_or_harmless(tmp_path, saved):
    """Flip each byte of a small model file: the load either raises ModelFileError or (for
    bytes no reader depends on, such as a zip timestamp) gives back exactly the saved model."""
    net = make_net()
    path = tmp_path / "small.npz"
    net.save(path)
    raw = bytearray(path.read_bytes())
    bad = tmp_path / "flipped.npz"
    harmless = 0
    for i in range(len(raw)):
        raw[i] ^= 0xFF
        bad.write_bytes(raw)
        raw[i] ^= 0xFF
        try:
            back = fastbp.load(bad)
        except ModelFileError:
            continue
        assert_same_model(net, back)
        harmless += 1
    assert harmless < len(raw) // 5


def test_format_name_and_version(tmp_path, saved):
    _, path = saved
    arrays = members(path)
    arrays["format_version"] = np.array(FORMAT_VERSION + 1, dtype=np.int64)
    with pytest.raises(ModelFileError, match="newer.*upgrade fastbp"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays["format_version"] = np.array(0, dtype=np.int64)
    with pytest.raises(ModelFileError, match="unsupported format version 0"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays["format_version"] = np.array(1.0)
    with pytest.raises(ModelFileError, match="format_version"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays = members(path)
    arrays["format"] = np.array("somebody.Model")
    with pytest.raises(ModelFileError, match="not a fastbp model file"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays["format"] = np.array([1, 2])
    with pytest.raises(ModelFileError, match="must be a string"):
        fastbp.load(rewrite(tmp_path, arrays))


@pytest.mark.parametrize("key", ["format", "format_version", "config", "params", "training"])
def test_missing_members(tmp_path, saved, key):
    arrays = members(saved[1])
    del arrays[key]
    with pytest.raises(ModelFileError, match=key):
        fastbp.load(rewrite(tmp_path, arrays))


def test_unknown_member(tmp_path, saved):
    arrays = members(saved[1])
    arrays["extra"] = np.zeros(3)
    with pytest.raises(ModelFileError, match="unknown members.*extra"):
        fastbp.load(rewrite(tmp_path, arrays))


def test_edited_params(tmp_path, saved):
    net, path = saved
    cases = [
        (net.params[:-1], "shape"),
        (net.params.reshape(1, -1), "shape"),
        (net.params.astype(np.float32), "dtype float32.*float64"),
        (net.params.astype(">f8"), "dtype >f8"),
        (np.round(net.params * 100).astype(np.int64), "dtype int64"),
        (np.where(np.arange(net.params.size) == 4, np.nan, net.params), "NaN"),
    ]
    for params, match in cases:
        arrays = members(path)
        arrays["params"] = params
        with pytest.raises(ModelFileError, match=match):
            fastbp.load(rewrite(tmp_path, arrays))


def test_edited_architecture(tmp_path, saved):
    _, path = saved
    cases = [
        (lambda c: c.update(layer_sizes=[5, 8, 3]), "params.*shape"),
        (lambda c: c.update(layer_sizes=[5, 3]), "params.*shape"),
        (lambda c: c.update(layer_sizes=[5, 10 ** 12, 3]), "params.*shape"),  # no allocation
        (lambda c: c.update(layer_sizes=[5, -7, 3]), "valid network.*layer_sizes"),
        (lambda c: c.update(dtype="float32"), "dtype float64.*float32"),
        (lambda c: c.update(dtype="int8"), "valid network.*dtype"),
        (lambda c: c.update(activation="swish"), "valid network.*activation"),
        (lambda c: c.update(layer_sizes="five"), "valid network"),
        (lambda c: c.update(evil="__import__('os')"), "unknown fields.*evil"),
        (lambda c: c.pop("layer_sizes"), "layer_sizes"),
    ]
    for change, match in cases:
        arrays = edit_json(members(path), "config", change)
        with pytest.raises(ModelFileError, match=match):
            fastbp.load(rewrite(tmp_path, arrays))
    arrays = members(path)
    arrays["config"] = np.array("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays["config"] = np.array("[1, 2]")
    with pytest.raises(ModelFileError, match="JSON object"):
        fastbp.load(rewrite(tmp_path, arrays))


def test_edited_training_state(tmp_path, saved):
    _, path = saved
    cases = [
        (lambda t: t.pop("rng_state"), "missing.*rng_state"),
        (lambda t: t.update(bonus=1), "unknown.*bonus"),
        (lambda t: t.update(n_epochs=-1), "n_epochs"),
        (lambda t: t.update(n_steps="7"), "n_steps"),
        (lambda t: t.update(loss_curve=["a"]), "loss_curve"),
        (lambda t: t.update(rng_state={"bit_generator": "Nope"}), "bit generator"),
        (lambda t: t.update(rng_state=[1]), "rng_state"),
        (lambda t: t["optimizer_config"].update(name="lbfgs"), "optimizer"),
        (lambda t: t["optimizer_config"].update(lr=-1), "lr"),
        (lambda t: t["history"]["loss"].pop(), "history column"),
        (lambda t: t["history"].pop("epoch"), "epoch"),
        (lambda t: t["history"].update(stopped_epoch="x"), "stopped_epoch"),
        (lambda t: t["history"].update(best_epoch=2.5), "best_epoch"),
    ]
    for change, match in cases:
        arrays = edit_json(members(path), "training", change)
        with pytest.raises(ModelFileError, match=match):
            fastbp.load(rewrite(tmp_path, arrays))


def test_edited_optimizer_state(tmp_path, saved):
    net, path = saved
    n = net.params.size
    cases = [
        ("optimizer.m", np.zeros(n - 1), "shape"),
        ("optimizer.m", np.zeros(n, dtype=np.float32), "dtype float32"),
        ("optimizer.v", np.full(n, np.inf), "finite"),
        ("optimizer.step", np.array(2.5), "integer"),
        ("optimizer.step", np.array(-3), ">= 0"),
        ("optimizer.velocity", np.zeros(n), "unknown optimizer state"),
        ("optimizer.epoch", np.array("one"), "numeric"),
    ]
    for key, value, match in cases:
        arrays = members(path)
        arrays[key] = value
        with pytest.raises(ModelFileError, match=match):
            fastbp.load(rewrite(tmp_path, arrays))
    arrays = members(path)
    del arrays["optimizer.step"]
    with pytest.raises(ModelFileError, match="step"):
        fastbp.load(rewrite(tmp_path, arrays))
    arrays = edit_json(members(path), "training", lambda t: t.update(optimizer_config=None))
    with pytest.raises(ModelFileError, match="no optimizer_config"):
        fastbp.load(rewrite(tmp_path, arrays))


def test_optimizer_state_training_cannot_use_is_rejected(tmp_path, saved, rng):
    """Values no training produces, which every later partial_fit would trip on (a negative
    second moment: NaN at the first step, reported as a divergence; a step counter near 2**64:
    a bare OverflowError), are rejected at load, naming the file and the member."""
    net, path = saved
    n = net.params.size
    v = np.abs(members(path)["optimizer.v"])
    v[4] = -1e-3
    cases = [
        ("optimizer.v", v, ["'optimizer.v'", ">= 0", "-0.001", "index 4"]),
        ("optimizer.v", np.full(n, -0.0) - 1, ["'optimizer.v'", ">= 0"]),
        ("optimizer.step", np.array(np.iinfo(np.uint64).max, dtype=np.uint64),
         ["'optimizer.step'", "2**62", "18446744073709551615"]),
        ("optimizer.epoch", np.array(2 ** 63 - 1), ["'optimizer.epoch'", "2**62"]),
    ]
    for key, value, words in cases:
        arrays = members(path)
        arrays[key] = value
        bad = rewrite(tmp_path, arrays)
        with pytest.raises(ModelFileError) as info:
            fastbp.load(bad)
        for word in [repr(str(bad))] + words:
            assert word in str(info.value), (word, str(info.value))
    # the same rule for a state given in memory, and a model that takes none of it
    X, y = data(rng)
    state = net.get_training_state()
    state["optimizer_state"]["v"] = v
    fresh = make_net()
    with pytest.raises(ValueError, match="optimizer_state: optimizer state 'v'.*>= 0"):
        fresh.set_training_state(state)
    state["optimizer_state"]["v"] = np.abs(v)
    state["optimizer_state"]["step"] = np.array(2 ** 62 + 1)
    with pytest.raises(ValueError, match=r"2\*\*62"):
        fresh.set_training_state(state)
    assert fresh.optimizer_ is None
    back = fastbp.load(path)  # the valid file still loads and trains on
    back.partial_fit(X, y, batch_size=8)
    assert np.isfinite(back.params).all()


CALLS = []


def _record_call(*args):
    CALLS.append(args)
    return "executed"


class Payload:
    """Unpickling this calls _record_call: a stand-in for code hidden in a file."""

    def __reduce__(self):
        return (_record_call, ("unpickled",))


@pytest.mark.parametrize("key", ["params", "config", "optimizer.m", "surprise"])
def test_object_arrays_are_rejected_without_running_code(tmp_path, saved, key):
    arrays = members(saved[1])
    arrays[key] = np.array([Payload(), 1], dtype=object)
    path = rewrite(tmp_path, arrays)  # np.savez pickles object arrays
    CALLS.clear()
    with pytest.raises(ModelFileError, match="object"):
        fastbp.load(path)
    assert CALLS == []


def test_pickled_file_is_not_unpickled(tmp_path):
    path = tmp_path / "m.npz"
    path.write_bytes(pickle.dumps(Payload()))
    CALLS.clear()
    with pytest.raises(ModelFileError):
        fastbp.load(path)
    assert CALLS == []


def test_header_announcing_more_data_than_present(tmp_path, saved):
    """An .npy header edited to claim a huge array: rejected from the sizes, before reading."""
    _, path = saved
    out = tmp_path / "huge.npz"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            raw = src.read(info)
            if info.filename == "params.npy":
                header_end = raw.index(b"\n") + 1
                header = raw[:header_end].decode("latin1")
                start = header.index("'shape': (") + len("'shape': (")
                stop = header.index(",)", start)
                new = header[:start] + "10000000000000" + header[stop:]
                new = new[:-1].ljust(header_end - 1)[:header_end - 1] + "\n"
                raw = new.encode("latin1") + raw[header_end:]
            dst.writestr(info, raw)
    with pytest.raises(ModelFileError, match="params"):
        fastbp.load(out)


# ---- pickle and deepcopy ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pickle_keeps_training_state(rng, dtype):
    net, X, y = trained(rng, dtype=dtype,
                        optimizer={"name": "adam", "schedule": "plateau"})
    back = pickle.loads(pickle.dumps(net))
    assert_same_model(net, back)
    back.weights[0][0, 0] = 1.25
    assert back.params[0] == 1.25 and net.params[0] != 1.25
    net2 = pickle.loads(pickle.dumps(net))
    for _ in range(2):
        net.partial_fit(X, y, batch_size=8)
        net2.partial_fit(X, y, batch_size=8)
    np.testing.assert_array_equal(net.params, net2.params)


def test_deepcopy_trains_identically_and_independently(rng):
    net, X, y = trained(rng, optimizer={"name": "sgd", "momentum": 0.9})
    twin = copy.deepcopy(net)
    assert_same_model(net, twin)
    frozen = net.params.copy()
    velocity = net.optimizer_.state_arrays()["velocity"]
    for _ in range(3):
        twin.partial_fit(X, y, batch_size=8)
    np.testing.assert_array_equal(net.params, frozen)  # the original did not move
    np.testing.assert_array_equal(net.optimizer_.state_arrays()["velocity"], velocity)
    assert len(net.history_) == 3 and len(twin.history_) == 6
    for _ in range(3):
        net.partial_fit(X, y, batch_size=8)
    np.testing.assert_array_equal(net.params, twin.params)
    assert net.loss_curve_ == twin.loss_curve_


# ---- metadata -----------------------------------------------------------------------------------
def test_metadata_roundtrip_and_errors(tmp_path, saved):
    net, path = saved
    assert fastbp.io.load_metadata(path) == {}  # a file saved without metadata
    meta = {"classes": ["no", "yes", 3], "names": None, "nested": {"a": [1.5, 2]}}
    net.save(tmp_path / "meta.npz", metadata=meta)
    assert fastbp.io.load_metadata(tmp_path / "meta.npz") == meta
    with open(tmp_path / "meta.npz", "rb") as f:
        assert fastbp.io.load_metadata(f) == meta
    assert_same_model(fastbp.load(tmp_path / "meta.npz"), net)  # the model loads as before
    with pytest.raises(TypeError, match="metadata must be a dict"):
        net.save(tmp_path / "x.npz", metadata=["a"])
    with pytest.raises(TypeError, match="plain data"):
        net.save(tmp_path / "x.npz", metadata={"f": object()})
    assert not (tmp_path / "x.npz").exists()
    arrays = members(tmp_path / "meta.npz")
    arrays["metadata"] = np.array("[1, 2]")
    bad = rewrite(tmp_path, arrays)
    for read in (fastbp.load, fastbp.io.load_metadata):
        with pytest.raises(ModelFileError, match="'metadata' must be a JSON object"):
            read(bad)
    arrays["metadata"] = np.array("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        fastbp.io.load_metadata(rewrite(tmp_path, arrays))
    with pytest.raises(ModelFileError, match="not a fastbp model file"):
        fastbp.io.load_metadata(rewrite(tmp_path, {"x": np.zeros(2)}))
