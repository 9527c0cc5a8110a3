"""The ``fastbp`` console script, driven as a user drives it: in subprocesses, on small CSV and
``.npz`` files made here. Plus in-process checks of the data reading and of the scaling that
``train`` folds into a saved model."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp
from fastbp import _tabular, cli

SCRIPT = os.path.join(os.path.dirname(sys.executable), "fastbp")


def run(*args, timeout=300, check=None):
    """Run the installed ``fastbp`` script; returns the CompletedProcess."""
    assert os.path.exists(SCRIPT), f"the console script is not installed at {SCRIPT}"
    proc = subprocess.run([SCRIPT, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def one_error_line(proc, *fragments):
    """A failed command: exit 1, one line on stderr that holds every fragment, no traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("fastbp: compiling")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two blobs with text class names (CSV with a header), a regression set (CSV without a
    header, target first; and the same as .npz), and the features alone."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    n = 240
    X = rng.normal(size=(n, 3)) * [1.0, 20.0, 0.5] + [0.0, 500.0, 3.0]  # unscaled on purpose
    label = np.where(X[:, 0] + (X[:, 1] - 500) / 20 > 0, "yes", "no")
    with open(d / "cls.csv", "w") as f:
        f.write("x0,x1,x2,answer\n")
        for row, lab in zip(X, label):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{lab}\n")
    with open(d / "features.csv", "w") as f:
        f.write("x0,x1,x2\n")
        for row in X[:7]:
            f.write(",".join(f"{v:.6f}" for v in row) + "\n")
    t = 2.0 * X[:, 0] + (X[:, 1] - 500) / 20 + 0.01 * rng.normal(size=n)
    np.savetxt(d / "reg.csv", np.c_[t, X], delimiter=",", fmt="%.6f")
    np.savez(d / "reg.npz", features=X, value=t)
    return {"dir": d, "X": X, "label": label, "t": t}


def test_help_and_version():
    proc = run("--help", check=0)
    for command in ("train", "predict", "evaluate", "info", "bench"):
        assert command in proc.stdout
    assert run("--version", check=0).stdout.strip() == f"fastbp {fastbp.__version__}"
    assert "--data" in run("train", "--help", check=0).stdout
    assert "--workloads" in run("bench", "--help", check=0).stdout
    assert run("bogus").returncode == 2


def test_train_csv_classification_save_predict_evaluate(files):
    d = files["dir"]
    proc = run("train", "--data", d / "cls.csv", "--target", "answer", "--epochs", 15,
               "--save", d / "cls.npz", "--json", "--quiet", check=0)
    report = json.loads(proc.stdout)  # stdout holds the JSON alone
    assert report["task"] == "classification" and report["classes"] == ["no", "yes"]
    assert len(report["history"]["loss"]) == 15
    assert report["metrics"]["test"]["accuracy"] > 0.85
    assert report["metrics"]["test"]["n"] == 60 and report["metrics"]["train"]["n"] == 180
    assert sum(map(sum, report["metrics"]["test"]["confusion"])) == 60

    # The saved model takes the raw columns (the scaling is folded into it).
    net = fastbp.load(d / "cls.npz")
    meta = fastbp.io.load_metadata(d / "cls.npz")["fastbp_cli"]
    assert meta["feature_names"] == ["x0", "x1", "x2"] and meta["target"] == "answer"
    expected = np.array(["no", "yes"])[net.forward(files["X"].astype(np.float32)).argmax(1)]
    assert np.mean(expected == files["label"]) > 0.85

    proc = run("predict", "--model", d / "cls.npz", "--data", d / "features.csv", check=0)
    lines = proc.stdout.splitlines()
    assert lines[0] == "prediction,score_no,score_yes"
    assert [l.split(",")[0] for l in lines[1:]] == list(expected[:7])

    # A file that holds the target too: --target leaves it out. Output to .npz.
    run("predict", "--model", d / "cls.npz", "--data", d / "cls.csv", "--target", "answer",
        "--out", d / "pred.npz", check=0)
    with np.load(d / "pred.npz") as pred:
        assert list(pred["prediction"]) == list(expected)
        assert pred["scores"].shape == (240, 2) and list(pred["classes"]) == ["no", "yes"]
    # The column left out is not read: unknown targets (empty cells, a number beyond float32)
    with open(d / "unknown.csv", "w") as f:
        f.write("x0,x1,x2,answer\n")
        for row, answer in zip(files["X"][:7], ["", "1e300", "", "NA", "yes", "", "nan"]):
            f.write(",".join(f"{v:.6f}" for v in row) + f",{answer}\n")
    proc = run("predict", "--model", d / "cls.npz", "--data", d / "unknown.csv", "--target",
               "answer", check=0)
    assert [l.split(",")[0] for l in proc.stdout.splitlines()[1:]] == list(expected[:7])

    proc = run("evaluate", "--model", d / "cls.npz", "--data", d / "cls.csv", "--json",
               check=0)
    result = json.loads(proc.stdout)
    assert result["accuracy"] == pytest.approx(np.mean(expected == files["label"]))
    truth = (files["label"] == "yes").astype(int)
    pred = (expected == "yes").astype(int)
    assert result["confusion"] == [[int(np.sum((truth == i) & (pred == j))) for j in (0, 1)]
                                   for i in (0, 1)]
    text = run("evaluate", "--model", d / "cls.npz", "--data", d / "cls.csv", check=0).stdout
    assert "confusion matrix" in text and "accuracy" in text


