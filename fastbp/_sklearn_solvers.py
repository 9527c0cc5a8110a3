"""The training behind :mod:`fastbp.sklearn`: scikit-learn's objective, optimizers and stopping
rule, run on fastbp's kernels.

``fastbp.MLP.fit`` trains with fastbp's conventions (weight decay on every parameter, the
update formulas of ``torch.optim``). scikit-learn's MLPs define training differently, and a
drop-in has to follow them:

* The objective of a mini-batch (or, for L-BFGS, of the whole data) is
  ``sum_b w_b l(a_b, y_b) / sum_b w_b + alpha / (2 sum_b w_b) * sum_l ||W_l||^2``: the L2 term on
  the weights only, divided by the batch's weight; the squared error is averaged over the
  outputs, the Poisson deviance summed over them.
* SGD keeps its velocity in units of the step (``v <- momentum v - lr g``), so that a changed
  learning rate ('invscaling', 'adaptive') applies to new gradients only; Adam adds epsilon to
  the uncorrected ``sqrt(v)``.
* Epochs visit the samples in an order drawn from the estimator's ``RandomState`` exactly as
  scikit-learn draws it, so that the same ``random_state`` gives the same batches.

Kernels used (all through their Python entry points, inside the kernel sets "gradients",
"optimizer-step" and "predict" of :mod:`fastbp._cache`): ``forward_batch`` and
``backward_batch`` for a batch's loss and gradient, ``evaluate_loss``, and ``apply_update`` for
a step. The per-batch loop is Python (some microseconds a batch, next to milliseconds of
arithmetic at scikit-learn's batch size of 200). ``backward_batch`` takes the output delta to
be ``a - y`` (the canonical pairs: identity and squared error, logistic and binary
cross-entropy, softmax and cross-entropy); where the delta wanted is another one (sample
weights, the Poisson deviance's ``exp(z) - y``), the targets passed are ``a - delta``.
"""
import math
import sys
import warnings

import numpy as np
from scipy.special import xlogy
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from . import _cache
from ._threads import kernel_scope
from .kernels import network as knet
from .kernels import optim as kopt
from .kernels import train as ktrain
from .kernels.losses import MSE
from .model import aligned_zeros

# Rows of one forward/backward pass in an L-BFGS evaluation: the data goes through in chunks of
# at most this many activations (and as many deltas) per chunk, a bounded workspace.
LBFGS_CHUNK_VALUES = 1 << 22

# The module scikit-learn's MLPs warn from. fastbp's warnings name it as theirs (the file and
# line stay fastbp's), so that filters written for scikit-learn's (``filterwarnings("ignore",
# category=ConvergenceWarning, module="sklearn")``, as in its own examples) apply unchanged.
SKLEARN_MODULE = "sklearn.neural_network._multilayer_perceptron"


def warn(message, category=UserWarning):
    """``warnings.warn(message, category)`` from the caller's line, as from ``SKLEARN_MODULE``
    (shown once per line under the default filters, as ``warnings.warn``)."""
    frame = sys._getframe(1)
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=SKLEARN_MODULE,
                           registry=frame.f_globals.setdefault("__warningregistry__", {}),
                           module_globals=frame.f_globals)


def as_kernel_array(a, dtype):
    """``a`` as a C-contiguous, aligned, writable array of ``dtype`` (a copy only when needed):
    the kernels are compiled for that array type (a read-only array, such as joblib's memory
    maps, would compile them again)."""
    if isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous \
            and a.flags.aligned and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C")


class Rows:
    """Dense rows of ``X`` for the kernels: ``X`` dense (already a kernel array) or a CSR
    matrix, densified a batch at a time into one buffer."""

    def __init__(self, X, dtype, max_rows):
        self.sparse = not isinstance(X, np.ndarray)
        self.X = X.tocsr() if self.sparse else X
        self.buf = np.empty((max_rows, X.shape[1]), dtype=dtype) if self.sparse else None

    def take(self, idx, out=None):
        """Rows ``idx`` (an index array) into ``out`` (B, n) (or the buffer), as an array."""
        if self.sparse:
            out = self.buf[:len(idx)]
            out.fill(0)
            return self.X[idx].toarray(out=out)
        self.X.take(idx, axis=0, out=out)
        return out

    def slice(self, start, stop):
        """Rows ``start:stop``: a view when dense, densified when sparse."""
        if self.sparse:
            out = self.buf[:stop - start]
            out.fill(0)
            return self.X[start:stop].toarray(out=out)
        return self.X[start:stop]


