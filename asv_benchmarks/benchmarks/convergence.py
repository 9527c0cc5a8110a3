"""What training computes, tracked next to how fast it runs: a change that gains speed by
computing something else shows up here as a jump in the loss or a drop in accuracy.

The README's example, fixed: the seed network ``[64, 64, 10]`` (sigmoid, squared error), seed 0,
trained for ``EPOCHS`` epochs on the bundled digits training split (fixed, stratified, seed 0),
then measured on that split (loss) and on the held-out split (accuracy). The values do not
depend on the thread count (the kernels split work by ownership; no reduction order changes).
"""
import numpy as np

import fastbp

from .common import DTYPES, FAST, THREADS, Benchmark

EPOCHS = 10
LEARNING_RATE = 0.5
BATCHES = [1] if FAST else [1, 16]


class DigitsConvergence(Benchmark):
    param_names = ["batch", "dtype", "threads"]
    params = [BATCHES, DTYPES, THREADS]

    def setup(self, batch, dtype, threads):
        self.pin_threads(threads)
        X_train, X_test, y_train, y_test = fastbp.datasets.load_digits_split(dtype)
        net = fastbp.MLP([64, 64, 10], activation="sigmoid", loss="mse", dtype=dtype, seed=0)
        net.fit(X_train, y_train, epochs=EPOCHS, batch_size=batch, lr=LEARNING_RATE)
        self.train_loss = net.loss(X_train, y_train)
        self.final_epoch_loss = net.loss_curve_[-1]
        self.test_accuracy = float(np.mean(net.predict(X_test).argmax(axis=1) == y_test))

    def track_train_loss(self, *params):
        """Mean loss ``1/2 ||a - y||^2`` on the training split after training."""
        return self.train_loss

    track_train_loss.unit = "loss"

    def track_last_epoch_loss(self, *params):
        """``loss_curve_[-1]``: the mean loss of the last epoch's batches, before each update."""
        return self.final_epoch_loss

    track_last_epoch_loss.unit = "loss"

    def track_test_accuracy(self, *params):
        """Fraction of the held-out digits classified correctly."""
        return self.test_accuracy

    track_test_accuracy.unit = "accuracy"
