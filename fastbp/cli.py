"""``python -m fastbp train``: train a network on the bundled digits set, print test accuracy."""
import argparse
import sys
import time

import numpy as np


def train_main(argv):
    from . import MLP, datasets

    p = argparse.ArgumentParser(prog="python -m fastbp train",
                                description="Train an MLP on the bundled digits data set "
                                            "(1,797 8x8 images) and report its test accuracy.")
    p.add_argument("--hidden", type=int, nargs="*", default=[64],
                   help="hidden layer widths (default: 64)")
    p.add_argument("--activation", default="sigmoid",
                   choices=["sigmoid", "tanh", "relu", "identity"])
    p.add_argument("--loss", default="mse", choices=["mse", "bce", "cross_entropy"],
                   help="mse is the seed network's 1/2 ||a - y||^2 on one-hot targets")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.5)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    X_train, X_test, y_train, y_test = datasets.load_digits_split(dtype=args.dtype)
    net = MLP([X_train.shape[1], *args.hidden, 10], activation=args.activation, loss=args.loss,
              dtype=args.dtype, seed=args.seed)
    print(f"{net}\ntrain {X_train.shape[0]} samples, test {X_test.shape[0]}; "
          f"{args.epochs} epochs, batch size {args.batch_size}, lr {args.lr}")
    t0 = time.perf_counter()
    try:
        for epoch in range(1, args.epochs + 1):
            net.fit(X_train, y_train, epochs=1, batch_size=args.batch_size, lr=args.lr)
            if epoch == 1 or epoch % 5 == 0 or epoch == args.epochs:
                acc = _accuracy(net, X_test, y_test)
                print(f"epoch {epoch:3d}  train loss {net.loss_curve_[-1]:.5f}  test accuracy "
                      f"{acc:.4f}")
    except KeyboardInterrupt:  # Ctrl-C: the model is the one of the last finished epoch
        print(f"interrupted after {net.n_epochs_} finished epochs", file=sys.stderr)
        return 130
    seconds = time.perf_counter() - t0
    acc = _accuracy(net, X_test, y_test)
    print(f"test accuracy: {acc:.4f}  ({seconds:.2f} s for {args.epochs} epochs, test "
          f"evaluations and loading the compiled kernels included: "
          f"{args.epochs * X_train.shape[0] / seconds:,.0f} samples/s)")
    return 0


def _accuracy(net, X, y):
    pred = net.predict(X)
    if pred.ndim == 2:
        pred = np.argmax(pred, axis=1)
    return float(np.mean(pred == y))