class Objective:
    """scikit-learn's loss and its gradient for a network ``net`` (see the module notes), on
    batches of at most ``max_rows`` rows. ``grads`` holds the gradient after each call."""

    def __init__(self, net, alpha, poisson, max_rows):
        self.params, self.layout = net._params, net._layout
        self.code, self.dtype = net._loss_code, net.dtype
        self.n_outputs = net.layer_sizes[-1]
        self.alpha = float(alpha)
        self.poisson = poisson
        S = knet.workspace_size(self.layout)
        self.acts = aligned_zeros(max_rows * S, self.dtype)
        self.deltas = aligned_zeros(max_rows * S, self.dtype)
        self.grads = aligned_zeros(self.params.shape[0], self.dtype)
        self.zeros = np.zeros((max_rows, self.n_outputs), dtype=self.dtype)
        self.empty = np.empty(0, dtype=self.dtype)
        # flat views of each W_l in the parameters and in the gradients
        self.weights = []
        for l in range(self.layout.shape[0]):
            n_in, n_out, w_off = self.layout[l, :3]
            self.weights.append((self.params[w_off:w_off + n_in * n_out],
                                 self.grads[w_off:w_off + n_in * n_out]))
        self.scratch = np.empty(max(w.size for w, _ in self.weights), dtype=self.dtype)

    def data(self, x, y, w, min_par, norm=None):
        """Rows ``x`` (B, n) with targets ``y`` (B, m) and weights ``w`` (B,) or None:
        ``grads`` <- the gradient of the data term ``sum_b w_b l_b / norm``; returns that term
        and ``sum_b w_b``. ``norm`` is the batch's weight ``sum_b w_b`` unless given (L-BFGS's
        chunks pass the whole data's, so that a chunk may weigh nothing)."""
        B = x.shape[0]
        out = knet.forward_batch(self.acts, x, self.params, self.layout, min_par)
        wsum = float(B) if w is None else float(w.sum(dtype=np.float64))
        norm = wsum if norm is None else norm
        if norm == 0.0:  # numpy's np.average's words, which scikit-learn's MLPs raise here
            raise ZeroDivisionError("Weights sum to zero, can't be normalized")
        if self.poisson:  # the network's output is z; the mean is exp(z), the delta exp(z) - y
            mean = np.exp(out)
            terms = (xlogy(y, y / mean) - y + mean).sum(axis=1)
            loss = float((terms if w is None else terms * w).sum()) / norm
            delta = mean - y
        else:
            loss = float(ktrain.evaluate_loss(out, y, self.empty if w is None else w,
                                              self.code)) / norm
            if self.code == MSE:
                loss /= self.n_outputs  # scikit-learn averages the squared error over outputs
            delta = None if w is None and norm == B else out - y
        if delta is None:
            targets = y
        else:
            # backward_batch divides the delta's sums by B, the gradient wants norm. The delta
            # goes in as the output with zero targets (its output delta is out - y, exactly):
            # targets out - delta would lose it where |out| >> |delta| (a diverging Poisson fit)
            delta *= B / norm if w is None else (w * (B / norm))[:, None]
            out[...] = delta
            targets = self.zeros[:B]
        knet.backward_batch(self.grads, self.deltas, self.acts, x, targets, self.params,
                            self.layout, self.code, min_par)
        return loss, wsum

    def penalty(self, wsum, gradient):
        """The L2 term ``alpha / (2 wsum) * sum_l ||W_l||^2`` (biases are not penalized); with
        ``gradient``, also ``grads += alpha / wsum * W_l`` (L-BFGS: the stochastic solvers let
        the update kernel add it, ``Optimizer.step``)."""
        if self.alpha == 0.0:
            return 0.0
        # einsum's own loop, not np.dot: a BLAS call here would wake the BLAS library's
        # threads, which then spin on the cores that the kernels' threads need next (a 2-thread
        # forward pass of 64-256-10 on 200 rows went from 0.2 to 10 ms).
        c = self.alpha / wsum
        squares = 0.0
        for W, gW in self.weights:
            squares += float(np.einsum("i,i->", W, W))
            if gradient:
                s = self.scratch[:W.size]
                np.multiply(W, self.dtype.type(c), out=s)
                gW += s
        return 0.5 * c * squares


