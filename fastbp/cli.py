"""The ``fastbp`` command (also ``python -m fastbp``): ``train``, ``predict``, ``evaluate``,
``info`` and ``bench``.

``fastbp train`` trains on the bundled digits set (the README's main job) or on ``--data FILE``
(CSV or ``.npz``); ``--save`` writes a model file that ``predict`` and ``evaluate`` read. Input
features are standardized with the training part's mean and deviation (``--scale standard``,
the default for ``--data``; regression targets too), and the scaling is folded into the first
and last layers before the model is saved, so a saved model takes the raw columns of the file.
Class names and feature names travel in the model file's metadata (:func:`fastbp.io.save`).

Errors are one line on stderr (the file, row and column where they apply) and exit status 1;
bad arguments exit 2 (argparse); Ctrl-C exits 130. ``--debug`` shows the traceback instead.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time

import numpy as np

from . import _tabular
from .datasets import split_indices

EXIT_ERROR, EXIT_INTERRUPTED = 1, 130
META_KEY = "fastbp_cli"  # the command's entry in a model file's metadata
# How far (RMS over the training part) the saved model's outputs may be from the trained
# network's before train warns; in output units (probabilities, or target deviations)
FOLD_TOLERANCE = 0.01


class CliError(Exception):
    """A problem to report as one line, without a traceback."""


# ---- the parsers -------------------------------------------------------------------------------
def build_parser():
    """The ``fastbp`` argument parser with its sub-commands (also what the docs render)."""
    from . import __version__
    from .bench.runner import add_arguments as add_bench_arguments

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of one line")
    p = argparse.ArgumentParser(
        prog="fastbp", description="Train multilayer perceptrons on the CPU with fastbp, "
        "predict and evaluate with saved models.",
        epilog="'fastbp COMMAND --help' shows each command's options.")
    p.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    t = sub.add_parser(
        "train", parents=[common], help="train a network (the bundled digits set by default)",
        description="Train a network on the bundled digits set (1,797 8x8 images), or on your "
        "own CSV or .npz file, and print the train / validation / test loss and metric "
        "(accuracy, or R^2 for regression).")
    _data_arguments(t, target_default="last", target_help="the target column of a CSV file: a "
                    "header name or an index (negative counts from the end; default: the last)")
    g = t.add_argument_group("the task and the network")
    g.add_argument("--task", choices=["auto", "classification", "regression"], default="auto",
                   help="default auto: classification for text targets and for integers with "
                        f"at most {_tabular.MAX_CLASSES} distinct values, else regression")
    g.add_argument("--hidden", type=int, nargs="*", default=[64], metavar="N",
                   help="hidden layer widths (default: 64; none: a linear model)")
    g.add_argument("--activation", default="sigmoid",
                   choices=["sigmoid", "tanh", "relu", "identity"],
                   help="of the hidden layers (default: sigmoid)")
    g.add_argument("--output-activation", default=None,
                   choices=["sigmoid", "tanh", "relu", "identity", "softmax"],
                   help="default: the hidden activation for classification with mse (the seed "
                        "network), sigmoid for bce, softmax for cross_entropy, identity for "
                        "regression")
    g.add_argument("--loss", default="mse", choices=["mse", "bce", "cross_entropy"],
                   help="mse is the seed network's 1/2 ||a - y||^2 (on one-hot targets for "
                        "classification); default: mse")
    g.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                   help="default: float32, which refuses a column it would round by more than "
                        "1/100 of its deviation (such as 1e8 + U(0, 1)): use float64 there")
    g = t.add_argument_group("training")
    g.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    g.add_argument("--lr", type=float, default=None,
                   help="learning rate (default: sgd 0.5 for classification and 0.01 for "
                        "regression; adam and adamw 0.001)")
    g.add_argument("--momentum", type=float, default=None, help="sgd momentum (default: 0)")
    g.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    g.add_argument("--schedule", default=None, metavar="NAME[:KEY=VALUE,...]",
                   help="learning-rate schedule: constant, step:step_size=10,gamma=0.5, "
                        "exponential:gamma=0.95, cosine (T_max defaults to the epochs), plateau")
    g.add_argument("--epochs", type=int, default=30, help="default: 30")
    g.add_argument("--batch-size", type=int, default=1,
                   help="samples per update (default: 1, per-sample SGD)")
    g.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                   help="visit the samples in file order every epoch")
    g.add_argument("--scale", choices=["auto", "standard", "none"], default="auto",
                   help="standardize the features (and regression targets) with the training "
                        "part's mean and deviation; default auto: standard for --data, none for "
                        "the digits (already in [0, 1])")
    g.add_argument("--test-split", type=float, default=0.25,
                   help="fraction held out for the test metrics, stratified for classification "
                        "(default: 0.25; 0: no test part)")
    g.add_argument("--validation-split", type=float, default=0.0,
                   help="fraction of the rest held out, evaluated after every epoch (default: 0)")
    g.add_argument("--early-stopping", type=int, nargs="?", const=10, default=None,
                   metavar="PATIENCE", help="stop when the validation loss (the training loss "
                   "without validation) has not improved for PATIENCE epochs (default 10) and "
                   "keep the best epoch's weights")
    g.add_argument("--seed", type=int, default=0,
                   help="seeds the splits, the initial weights and the shuffling (default: 0)")
    g.add_argument("--threads", type=int, default=None,
                   help="threads of fastbp's kernels (default: numba's, all cores)")
    g = t.add_argument_group("output")
    g.add_argument("--save", metavar="MODEL.npz", help="write the trained model (on Ctrl-C: "
                   "the last finished epoch's)")
    g.add_argument("--plot", metavar="CURVES.png", help="write the loss and metric curves "
                   "(needs matplotlib: pip install 'fastbp[plot]')")
    g.add_argument("--json", action="store_true",
                   help="print the history and metrics as JSON on stdout (the rest on stderr)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="a progress bar per epoch (default: when stderr is a terminal; "
                        "otherwise one line per epoch)")
    g.add_argument("--quiet", action="store_true", help="no per-epoch output")

    pr = sub.add_parser(
        "predict", parents=[common], help="predict with a saved model",
        description="Class labels and probabilities (classifiers) or outputs (regression) for "
        "the rows of a data file with the feature columns the model was trained on.")
    pr.add_argument("--model", required=True, metavar="MODEL.npz")
    _data_arguments(pr, required=True, target_default=None,
                    target_help="a column of the file to leave out (the target; its cells are "
                                "not read), by header name or index; default: every column is "
                                "a feature")
    pr.add_argument("--out", metavar="PREDICTIONS.csv|.npz",
                    help="write the predictions there (default: CSV on stdout)")
    pr.add_argument("--threads", type=int, default=None)

    ev = sub.add_parser(
        "evaluate", parents=[common], help="loss and metric of a saved model on labelled data",
        description="The loss and the metric (accuracy, or R^2) of a saved model on a data file, "
        "and the confusion matrix of a classifier.")
    ev.add_argument("--model", required=True, metavar="MODEL.npz")
    _data_arguments(ev, required=True, target_default="last",
                    target_help="the target column (default: the last)")
    ev.add_argument("--json", action="store_true", help="print the results as JSON")
    ev.add_argument("--threads", type=int, default=None)

    sub.add_parser("info", parents=[common], help="versions, CPU, threads and the compile cache",
                   description="fastbp.show_config(): versions, CPU features and vector width, "
                   "threading layer, threads, the compile cache folder and which kernel sets "
                   "it holds.")
    b = sub.add_parser("bench", help="training throughput against NumPy, PyTorch and JAX",
                       description="See 'fastbp bench --help'.")
    add_bench_arguments(b)
    return p


def _data_arguments(p, *, target_default, target_help, required=False):
    g = p.add_argument_group("data")
    g.add_argument("--data", metavar="FILE", required=required,
                   help="a CSV file (comma-separated, header or not) or an .npz archive" + (
                       "" if required else "; default: the bundled digits set"))
    g.add_argument("--target", default=target_default, metavar="COLUMN", help=target_help)
    g.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                   help="whether the CSV file's first row is a header (default: detected)")
    g.add_argument("--delimiter", default=",", help="CSV field separator (default: ',')")
    g.add_argument("--x-key", default="X", help="the features' array in an .npz (default: X)")
    g.add_argument("--y-key", default="y", help="the target's array in an .npz (default: y)")


# ---- entry point -------------------------------------------------------------------------------
def main(argv=None):
    """Run the ``fastbp`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # its own parser, with its checks
        from .bench import main as bench_main
        from .bench.runner import parse_args
        path = parse_args(argv[1:]).json
        if path not in (None, "-"):
            try:
                _check_output("--json", path)
            except CliError as exc:
                print(f"fastbp bench: error: {exc}", file=sys.stderr)
                return EXIT_ERROR
        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"fastbp {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `fastbp predict ... | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # one line for the shell; --debug shows the traceback
        if args.debug:
            raise
        print(f"fastbp {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _message(exc):
    if isinstance(exc, FloatingPointError):  # training diverged
        return f"{exc}; with this command: a smaller --lr, or --scale standard"
    if isinstance(exc, (CliError, ValueError, TypeError)):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return f"{type(exc).__name__}: {exc} (--debug shows the traceback)"


def _check_threads(n):
    import numba
    most = numba.config.NUMBA_NUM_THREADS
    if n is not None and not 1 <= n <= most:
        raise CliError(f"--threads must be between 1 and {most} (numba's thread pool size, "
                       f"NUMBA_NUM_THREADS), got {n}")


def _threads(n):
    from . import threads
    _check_threads(n)
    return contextlib.nullcontext() if n is None else threads(n)


def _check_output(option, path):
    """Refuse an output path that cannot be written before any work is done, so that a long
    run does not end in an error and lose its result."""
    if os.path.isdir(path):
        raise CliError(f"{option} {path}: expected a file path, got a directory")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise CliError(f"{option} {path}: the directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"{option} {path}: the directory {folder} is not writable")


# ---- train -------------------------------------------------------------------------------------
def _check_train_args(a):
    for name, value, ok, rule in (
            ("--epochs", a.epochs, a.epochs >= 1, ">= 1"),
            ("--batch-size", a.batch_size, a.batch_size >= 1, ">= 1"),
            ("--lr", a.lr, a.lr is None or (math.isfinite(a.lr) and a.lr > 0), "> 0"),
            ("--test-split", a.test_split, 0 <= a.test_split < 1, "in [0, 1)"),
            ("--validation-split", a.validation_split, 0 <= a.validation_split < 1,
             "in [0, 1)"),
            ("--early-stopping", a.early_stopping,
             a.early_stopping is None or a.early_stopping >= 1, ">= 1"),
            ("--seed", a.seed, a.seed >= 0, ">= 0")):
        if not ok:
            raise CliError(f"{name} must be {rule}, got {value}")
    if any(h < 1 for h in a.hidden):
        raise CliError(f"--hidden widths must be >= 1, got {a.hidden}")
    if a.momentum is not None and a.optimizer != "sgd":
        raise CliError(f"--momentum is for --optimizer sgd, not {a.optimizer}")
    _check_threads(a.threads)
    for option, path in (("--save", a.save), ("--plot", a.plot)):
        if path is not None:
            _check_output(option, path)


def _schedule(spec, epochs):
    """``NAME[:KEY=VALUE,...]`` -> a schedule config dict (cosine's T_max defaults to epochs)."""
    if spec is None:
        return None
    name, _, rest = spec.partition(":")
    config = {"name": name.strip()}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise CliError(f"--schedule: expected KEY=VALUE after '{name}:', got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise CliError(f"--schedule: {key.strip()}={value!r} is not a number") from None
        config[key.strip()] = int(number) if number.is_integer() and "." not in value \
            else number
    if config["name"] == "cosine":
        config.setdefault("T_max", epochs)
    return config


class _Split:
    """Index sets of the train / validation / test parts (stratified by ``labels`` if given)."""

    def __init__(self, n, test, validation, rng, labels=None):
        rest, self.test = _split(np.arange(n), test, rng, labels)
        self.train, self.validation = _split(rest, validation, rng,
                                             None if labels is None else labels[rest])


def _split(idx, fraction, rng, labels):
    """``idx`` -> (kept, held out): about ``fraction`` of each class (of all without labels)
    held out, chosen by ``rng``; both sorted."""
    if fraction == 0:
        return idx, idx[:0]
    kept, held = split_indices(len(idx), fraction, rng, labels)
    if len(kept) == 0:
        raise CliError(f"a split of {fraction} leaves no training samples out of {len(idx)}")
    return idx[kept], idx[held]


def _load_training_data(a):
    """(table, task, classes, Y) from --data or the bundled digits."""
    if a.data is None:
        from .datasets import load_digits
        X, y = load_digits("float64")
        table = _tabular.Table(X, y, None, "digit", "digits")
    else:
        table = _tabular.read_table(a.data, target=a.target, x_key=a.x_key, y_key=a.y_key,
                                    header=a.header, delimiter=a.delimiter, dtype=a.dtype)
    task = _tabular.infer_task(table.y) if a.task == "auto" else a.task
    if task == "classification":
        Y, classes = _tabular.encode_labels(table.y, table.path)
    else:
        if table.y.dtype.kind in "US":
            raise CliError(f"{table.path}: the target {table.target_name!r} holds text, which "
                           "regression cannot use (try --task classification)")
        Y, classes = table.y.astype(np.float64).reshape(table.y.shape[0], -1), None
        if a.loss != "mse":
            raise CliError(f"regression needs --loss mse, got {a.loss}")
    if table.X.shape[0] < 2:
        raise CliError(f"{table.path}: {table.X.shape[0]} sample; training needs at least 2")
    return table, task, classes, Y


def _check_resolution(table, X, dtype):
    """Refuse a feature column whose values ``dtype`` rounds by more than 1/100 of their
    standard deviation on the training part ``X`` (1e8 + U(0, 1) in float32), or whose
    deviation is so small that dividing by it overflows ``dtype``."""
    # The saved model takes the raw columns in dtype (the scaling is folded into it), so such a
    # column's information is lost there, and the fold's rounding spoils the whole model.
    sd = X.std(axis=0)
    top = np.abs(X).max(axis=0)
    step = np.spacing(top.astype(dtype)).astype(np.float64)
    name = np.dtype(dtype).name
    fix = "train with --dtype float64" if name == "float32" else "rescale the column"
    for j in np.flatnonzero((sd > 0) & ((step > sd / 100) | (sd < 1e3 / np.finfo(dtype).max))):
        why = (f"{name} rounds its values (up to {top[j]:.6g}) in steps of {step[j]:.3g}, more "
               f"than 1/100 of their standard deviation {sd[j]:.3g}" if step[j] > sd[j] / 100
               else f"its standard deviation {sd[j]:.3g} is too small for {name} (dividing by "
               "it overflows)")
        raise CliError(f"{table.path}: {table.column(j)}: {why}; {fix}")


class _Scaling:
    """Standardization fitted on the training part: features, and regression targets."""

    def __init__(self, X, Y, on, scale_targets):
        n = X.shape[1]
        self.mu, self.sd = np.zeros(n), np.ones(n)
        self.y_mu = self.y_sd = None
        if on:
            self.mu, self.sd = X.mean(axis=0), X.std(axis=0)
            self.sd[self.sd == 0] = 1.0  # a constant column stays as it is, shifted to 0
            if scale_targets:
                self.y_mu, self.y_sd = Y.mean(axis=0), Y.std(axis=0)
                self.y_sd[self.y_sd == 0] = 1.0

    def features(self, X, dtype):
        return np.ascontiguousarray((X - self.mu) / self.sd, dtype=dtype)

    def targets(self, Y, dtype):
        if self.y_mu is None:
            return Y if Y.dtype.kind in "iu" else np.ascontiguousarray(Y, dtype=dtype)
        return np.ascontiguousarray((Y - self.y_mu) / self.y_sd, dtype=dtype)

    def fold_into_checked(self, net, X_trained, X_raw):
        """:meth:`fold_into`, and how far (RMS) the folded ``net``'s outputs on the raw
        ``X_raw`` are from the trained net's on ``X_trained`` (its standardized form), in the
        trained net's output units."""
        with np.errstate(over="ignore"):  # an overflow shows as an infinite gap
            before = net.forward(X_trained).astype(np.float64)
            self.fold_into(net)
            after = net.forward(np.ascontiguousarray(X_raw, dtype=net.dtype)).astype(np.float64)
        if self.y_mu is not None:
            after = (after - self.y_mu) / self.y_sd
        return float(np.sqrt(np.mean((after - before) ** 2)))

    def fold_into(self, net):
        """Make ``net`` take raw features (and give raw targets): ``W (x - mu) / sd + b`` is
        ``(W / sd) x + (b - (W / sd) mu)``; an identity output ``o`` becomes ``sd_y o + mu_y``."""
        W, b = net.weights[0], net.biases[0]
        W64 = W.astype(np.float64) / self.sd
        b[...] = b.astype(np.float64) - W64 @ self.mu
        W[...] = W64
        if self.y_mu is not None:
            W, b = net.weights[-1], net.biases[-1]
            W[...] = W.astype(np.float64) * self.y_sd[:, None]
            b[...] = b.astype(np.float64) * self.y_sd + self.y_mu


def _train(a):
    from . import MLP
    from .callbacks import epoch_line

    _check_train_args(a)
    comm = _mpi_world()
    if comm is not None and comm.Get_rank() > 0:  # rank 0 alone prints, plots and saves
        sys.stdout = open(os.devnull, "w")
        a.progress, a.plot = False, None
    out = sys.stderr if a.json else sys.stdout  # with --json, stdout holds the JSON only
    plot = a.plot
    if plot and not _have_matplotlib():
        print("fastbp train: --plot needs matplotlib: pip install 'fastbp[plot]' (training goes "
              "on without the plot)", file=sys.stderr)
        plot = None
    table, task, classes, Y = _load_training_data(a)
    rng = np.random.default_rng(a.seed)
    split = _Split(table.X.shape[0], a.test_split, a.validation_split, rng,
                   Y if classes is not None else None)
    X_train = table.X[split.train]
    _check_resolution(table, X_train, a.dtype)
    scale = a.scale == "standard" or (a.scale == "auto" and a.data is not None)
    output_activation = a.output_activation
    if task == "regression" and output_activation is None:
        output_activation = "identity"
    scaling = _Scaling(X_train, Y[split.train], scale,
                       scale_targets=task == "regression" and output_activation == "identity")
    parts = {}
    for name, idx in (("train", split.train), ("validation", split.validation),
                      ("test", split.test)):
        if len(idx):
            parts[name] = (scaling.features(table.X[idx], a.dtype),
                           scaling.targets(Y[idx], a.dtype), idx)
    n_out = len(classes) if classes is not None else Y.shape[1]
    net = MLP([table.X.shape[1], *a.hidden, n_out], activation=a.activation,
              output_activation=output_activation, loss=a.loss, dtype=a.dtype, seed=a.seed)
    optimizer = {"name": a.optimizer,
                 "lr": a.lr if a.lr is not None else _default_lr(a.optimizer, task),
                 "weight_decay": a.weight_decay}
    if a.momentum is not None:
        optimizer["momentum"] = a.momentum
    schedule = _schedule(a.schedule, a.epochs)
    if schedule is not None:
        optimizer["schedule"] = schedule
    progress = sys.stderr.isatty() if a.progress is None else a.progress
    progress = progress and not a.quiet
    val = parts.get("validation")
    # An mse classifier's history metric is R^2 of its one-hot outputs: the accuracy of each
    # epoch on the validation part is measured here, for the lines, the plot and the JSON.
    val_accuracy = []
    track = val is not None and classes is not None and not net.is_classifier

    def after_epoch(epoch, history, model):
        if track:
            val_accuracy.append(float(np.mean(_labels(model, model.forward(val[0])) == val[1])))
        if not a.quiet and not progress:
            line = epoch_line(history.last(), model.metric_name)
            print(line + (f"  val_accuracy {val_accuracy[-1]:.4f}" if track else ""),
                  file=out, flush=True)

    sizes = ", ".join(f"{k} {len(v[2])}" for k, v in parts.items())
    print(f"{net}\n{table.path}: {table.X.shape[0]} samples, {table.X.shape[1]} features, "
          f"{task}" + (f" ({len(classes)} classes)" if classes else "") + f"; {sizes}; "
          f"{a.epochs} epochs, batch size {a.batch_size}, {a.optimizer} lr "
          f"{optimizer['lr']:g}", file=out, flush=True)
    Xt, Yt, _ = parts["train"]
    t0 = time.perf_counter()
    interrupted = False
    try:
        with _threads(a.threads):
            net.fit(Xt, Yt, epochs=a.epochs, batch_size=a.batch_size, optimizer=optimizer,
                    comm=comm,
                    shuffle=a.shuffle, validation_data=None if val is None else val[:2],
                    early_stopping=a.early_stopping, callbacks=[after_epoch], progress=progress)
    except KeyboardInterrupt:  # the model is the one of the last finished epoch
        interrupted = True
    seconds = time.perf_counter() - t0
    # The epoch lines measure the network on the standardized data, the report below and the
    # saved model on the raw columns: say so when the fold's rounding makes them disagree.
    with _threads(a.threads):
        gap = scaling.fold_into_checked(net, Xt, X_train)
    if not gap <= FOLD_TOLERANCE and (comm is None or comm.Get_rank() == 0):
        print(f"fastbp train: warning: the saved model (raw columns in {a.dtype}) is off from "
              f"the trained network (standardized data) by {gap:.3g} RMS on the training part"
              + (" (in target deviations)" if scaling.y_mu is not None else "")
              + ": the epoch lines describe the trained network, the results below the saved "
              "model" + ("; --dtype float64 avoids this" if a.dtype == "float32" else ""),
              file=sys.stderr)
    metadata = {META_KEY: {"task": task, "classes": classes,
                           "feature_names": table.feature_names,
                           "target": table.target_name}}
    if interrupted:
        print(f"fastbp train: interrupted after {net.n_epochs_} finished epochs",
              file=sys.stderr)
        if a.save and net.n_epochs_ > 0:
            net.save(a.save, metadata=metadata, comm=comm)
            print(f"saved the model of epoch {net.n_epochs_} to {a.save}", file=sys.stderr)
        return EXIT_INTERRUPTED

    metrics = {}
    with _threads(a.threads):
        for name, (_, _, idx) in parts.items():
            metrics[name] = _evaluate(net, table.X[idx], Y[idx], classes)
    metric = "accuracy" if classes is not None else "r2"
    for name, m in metrics.items():
        print(f"{name:10s} loss {m['loss']:.5f}  {metric} {m[metric]:.4f}", file=out)
    history = net.history_
    stopped = f", stopped early at epoch {history.stopped_epoch}" if history.stopped_epoch \
        else ""
    rate = len(Xt) * len(history) / seconds if seconds > 0 else 0.0
    print(f"{len(history)} epochs in {seconds:.2f} s ({rate:,.0f} samples/s, compiling or "
          f"loading the kernels included{stopped})", file=out)
    if a.save:
        net.save(a.save, metadata=metadata, comm=comm)
        print(f"saved the model to {a.save}", file=out)
    curves = history.to_dict()
    if track:
        curves.update(val_metric=val_accuracy, metric="accuracy")
    if plot:
        _plot(curves, plot, scaled=scaling.y_mu is not None)
        print(f"wrote the curves to {plot}", file=out)
    if a.json:
        print(json.dumps(_json_safe({"history": curves, "metrics": metrics,
                                     "task": task, "classes": classes, "seconds": seconds,
                                     "model": a.save}), indent=2))
    return 0


def _mpi_world():
    """MPI.COMM_WORLD when mpiexec started this command as several processes, else None: then
    every rank reads the data, trains its share of each batch (``fit(..., comm=...)``) and
    rank 0 prints and saves."""
    size = next((os.environ[k] for k in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
                 if k in os.environ), "1")
    if not size.isdigit() or int(size) < 2:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CliError(f"started by mpiexec as {size} processes, but mpi4py is not installed: "
                       "pip install 'fastbp[mpi]'") from None
    return MPI.COMM_WORLD


def _default_lr(optimizer, task):
    """0.5 for per-sample SGD on classification (the seed network's sigmoid outputs), 0.01 for
    regression (an identity output diverges at 0.5), 0.001 for Adam."""
    if optimizer != "sgd":
        return 0.001
    return 0.5 if task == "classification" else 0.01


def _evaluate(net, X, Y, classes):
    """Loss and metric of ``net`` on raw ``X`` and encoded ``Y``; a confusion matrix (rows:
    true class, columns: predicted) for classifiers."""
    Xd = np.ascontiguousarray(X, dtype=net.dtype)
    if classes is None:
        Yd = np.ascontiguousarray(Y, dtype=net.dtype)
        return {"loss": net.loss(Xd, Yd), "r2": net.score(Xd, Yd), "n": len(X)}
    pred = _labels(net, net.forward(Xd))
    k = len(classes)
    confusion = np.bincount(Y * k + pred, minlength=k * k).reshape(k, k)
    return {"loss": net.loss(Xd, Y), "accuracy": float(np.mean(pred == Y)), "n": len(X),
            "confusion": confusion.tolist()}


def _labels(net, out):
    """Class codes from network outputs: argmax, or p > 0.5 for one logistic output."""
    if out.shape[1] == 1:
        return (out[:, 0] > 0.5).astype(np.int64)
    return np.argmax(out, axis=1)


def _json_safe(obj):
    """NaN and infinity as None (JSON has neither); numpy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _have_matplotlib():
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _plot(curves, path, scaled):
    """The training (and validation) loss, and the validation metric, against the epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    has_val = not all(math.isnan(v) for v in curves["val_loss"])
    fig, axes = plt.subplots(1, 2 if has_val else 1, figsize=(10 if has_val else 5.5, 4),
                             squeeze=False)
    ax = axes[0, 0]
    ax.plot(curves["epoch"], curves["loss"], label="train")
    if has_val:
        ax.plot(curves["epoch"], curves["val_loss"], label="validation")
        name = {"r2": "R^2"}.get(curves["metric"], curves["metric"])
        axes[0, 1].plot(curves["epoch"], curves["val_metric"], color="C1")
        axes[0, 1].set(ylabel=f"validation {name}")
    ax.set(ylabel="loss" + (" (standardized targets)" if scaled else ""), yscale="log")
    ax.legend()
    for ax in axes[0]:
        ax.set(xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- predict and evaluate ----------------------------------------------------------------------
def _load_model(path):
    from .io import load, load_metadata
    if not os.path.exists(path):
        raise CliError(f"{path}: no such model file")
    net = load(path)
    info = load_metadata(path).get(META_KEY)
    if info is None:  # saved from Python: the loss says what it is
        classes = list(range(max(2, net.layer_sizes[-1]))) if net.is_classifier else None
        info = {"task": "classification" if classes else "regression", "classes": classes,
                "feature_names": None}
    return net, info


def _model_data(a, net, info, target, read_target=True):
    table = _tabular.read_table(a.data, target=target, x_key=a.x_key, y_key=a.y_key,
                                header=a.header, delimiter=a.delimiter, dtype=net.dtype,
                                read_target=read_target)
    n_in = net.layer_sizes[0]
    if table.X.shape[1] != n_in:
        raise CliError(f"{table.path}: {table.X.shape[1]} feature columns"
                       + (" (the target column left out)" if target is not None else "")
                       + f", but the model {a.model} takes {n_in}")
    names = info.get("feature_names")
    if names and table.feature_names and names != table.feature_names:
        print(f"fastbp: warning: the columns of {table.path} are named differently from the "
              f"training data's ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})",
              file=sys.stderr)
    return table


def _predict(a):
    if a.out is not None:
        _check_output("--out", a.out)
    net, info = _load_model(a.model)
    # the target column is only left out: its values are not needed (nor checked)
    table = _model_data(a, net, info, a.target, read_target=False)
    X = np.ascontiguousarray(table.X, dtype=net.dtype)
    with _threads(a.threads):
        out = net.forward(X).astype(np.float64)
    classes = info["classes"]
    if classes is not None:
        codes = _labels(net, out)
        if net.is_classifier:
            probs = net.predict_proba(X).astype(np.float64)
            kind = "p"
        else:  # an mse classifier's outputs are scores, not probabilities
            probs, kind = out, "score"
        prediction = np.array(classes, dtype=object)[codes]
        columns = ["prediction"] + [f"{kind}_{c}" for c in classes]
    else:
        prediction = None
        columns = ["prediction"] if out.shape[1] == 1 else \
            [f"prediction_{j}" for j in range(out.shape[1])]
    if a.out and a.out.lower().endswith(".npz"):
        arrays = {"prediction": np.asarray(prediction.tolist()) if prediction is not None
                  else out[:, 0] if out.shape[1] == 1 else out}
        if classes is not None:
            arrays[("probabilities" if kind == "p" else "scores")] = probs
            arrays["classes"] = np.asarray(classes)
        np.savez(a.out, **arrays)
        print(f"wrote {len(X)} predictions to {a.out}", file=sys.stderr)
        return 0
    with (open(a.out, "w", newline="") if a.out else contextlib.nullcontext(sys.stdout)) as f:
        f.write(",".join(_csv_cell(c) for c in columns) + "\n")
        for i in range(len(X)):
            row = [prediction[i]] + list(probs[i]) if classes is not None else list(out[i])
            f.write(",".join(_csv_cell(v) for v in row) + "\n")
    if a.out:
        print(f"wrote {len(X)} predictions to {a.out}", file=sys.stderr)
    return 0


def _csv_cell(value):
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text


def _evaluate_command(a):
    net, info = _load_model(a.model)
    table = _model_data(a, net, info, a.target)
    classes = info["classes"]
    if classes is not None:
        Y = _tabular.codes_for(table, classes)
    else:
        if table.y.dtype.kind in "US":
            raise CliError(f"{table.path}: the target holds text, but the model is a regression "
                           "model")
        Y = table.y.astype(np.float64).reshape(table.y.shape[0], -1)
        if Y.shape[1] != net.layer_sizes[-1]:
            raise CliError(f"{table.path}: {Y.shape[1]} target columns, but the model has "
                           f"{net.layer_sizes[-1]} outputs")
    with _threads(a.threads):
        result = _evaluate(net, table.X, Y, classes)
    if a.json:
        print(json.dumps(_json_safe({**result, "classes": classes}), indent=2))
        return 0
    metric = "accuracy" if classes is not None else "r2"
    print(f"{table.path}: {result['n']} samples  loss {result['loss']:.6g}  "
          f"{metric} {result[metric]:.4f}")
    if classes is not None:
        names = [str(c) for c in classes]
        width = max(6, *(len(n) for n in names),
                    *(len(str(v)) for row in result["confusion"] for v in row))
        print("confusion matrix (rows: true class, columns: predicted)")
        print(" " * width + "".join(f" {n:>{width}}" for n in names))
        for name, row in zip(names, result["confusion"]):
            print(f"{name:>{width}}" + "".join(f" {v:>{width}}" for v in row))
    return 0


def _info(a):
    from . import _cache, show_config
    from .kernels import simd
    show_config()
    print(f"vector width (bits): {simd.vector_bits()} (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES "
          "choose another target)")
    done = len(_cache.compiled_sets())
    total = 2 * len(_cache.PATHS)
    print(f"\n{done} of {total} kernel sets (path/dtype) are in the cache; the others compile on "
          "first use (python -c 'import fastbp; fastbp.warmup()' compiles them all)")
    return 0


COMMANDS = {"train": _train, "predict": _predict, "evaluate": _evaluate_command,
            "info": _info}