def test_train_regression_csv_without_header_and_npz(files):
    d = files["dir"]
    proc = run("train", "--data", d / "reg.csv", "--target", 0, "--epochs", 20, "--json",
               "--quiet", "--save", d / "reg_model.npz", check=0)
    report = json.loads(proc.stdout)
    assert report["task"] == "regression" and report["classes"] is None
    assert report["metrics"]["test"]["r2"] > 0.95
    net = fastbp.load(d / "reg_model.npz")
    assert net.output_activation == "identity"
    # raw features in, raw targets out: the target scaling is folded into the last layer
    out = net.forward(files["X"].astype(np.float32))[:, 0]
    assert 1 - np.var(out - files["t"]) / np.var(files["t"]) > 0.95

    proc = run("train", "--data", d / "reg.npz", "--x-key", "features", "--y-key", "value",
               "--epochs", 5, "--quiet", "--test-split", 0, check=0)
    assert "train" in proc.stdout and "r2" in proc.stdout and "test " not in proc.stdout
    proc = run("evaluate", "--model", d / "reg_model.npz", "--data", d / "reg.npz", "--x-key",
               "features", "--y-key", "value", check=0)
    assert "r2" in proc.stdout


def test_train_digits_options(tmp_path):
    proc = run("train", "--epochs", 3, "--hidden", 16, "--batch-size", 8, "--optimizer", "adam",
               "--schedule", "cosine", "--validation-split", 0.2, "--loss", "cross_entropy",
               "--activation", "tanh", "--plot", tmp_path / "curves.png", "--json",
               "--threads", 1, "--dtype", "float64", check=0)
    report = json.loads(proc.stdout)
    assert set(report["metrics"]) == {"train", "validation", "test"}
    assert report["history"]["metric"] == "accuracy"
    assert all(v is not None for v in report["history"]["val_metric"])
    lr = report["history"]["lr"]
    assert lr[0] == pytest.approx(0.001) and lr[2] < lr[1] < lr[0]  # cosine over 3 epochs
    with open(tmp_path / "curves.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "epoch 3" in proc.stderr  # per-epoch lines go to stderr with --json


def test_progress_bar_on_request():
    proc = run("train", "--epochs", 2, "--progress", check=0)
    assert "epoch 2" in proc.stderr and "samples/s" in proc.stderr and "loss" in proc.stderr
    assert "epoch 1 " not in proc.stdout  # the bar replaces the epoch lines
    quiet = run("train", "--epochs", 2, "--quiet", check=0)
    assert "epoch" not in quiet.stderr and "epoch 1 " not in quiet.stdout


def test_plot_without_matplotlib_still_trains(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; from fastbp.cli import main; "
            f"sys.exit(main(['train', '--epochs', '1', '--quiet', '--plot', "
            f"{str(tmp_path / 'c.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pip install 'fastbp[plot]'" in proc.stderr and "test" in proc.stdout
    assert not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("content,args,fragments", [
    ("a,b,y\n1,2,0\n3,x,1\n", (), ("row 3", "column 2 ('b')", "'x' is not a number")),
    ("a,b,y\n1,2,0\n3,,1\n", (), ("row 3", "column 2 ('b')", "missing value")),
    ("a,b,y\n1,2,0\n3,4\n", (), ("row 3 has 2 columns, expected 3",)),
    ("a,b,y\n1,2,0\n3,4,1\n", ("--target", "zz"), ("no column named 'zz'", "'a', 'b', 'y'")),
    ("a,b,y\n1,2,0\n3,4,1\n", ("--target", "7"), ("column 7 is out of range",)),
    ("a,b,y\n1,inf,0\n3,4,1\n", (), ("row 2", "'inf' is not a finite number")),
    ("a,b,y\n1,2,5\n3,4,5\n", (), ("a single class (5);",)),  # the label, not its numpy repr
    ("", (), ("the file is empty",)),
])
def test_bad_csv_files(tmp_path, content, args, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    line = one_error_line(run("train", "--data", path, *args), *fragments)
    assert str(path) in line


def test_errors_are_one_line(files, tmp_path):
    d = files["dir"]
    one_error_line(run("train", "--data", tmp_path / "missing.csv"), "no such file")
    one_error_line(run("train", "--data", d / "reg.npz", "--x-key", "features", "--y-key", "t"),
                   "no array 't'", "'features', 'value'")
    one_error_line(run("train", "--epochs", 0), "--epochs must be >= 1, got 0")
    one_error_line(run("train", "--lr", "-0.5"), "--lr must be > 0")
    one_error_line(run("train", "--momentum", 0.9, "--optimizer", "adam"), "--momentum")
    one_error_line(run("train", "--schedule", "step:step_size"), "KEY=VALUE")
    one_error_line(run("train", "--data", d / "cls.csv", "--task", "regression"),
                   "holds text")
    not_a_model = tmp_path / "model.npz"
    not_a_model.write_bytes(b"not a zip file")
    one_error_line(run("predict", "--model", not_a_model, "--data", d / "features.csv"),
                   "not a readable fastbp model file")
    # the model has 3 inputs; the regression file has 4 columns
    run("train", "--data", d / "cls.csv", "--epochs", 1, "--quiet", "--save",
        tmp_path / "m.npz", check=0)
    one_error_line(run("predict", "--model", tmp_path / "m.npz", "--data", d / "reg.csv"),
                   "4 feature columns", "takes 3")
    one_error_line(run("evaluate", "--model", tmp_path / "m.npz", "--data", d / "reg.csv",
                       "--target", 0), "target value", "is not one of the model's classes")
    # argparse's usage errors: exit 2
    assert run("train", "--plot").returncode == 2
    assert run("predict", "--data", d / "features.csv").returncode == 2  # no --model
    # --debug: the traceback instead of one line
    proc = run("train", "--data", tmp_path / "missing.csv", "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "missing" / "m.npz"
    for option in ("--save", "--plot"):
        proc = run("train", option, missing)
        one_error_line(proc, f"{option} {missing}", "does not exist")
        assert proc.stdout == ""  # refused before the network is even made
    proc = run("train", "--save", tmp_path)
    one_error_line(proc, f"--save {tmp_path}", "expected a file path, got a directory")
    assert proc.stdout == ""
    one_error_line(run("predict", "--model", tmp_path / "no_model.npz", "--data", "x.csv",
                       "--out", missing), f"--out {missing}", "does not exist")
    # bench: in process, with the benchmark itself replaced (it must not start)
    started = []
    monkeypatch.setattr("fastbp.bench.main", lambda argv: started.append(argv) or 0)
    assert cli.main(["bench", "--json", str(missing), "--workloads", "tiny-b1"]) == 1
    assert not started and f"--json {missing}" in capsys.readouterr().err
    assert cli.main(["bench", "--json", str(tmp_path / "r.json")]) == 0 and started


def test_threads_out_of_range_names_the_option():
    line = one_error_line(run("train", "--threads", 99), "--threads must be between 1 and",
                          "got 99")
    assert "n must be" not in line


def test_values_beyond_the_dtype_range(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("a,b,y\n" + "".join(f"{i % 7},{i % 5},{i % 3 + 0.5}\n" for i in range(30)))
    huge = tmp_path / "huge.csv"
    huge.write_text("a,b,y\n1,2,0.5\n1e39,4,1.5\n3,4,2.5\n")
    for command in ("train", "evaluate"):
        extra = () if command == "train" else ("--model", tmp_path / "m.npz")
        if command == "evaluate":  # a float32 model with 2 inputs
            run("train", "--data", good, "--epochs", 1, "--quiet", "--save", tmp_path / "m.npz",
                check=0)
        one_error_line(run(command, "--data", huge, *extra), f"{huge}: row 3, column 1 ('a'): "
                       "'1e39' is beyond the range of float32", "--dtype float64")
    one_error_line(run("predict", "--model", tmp_path / "m.npz", "--data", huge, "--target",
                       "y"), "row 3, column 1 ('a')", "beyond the range of float32")
    huge.write_text("a,b,y\n1,2,0.5\n3,4,-4e38\n")
    one_error_line(run("train", "--data", huge), "row 3, column 3 ('y') (the target)",
                   "'-4e38' is beyond the range of float32")
    # float64 holds them; an .npz archive is checked the same way
    assert _tabular.read_table(str(huge), dtype="float64").y.tolist() == [0.5, -4e38]
    np.savez(tmp_path / "huge.npz", X=np.array([[1.0, 2.0], [3.0, 1e39]]), y=np.zeros(2))
    with pytest.raises(_tabular.DataError, match=r"row 2, column 2: value 1e\+39 is beyond"):
        _tabular.read_table(str(tmp_path / "huge.npz"), dtype="float32")


def _offset_file(path, offset, scale=1.0):
    """A regression file whose first column is offset + U(0, 1) * scale: its information is in
    the spread, far below its magnitude."""
    rng = np.random.default_rng(0)
    u, x2 = rng.uniform(size=(2, 200))
    with open(path, "w") as f:
        f.write("t,x2,y\n")
        for a, b, c in zip(offset + u * scale, x2, 2 * u + x2):
            f.write(f"{float(a)!r},{float(b)!r},{float(c)!r}\n")
    return path


def test_float32_refuses_columns_it_cannot_resolve(tmp_path):
    path = _offset_file(tmp_path / "offset.csv", 1e8)
    one_error_line(run("train", "--data", path), f"{path}: column 1 ('t'): float32 rounds its "
                   "values (up to 1e+08) in steps of 8", "--dtype float64")
    proc = run("train", "--data", path, "--dtype", "float64", "--epochs", 20, "--json",
               "--quiet", check=0)
    assert json.loads(proc.stdout)["metrics"]["test"]["r2"] > 0.9
    assert "warning" not in proc.stderr
    path = _offset_file(tmp_path / "tiny.csv", 0.0, 1e-42)  # dividing by its deviation overflows
    one_error_line(run("train", "--data", path), "column 1 ('t'): its standard deviation",
                   "too small for float32", "--dtype float64")


def test_train_warns_when_the_saved_model_is_not_the_trained_one(tmp_path, monkeypatch,
                                                                capsys):
    # With the column check off, the offset column makes the float32 fold lose the model: the
    # epoch lines (standardized data) and the report (the saved model) would disagree silently.
    monkeypatch.setattr(cli, "_check_resolution", lambda *args: None)
    path = _offset_file(tmp_path / "offset.csv", 1e8)
    assert cli.main(["train", "--data", str(path), "--epochs", "5", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: the saved model (raw columns in float32) is off from the trained " \
        "network" in err and "--dtype float64" in err
    assert cli.main(["train", "--data", str(path), "--epochs", "5", "--quiet", "--dtype",
                     "float64"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_ctrl_c_saves_the_last_finished_epoch(tmp_path):
    model = tmp_path / "m.npz"
    # A process started in the background by a non-interactive shell ignores SIGINT, and so do
    # its children (pytest's, then): the command starts with the default action, as from a
    # terminal, or it would rightly train on (seen as a 120-s timeout in such a run).
    proc = subprocess.Popen([SCRIPT, "train", "--epochs", "1000000", "--save", str(model)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        for line in proc.stdout:  # wait for a few finished epochs
            if line.startswith("epoch 3 "):
                break
        proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert time.monotonic() - t < 60
    assert "interrupted after" in err and "Traceback" not in err
    n = int(err.split("interrupted after ")[1].split()[0])
    assert n >= 3
    net = fastbp.load(model)
    assert net.n_epochs_ == n and len(net.loss_curve_) == n


def test_info_and_bench_list():
    proc = run("info", check=0)
    assert "numba" in proc.stdout and "vector width (bits)" in proc.stdout
    assert "kernel sets (path/dtype) are in the cache" in proc.stdout
    proc = run("bench", "--list", check=0)
    assert "mnist-b32" in proc.stdout


def test_python_m_fastbp_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "fastbp", "--version"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastbp {fastbp.__version__}"


# ---- in-process: reading, task inference, scaling ---------------------------------------------
def test_header_detection_and_target_columns(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("1,2,3\n4,5,6\n")
    t = _tabular.read_table(str(path))
    assert t.feature_names is None and t.X.tolist() == [[1, 2], [4, 5]]
    assert t.y.tolist() == [3, 6]
    t = _tabular.read_table(str(path), target=0)
    assert t.X.tolist() == [[2, 3], [5, 6]] and t.y.tolist() == [1, 4]
    path.write_text("p,q,label\n1,2,cat\n4,5,dog\n")
    t = _tabular.read_table(str(path))
    assert t.feature_names == ["p", "q"] and t.y.tolist() == ["cat", "dog"]
    assert t.target_name == "label" and t.lines.tolist() == [2, 3]
    with pytest.raises(_tabular.DataError, match=r"row 2, column 3 \('label'\): 'cat' is not"):
        _tabular.read_table(str(path), target="p")  # the text column as a feature
    path.write_text("p,q\n1,2\n")
    t = _tabular.read_table(str(path), target=None)
    assert t.y is None and t.feature_names == ["p", "q"] and t.X.tolist() == [[1, 2]]
    path.write_text("1;2\n3;4\n")
    assert _tabular.read_table(str(path), delimiter=";").X.tolist() == [[1], [3]]
    # a missing value (NA, or empty) in the first data row does not make it a header
    for first in ("NA,0.5,1", ",0.5,1", "n/a,0.5,1"):
        path.write_text(first + "\n0.6,0.2,0\n0.1,0.3,1\n")
        with pytest.raises(_tabular.DataError, match=r"row 1, column 1: (missing value|'.*' is "
                           "not a number)"):
            _tabular.read_table(str(path))
    path.write_text("x,NA,y\n1,2,0\n3,4,1\n")  # a header all the same
    assert _tabular.read_table(str(path)).feature_names == ["x", "NA"]


def test_task_inference():
    assert _tabular.infer_task(np.array(["a", "b"])) == "classification"
    assert _tabular.infer_task(np.array([0.0, 1.0, 2.0, 1.0])) == "classification"
    assert _tabular.infer_task(np.array([0.5, 1.0])) == "regression"
    assert _tabular.infer_task(np.arange(500.0)) == "regression"  # too many distinct values
    assert _tabular.infer_task(np.zeros((4, 2))) == "regression"
    codes, classes = _tabular.encode_labels(np.array([3.0, 1.0, 3.0]), "f")
    assert classes == [1, 3] and codes.tolist() == [1, 0, 1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_folded_scaling_gives_the_same_outputs(dtype):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4)) * [1, 100, 0.01, 5] + [3, -200, 0, 1e3]
    X[:, 2] = 7.0  # a constant column
    Y = rng.normal(size=(50, 2)) * 30 + 5
    scaling = cli._Scaling(X, Y, True, scale_targets=True)
    net = fastbp.MLP([4, 6, 2], activation="tanh", output_activation="identity",
                     dtype=dtype, seed=3)
    scaled_out = net.forward(scaling.features(X, dtype)).astype(np.float64)
    expected = scaled_out * scaling.y_sd + scaling.y_mu
    scaling.fold_into(net)
    got = net.forward(np.ascontiguousarray(X, dtype=dtype))
    tol = 1e-9 if dtype == "float64" else 2e-3
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())