class Optimizer:
    """scikit-learn's ``SGDOptimizer`` / ``AdamOptimizer`` (plain data: numbers and arrays)
    taking its steps with fastbp's update kernel. ``weight_decay`` is fastbp's extra (the
    kernel's L2 term on every parameter)."""

    def __init__(self, est, n_params, dtype):
        self.solver = est.solver
        self.sgd = est.solver == "sgd"
        self.learning_rate_init = float(est.learning_rate_init)
        self.learning_rate = self.learning_rate_init
        self.lr_schedule = est.learning_rate if self.sgd else "constant"
        self.power_t = float(est.power_t)
        self.epsilon, self.beta_2 = float(est.epsilon), float(est.beta_2)
        hp = np.zeros(kopt.HP_SIZE, dtype=np.float64)
        self.weight_decay = float(est.weight_decay)
        hp[kopt.HP_MOMENTUM] = float(est.momentum) if self.sgd else 0.0
        hp[kopt.HP_NESTEROV] = float(bool(est.nesterovs_momentum))
        hp[kopt.HP_BETA1], hp[kopt.HP_BETA2] = float(est.beta_1), float(est.beta_2)
        self.hp = hp
        moments = not self.sgd or hp[kopt.HP_MOMENTUM] > 0
        self.s1 = np.zeros(n_params if moments else 0, dtype=dtype)  # velocity, or Adam's m
        self.s2 = np.zeros(n_params if not self.sgd else 0, dtype=dtype)  # Adam's v
        self.t = 0  # steps taken
        self.epochs = 0  # epochs ended
        self.schedule = None  # fastbp's extra: a fastbp.optim schedule of the per-epoch rate
        if est.schedule is not None:
            from .optim import make_schedule
            self.schedule = make_schedule(est.schedule)

    def begin_epoch(self):
        if self.schedule is not None:
            self.set_learning_rate(self.schedule.lr(self.learning_rate_init, self.epochs))

    def end_epoch(self, time_step, loss):
        self.iteration_ends(time_step)
        self.epochs += 1
        if self.schedule is not None:
            self.schedule.end_epoch({"loss": loss, "lr": self.learning_rate, "val_loss": None})

    def set_learning_rate(self, lr):
        """Change the rate of later steps. The kernel keeps SGD's velocity as ``v / -lr`` (the
        gradients' sum, torch's form); rescaling it keeps scikit-learn's velocity unchanged."""
        if self.sgd and self.s1.size and lr != self.learning_rate:
            self.s1 *= self.s1.dtype.type(self.learning_rate / lr)
        self.learning_rate = lr

    def segments(self, params, grads, layout):
        """Views ``(params, grads, s1, s2, is_weight)`` of each ``W_l`` and ``b_l`` for
        ``step`` (made at each fit: views do not survive pickling)."""
        out = []
        for l in range(layout.shape[0]):
            n_in, n_out, w_off, b_off = (int(v) for v in layout[l, :4])
            for start, stop, is_weight in ((w_off, w_off + n_in * n_out, True),
                                           (b_off, b_off + n_out, False)):
                out.append((params[start:stop], grads[start:stop],
                            self.s1[start:stop] if self.s1.size else self.s1,
                            self.s2[start:stop] if self.s2.size else self.s2, is_weight))
        return out

    def step(self, segments, decay, min_par):
        """One update of every segment, with ``decay`` (alpha / the batch's weight) added to
        the weights' decay: the kernel's ``g + decay * p`` is scikit-learn's L2 gradient, added
        in the pass that updates the parameters (not in a pass of its own)."""
        self.t += 1
        hp = self.hp
        hp[kopt.HP_LR] = self.learning_rate
        if not self.sgd:  # the kernel adds eps to the corrected sqrt(v); scikit-learn, to sqrt(v)
            hp[kopt.HP_EPS] = self.epsilon / math.sqrt(1.0 - self.beta_2 ** self.t)
        kind = kopt.SGD if self.sgd else kopt.ADAM
        for params, grads, s1, s2, is_weight in segments:
            hp[kopt.HP_WEIGHT_DECAY] = self.weight_decay + (decay if is_weight else 0.0)
            kopt.apply_update(params, grads, kind, hp, s1, s2, self.t, min_par)

    def iteration_ends(self, time_step):
        """'invscaling': ``learning_rate_init / (t + 1) ** power_t`` after ``t`` samples."""
        if self.lr_schedule == "invscaling":
            self.set_learning_rate(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose):
        """No improvement for too long: stop (True), or with 'adaptive' divide the rate by 5
        and go on (False) until it is at most 1e-6."""
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.set_learning_rate(self.learning_rate / 5.0)
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False


def _require_kernels(dtype):
    for path in ("gradients", "optimizer-step"):
        _cache.require(path, dtype)


def fit_stochastic(est, X, Y, sw, incremental):
    """scikit-learn's ``_fit_stochastic`` for ``est`` (whose ``net_`` and records exist):
    epochs of mini-batches with the stopping rule. ``X`` a kernel array or CSR matrix, ``Y``
    (N, m) targets of the network's dtype, ``sw`` (N,) or None."""
    net = est.net_
    if not incremental or getattr(est, "_optimizer", None) is None:
        est._optimizer = Optimizer(est, net._params.shape[0], net.dtype)
    opt = est._optimizer
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    X, Y, sw, val = _validation_split(est, X, Y, sw)
    batches = Batches(X, Y, sw, _batch_size(est, X.shape[0]), bool(est.shuffle), net.dtype)
    objective = Objective(net, est.alpha, est.loss == "poisson", batches.size)
    segments = opt.segments(net._params, objective.grads, net._layout)
    _require_kernels(net.dtype)
    try:
        est.n_iter_ = 0
        with kernel_scope() as min_par:
            for _ in range(est.max_iter):
                opt.begin_epoch()
                accumulated = 0.0
                for x, y, w in batches.epoch(est._random_state):
                    loss, wsum = objective.data(x, y, w, min_par)
                    loss += objective.penalty(wsum, gradient=False)
                    accumulated += loss * x.shape[0]
                    opt.step(segments, objective.alpha / wsum, min_par)
                n = batches.n_samples
                if _end_epoch(est, opt, val, accumulated / n, n, incremental):
                    break
    except KeyboardInterrupt:
        warn("Training interrupted by user.")
    if est.early_stopping:
        net._params[...] = est._best_params


def _validation_split(est, X, Y, sw):
    """With ``early_stopping``, hold out ``validation_fraction`` of the samples (stratified
    for one-column classification targets, as scikit-learn): ``(X, Y, sw, (X_val, y_val,
    sw_val))``; else ``(X, Y, sw, None)``."""
    if not est.early_stopping:
        return X, Y, sw, None
    from sklearn.model_selection import train_test_split
    stratify = Y if est._stratify_validation() else None
    parts = train_test_split(X, Y, *([] if sw is None else [sw]), random_state=est._random_state,
                             test_size=est.validation_fraction, stratify=stratify)
    X, X_val, Y, Y_val = parts[:4]
    sw, sw_val = (None, None) if sw is None else parts[4:]
    if X_val.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' or "
                         "the size of your dataset.")
    return X, Y, sw, (X_val, est._labels_of(Y_val), sw_val)


def _batch_size(est, n_samples):
    if est.batch_size == "auto":
        return min(200, n_samples)
    if est.batch_size > n_samples:
        warn("Got `batch_size` less than 1 or larger than sample size. It is going to be "
             "clipped")
    return int(np.clip(est.batch_size, 1, n_samples))


class Batches:
    """An epoch's mini-batches ``(x, y, w)`` as kernel arrays: in order (views), or, with
    ``shuffle``, gathered into buffers in the order scikit-learn draws: each epoch permutes
    the last epoch's order with ``rng.shuffle`` (``sklearn.utils.shuffle``)."""

    def __init__(self, X, Y, sw, size, shuffle, dtype):
        self.rows, self.Y, self.sw = Rows(X, dtype, size), Y, sw
        self.n_samples, self.size, self.shuffle = X.shape[0], size, shuffle
        self.order = np.arange(self.n_samples)
        self.xbuf = np.empty((size, X.shape[1]), dtype=dtype)
        self.ybuf = np.empty((size, Y.shape[1]), dtype=dtype)
        self.wbuf = np.empty(size, dtype=dtype)

    def epoch(self, rng):
        if self.shuffle:
            perm = np.arange(self.n_samples)
            rng.shuffle(perm)
            self.order = self.order[perm]
        sw = self.sw
        for start in range(0, self.n_samples, self.size):
            stop = min(start + self.size, self.n_samples)
            if self.shuffle:
                B, idx = stop - start, self.order[start:stop]
                yield (self.rows.take(idx, self.xbuf[:B]),
                       self.Y.take(idx, axis=0, out=self.ybuf[:B]),
                       None if sw is None else sw.take(idx, out=self.wbuf[:B]))
            else:
                yield (self.rows.slice(start, stop), self.Y[start:stop],
                       None if sw is None else sw[start:stop])


def _end_epoch(est, opt, val, loss, n_samples, incremental):
    """The records of an epoch over ``n_samples`` samples, the stopping rule and its
    messages; True: stop."""
    est.n_iter_ += 1
    est.loss_ = np.float64(loss)  # a NumPy float, as scikit-learn's
    est.t_ += n_samples
    est.loss_curve_.append(est.loss_)
    if est.verbose:
        print("Iteration %d, loss = %.8f" % (est.n_iter_, est.loss_))
        sys.stdout.flush()
    _update_no_improvement_count(est, val)
    opt.end_epoch(est.t_, est.loss_)
    if est._no_improvement_count > est.n_iter_no_change:
        what = "Validation score" if est.early_stopping else "Training loss"
        msg = (f"{what} did not improve more than tol=%f for %d consecutive epochs."
               % (est.tol, est.n_iter_no_change))
        if opt.trigger_stopping(msg, est.verbose):
            return True
        est._no_improvement_count = 0
    if incremental:
        return True
    if est.n_iter_ == est.max_iter:
        warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
             "hasn't converged yet." % est.max_iter, ConvergenceWarning)
    return False


def _update_no_improvement_count(est, val):
    """scikit-learn's count of epochs without improvement by ``tol``: of the validation score
    with early stopping (keeping the best weights), else of the training loss."""
    if val is not None:
        score = est._validation_score(*val)
        est.validation_scores_.append(score)
        if est.verbose:
            print("Validation score: %f" % score)
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = est.net_._params.copy()
    else:
        loss = est.loss_curve_[-1]
        if loss > est.best_loss_ - est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if loss < est.best_loss_:
            est.best_loss_ = loss


def fit_lbfgs(est, X, Y, sw):
    """scikit-learn's ``_fit_lbfgs``: ``scipy.optimize.minimize(method='L-BFGS-B')`` over the
    flat parameter buffer, the objective on all the data (in chunks of bounded workspace)."""
    import scipy
    import scipy.optimize

    net = est.net_
    dtype, params = net.dtype, net._params
    S = knet.workspace_size(net._layout)
    chunk = max(1, min(X.shape[0], LBFGS_CHUNK_VALUES // S))
    rows = Rows(X, dtype, chunk)
    objective = Objective(net, est.alpha, est.loss == "poisson", chunk)
    total = np.zeros(params.shape[0], dtype=np.float64) if chunk < X.shape[0] else None
    weight = float(X.shape[0]) if sw is None else float(sw.sum(dtype=np.float64))
    _require_kernels(dtype)

    def loss_and_grad(theta, min_par):
        params[...] = theta
        if total is None:
            loss, wsum = objective.data(rows.slice(0, X.shape[0]), Y, sw, min_par)
        else:  # chunks: their terms divided by the whole data's weight, summed
            total.fill(0.0)
            loss, wsum = 0.0, weight
            for start in range(0, X.shape[0], chunk):
                stop = min(start + chunk, X.shape[0])
                w = None if sw is None else sw[start:stop]
                loss += objective.data(rows.slice(start, stop), Y[start:stop], w, min_par,
                                       norm=weight)[0]
                total[...] += objective.grads
            objective.grads[...] = total
        loss += objective.penalty(wsum, gradient=True)
        return loss, objective.grads.astype(np.float64)

    options = {"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol}
    if tuple(int(v) for v in scipy.__version__.split(".")[:2]) < (1, 15):
        options["iprint"] = 1 if est.verbose is True or est.verbose >= 1 else -1
    # L-BFGS-B's vector arithmetic calls BLAS; on vectors this short BLAS's threads gain
    # nothing, and left awake they would spin on the cores that the kernels' threads need
    # (digits, 64-256-10: 0.34 s against 0.17 s with one kernel thread; see Objective.penalty).
    with threadpool_limits(1, user_api="blas"), kernel_scope() as min_par:
        result = scipy.optimize.minimize(loss_and_grad, params.astype(np.float64),
                                         method="L-BFGS-B", jac=True, options=options,
                                         args=(min_par,))
    est.n_iter_ = min(result.nit, est.max_iter)
    if result.status != 0:
        msg = (f"lbfgs failed to converge after {est.n_iter_} iteration(s) "
               f"(status={result.status}):\n{result.message}\n")
        if est.n_iter_ == est.max_iter:
            msg += ("\nIncrease the number of iterations to improve the convergence "
                    f"(max_iter={est.max_iter}).")
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warn(msg, ConvergenceWarning)
    est.loss_ = np.float64(result.fun)
    params[...] = result.x
