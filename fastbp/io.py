"""Saving and loading models without pickle: ``net.save(path)`` and ``fastbp.load(path)``.

A model file is a NumPy ``.npz`` archive (a zip of ``.npy`` members) that holds only numeric
arrays and strings, never pickled objects:

==================  ==================================================================
member              content
==================  ==================================================================
``format``          the string ``"fastbp.MLP"``
``format_version``  0-d int64, :data:`FORMAT_VERSION`
``fastbp_version``  the version of fastbp that wrote the file (for information)
``config``          JSON: the constructor arguments (``MLP.get_config()``)
``params``          the flat parameter buffer, in the model's dtype
``training``        JSON: ``n_epochs``, ``n_steps``, ``rng_state``, ``loss_curve``,
                    ``optimizer_config`` and ``history`` (``MLP.get_training_state()``)
``optimizer.<k>``   the optimizer's state arrays (``step``, ``epoch``, ``m``, ``v``, ...)
``metadata``        optional JSON object: what the caller of :func:`save` added (the
                    ``fastbp`` command keeps the class names and the feature names there);
                    :func:`load_metadata` reads it
==================  ==================================================================

Loading rebuilds the network from ``config`` and checks every member against it (shapes, dtypes,
finiteness, known keys) before it is used; a file that is not a fastbp model file, is truncated
or corrupted, was written by a newer format version or was edited inconsistently raises
:class:`ModelFileError` (a ``ValueError``) that says what is wrong. The archive is read with
``zipfile`` and NumPy's ``.npy`` header parser (``numpy.lib.format``, which parses headers as
literals); nothing in a file is ever executed or unpickled.

Writes are atomic: the archive goes to a temporary file next to the target, is flushed to disk,
and then renamed over the target, so an interrupted save leaves the previous file intact (and
removes its temporary file).

Resuming: a loaded model continues training exactly where the saved one stopped with
``partial_fit`` (which continues the optimizer, its schedule, the shuffling generator and the
history): 5 epochs of ``fit``, save, load, then 5 calls of ``partial_fit`` with the same
``batch_size`` give bitwise the weights of ``fit`` for 10 epochs. (``fit`` always starts its
optimizer afresh.)
"""
import json
import math
import os
import secrets
import zipfile
import zlib

import numpy as np
import numpy.lib.format as npformat

FORMAT_NAME = "fastbp.MLP"
FORMAT_VERSION = 1

_META_KEYS = ("format", "format_version", "fastbp_version", "config", "training", "metadata")
_OPT_PREFIX = "optimizer."
_MAX_MEMBERS = 64  # a model file has fewer than 20 members
_TRAINING_KEYS = ("n_epochs", "n_steps", "rng_state", "loss_curve", "optimizer_config",
                  "history")


class ModelFileError(ValueError):
    """A file that ``fastbp.load`` cannot accept: not a fastbp model file, truncated, corrupted,
    of an unsupported format version, or with contents that do not fit the architecture."""


# ---- saving -----------------------------------------------------------------------------------
def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"cannot store a {type(obj).__name__} in a model file")


def _to_json(data):
    return json.dumps(data, default=_json_default, sort_keys=True)


def model_arrays(net, metadata=None):
    """The arrays of ``net``'s model file, as a dict (what :func:`save` writes)."""
    from . import __version__

    state = net.get_training_state()
    opt_state = state.pop("optimizer_state")
    arrays = {"format": np.array(FORMAT_NAME), "format_version": np.array(FORMAT_VERSION,
                                                                           dtype=np.int64),
              "fastbp_version": np.array(__version__), "config": np.array(_to_json(
                  net.get_config())), "params": np.array(net.params, copy=True),
              "training": np.array(_to_json(state))}
    for key, arr in opt_state.items():
        arrays[_OPT_PREFIX + key] = np.asarray(arr)
    if metadata is not None:
        arrays["metadata"] = np.array(_to_json(metadata))
    return arrays


def _write_archive(fileobj, arrays):
    np.savez(fileobj, **arrays)


def save(net, path, metadata=None):
    """Write ``net`` (parameters, architecture, dtype, optimizer state, history) to ``path``, an
    ``.npz`` archive without pickled objects. ``path`` is used as given (no suffix is added); a
    writable binary file object also works (then the write is not atomic). ``metadata``: an
    optional dict of plain data (JSON: strings, numbers, lists, dicts) stored with the model and
    read back by :func:`load_metadata`.

    The write is atomic: a temporary file in the target's directory, flushed and synced, then
    renamed over ``path``. If anything fails midway the previous file at ``path`` is untouched
    and the temporary file is removed."""
    from .model import MLP

    if not isinstance(net, MLP):
        raise TypeError(f"save needs a fastbp.MLP, got {type(net).__name__}")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        try:
            _to_json(metadata)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metadata must be plain data (JSON): {exc}") from None
    # The arrays are copies taken under the training guard: another thread's training would
    # pair mid-epoch parameters with the last epoch's counters (a callback of the training
    # thread itself saves between epochs, which is consistent).
    with net._guard.hold("MLP.save", False):
        net._check_consistent()  # the config written must rebuild this very network
        net._check_finite_params("save")  # load would refuse such a file
        arrays = model_arrays(net, metadata)
    if hasattr(path, "write"):
        _write_archive(path, arrays)
        return
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError("path must be a file name (str or os.PathLike) or a writable binary "
                        f"file object, got {type(path).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory")
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as for a plain open().
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            fd = None
            _write_archive(f, arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _sync_directory(directory)


def _sync_directory(directory):
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- loading ----------------------------------------------------------------------------------
class _Member:
    """One ``.npy`` member of the archive: its header, read and checked; data on demand."""

    def __init__(self, zf, info):
        self.zf, self.info = zf, info
        self.key = info.filename[:-len(".npy")]
        with zf.open(info) as f:
            version = npformat.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npformat.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npformat.read_array_header_2_0(f)
            else:
                raise ModelFileError(f"member {self.key!r} has .npy format version {version}, "
                                     "which fastbp does not read")
            self.offset = f.tell()
        if dtype.hasobject:
            raise ModelFileError(f"member {self.key!r} is an array of Python objects (dtype "
                                 f"{dtype}); model files hold only numbers and strings, and "
                                 "fastbp never unpickles")
        if dtype.kind not in "biufU" or dtype.fields is not None or dtype.subdtype is not None:
            raise ModelFileError(f"member {self.key!r} has dtype {dtype}; model files hold only "
                                 "numbers and strings")
        self.shape, self.fortran, self.dtype = tuple(shape), fortran, dtype
        self.nbytes = math.prod(self.shape) * dtype.itemsize
        if info.file_size != self.offset + self.nbytes:
            raise ModelFileError(f"member {self.key!r}: its header announces {self.shape} "
                                 f"{dtype} ({self.nbytes} bytes) but it holds "
                                 f"{info.file_size - self.offset} bytes of data")

    def read(self):
        """The array (a fresh, writable, native copy); the member's CRC is checked."""
        with self.zf.open(self.info) as f:
            f.seek(self.offset)
            data = f.read(self.nbytes)
            if len(data) != self.nbytes or f.read(1):
                raise ModelFileError(f"member {self.key!r} is truncated")
        arr = np.frombuffer(data, dtype=self.dtype)
        arr = arr.reshape(self.shape, order="F" if self.fortran else "C")
        return np.array(arr, order="C", copy=True)

    def read_string(self):
        if self.dtype.kind != "U" or self.shape != ():
            raise ModelFileError(f"member {self.key!r} must be a string (a 0-d unicode array), "
                                 f"got shape {self.shape} dtype {self.dtype}")
        return str(self.read()[()])

    def read_json(self, what):
        text = self.read_string()
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ModelFileError(f"member {self.key!r} ({what}) is not valid JSON: {exc}") \
                from None


def _open_members(zf):
    infos = zf.infolist()
    if len(infos) > _MAX_MEMBERS:
        raise ModelFileError(f"the archive has {len(infos)} members; a model file has fewer "
                             f"than {_MAX_MEMBERS}")
    members = {}
    for info in infos:
        if not info.filename.endswith(".npy") or info.is_dir():
            raise ModelFileError(f"unexpected archive member {info.filename!r}: a model file "
                                 "holds only .npy arrays")
        member = _Member(zf, info)
        if member.key in members:
            raise ModelFileError(f"the archive holds {member.key!r} twice")
        members[member.key] = member
    return members


def _check_format(members):
    if "format" not in members:
        raise ModelFileError("not a fastbp model file: the archive has no 'format' member (an "
                             ".npz archive written by something else?)")
    name = members["format"].read_string()
    if name != FORMAT_NAME:
        raise ModelFileError(f"not a fastbp model file: its format is {name!r}, expected "
                             f"{FORMAT_NAME!r}")
    if "format_version" not in members:
        raise ModelFileError("the file has no 'format_version' member")
    m = members["format_version"]
    if m.dtype.kind not in "iu" or m.shape != ():
        raise ModelFileError(f"'format_version' must be a 0-d integer, got shape {m.shape} "
                             f"dtype {m.dtype}")
    version = int(m.read()[()])
    if "fastbp_version" in members:  # information only, but it must be a string
        members["fastbp_version"].read_string()
    if version > FORMAT_VERSION:
        from . import __version__
        raise ModelFileError(f"the file has format version {version}, newer than this fastbp "
                             f"({__version__}) reads (up to {FORMAT_VERSION}); upgrade fastbp to "
                             "load it")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"unsupported format version {version} (this fastbp reads version "
                             f"{FORMAT_VERSION})")


def _build_model(config):
    import inspect

    from .model import MLP

    if not isinstance(config, dict):
        raise ModelFileError(f"'config' must be a JSON object, got {type(config).__name__}")
    accepted = set(inspect.signature(MLP).parameters)
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ModelFileError(f"'config' has unknown fields {unknown} (MLP takes "
                             f"{sorted(accepted)})")
    if "layer_sizes" not in config or "dtype" not in config:
        raise ModelFileError("'config' lacks 'layer_sizes' or 'dtype'")
    try:
        return MLP(**config)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"'config' does not describe a valid network: {exc}") from None


def _check_params_shape(member, config):
    from . import _validation as V

    if not isinstance(config, dict):
        raise ModelFileError(f"'config' must be a JSON object, got {type(config).__name__}")
    try:
        sizes = V.check_layer_sizes(config.get("layer_sizes"))
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"'config' does not describe a valid network: {exc}") from None
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    if member.shape != (n_params,):
        raise ModelFileError(f"'params' has shape {member.shape}, but the architecture {sizes} "
                             f"has {n_params} parameters")


def _check_training(training):
    if not isinstance(training, dict):
        raise ModelFileError(f"'training' must be a JSON object, got {type(training).__name__}")
    missing = sorted(set(_TRAINING_KEYS) - set(training))
    unknown = sorted(set(training) - set(_TRAINING_KEYS))
    if missing or unknown:
        raise ModelFileError(f"'training' must have exactly the fields {list(_TRAINING_KEYS)}"
                             f"{'; missing ' + str(missing) if missing else ''}"
                             f"{'; unknown ' + str(unknown) if unknown else ''}")
    for key in ("n_epochs", "n_steps"):
        value = training[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ModelFileError(f"training {key!r} must be an integer >= 0, got {value!r}")
    curve = training["loss_curve"]
    if not isinstance(curve, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in curve):
        raise ModelFileError("training 'loss_curve' must be a list of numbers")
    if not isinstance(training["rng_state"], dict):
        raise ModelFileError("training 'rng_state' must be a JSON object")
    for key in ("optimizer_config", "history"):
        if training[key] is not None and not isinstance(training[key], dict):
            raise ModelFileError(f"training {key!r} must be a JSON object or null")
    hist = training["history"]
    if hist is not None:
        for key in [k for k in hist if k.endswith("_epoch")]:  # stopped_, best_, ...
            value = hist[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ModelFileError(f"history {key!r} must be an integer or null, got "
                                     f"{value!r}")


def _read_optimizer_state(members, net, has_optimizer):
    from .optim import check_state_array

    n_params, dtype = net.params.shape[0], net.dtype
    state = {}
    for key, m in members.items():
        if not key.startswith(_OPT_PREFIX):
            continue
        name = key[len(_OPT_PREFIX):]
        if not has_optimizer:
            raise ModelFileError(f"member {key!r} is optimizer state, but the file has no "
                                 "optimizer_config")
        if m.shape == ():
            if m.dtype.kind not in "iuf":
                raise ModelFileError(f"member {key!r} must be numeric, got dtype {m.dtype}")
            if name in ("step", "epoch") and m.dtype.kind not in "iu":
                raise ModelFileError(f"member {key!r} must be an integer, got dtype {m.dtype}")
        elif m.shape == (n_params,):
            if m.dtype != dtype:
                raise ModelFileError(f"member {key!r} has dtype {m.dtype}, but the network's "
                                     f"parameters are {dtype}")
        else:
            raise ModelFileError(f"member {key!r} has shape {m.shape}; optimizer state arrays "
                                 f"are scalars or have one entry per parameter ({n_params},)")
        arr = m.read()
        try:  # values training cannot continue from (negative Adam v, counters near 2**64)
            check_state_array(name, arr)
        except ValueError as exc:
            raise ModelFileError(f"member {key!r}: {exc}") from None
        state[name] = arr
    return state


def _load_members(members):
    _check_format(members)
    unknown = sorted(k for k in members if k not in _META_KEYS and k != "params"
                     and not k.startswith(_OPT_PREFIX))
    if unknown:
        raise ModelFileError(f"unknown members {unknown} in the model file")
    for key in ("config", "params", "training"):
        if key not in members:
            raise ModelFileError(f"the model file lacks its {key!r} member")
    config = members["config"].read_json("the architecture")
    m = members["params"]
    _check_params_shape(m, config)  # before building: no allocation for a mismatched size
    net = _build_model(config)
    if m.shape != net.params.shape:
        raise ModelFileError(f"'params' has shape {m.shape}, but the architecture "
                             f"{net.layer_sizes} has {net.params.shape[0]} parameters")
    if m.dtype != net.dtype:
        raise ModelFileError(f"'params' has dtype {m.dtype}, but the architecture says "
                             f"{net.dtype.name}")
    params = m.read()
    if not np.isfinite(params).all():
        raise ModelFileError("'params' contains NaN or infinity")
    if "metadata" in members:
        _read_metadata(members)
    training = members["training"].read_json("the training state")
    _check_training(training)
    training["optimizer_state"] = _read_optimizer_state(
        members, net, training["optimizer_config"] is not None)
    try:
        net.set_training_state(training)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ModelFileError(f"invalid training state: {exc}") from None
    net.params[...] = params
    return net


def _read_metadata(members):
    if "metadata" not in members:
        return {}
    metadata = members["metadata"].read_json("the metadata")
    if not isinstance(metadata, dict):
        raise ModelFileError(f"'metadata' must be a JSON object, got {type(metadata).__name__}")
    return metadata


def load_metadata(path):
    """The ``metadata`` dict saved with the model at ``path`` (``{}`` when there is none).
    Raises :class:`ModelFileError` as :func:`load` does for a file that is not a model file."""
    def read(members):
        _check_format(members)
        return _read_metadata(members)

    return _read_path(path, read)


def load(path):
    """The :class:`~fastbp.MLP` saved at ``path`` (a file name or a readable binary file object)
    by :meth:`MLP.save <fastbp.MLP.save>`, with its optimizer state and history, ready to
    predict or to continue training with ``partial_fit``.

    Raises :class:`ModelFileError` (a ``ValueError``) when the file is not a fastbp model file,
    is truncated or corrupted, has an unsupported format version, or holds contents that do not
    fit its architecture (shapes, dtypes, unknown or missing entries); ``OSError`` when it cannot
    be opened. Loading never unpickles or executes anything from the file."""
    return _read_path(path, _load_members)


def _read_path(path, read):
    """``read(members)`` of the archive at ``path`` (a name or a readable binary file)."""
    if hasattr(path, "read"):
        return _read_archive(path, repr(path), read)
    try:
        name = os.fspath(path)
    except TypeError:
        raise TypeError("path must be a file name (str or os.PathLike) or a readable binary "
                        f"file object, got {type(path).__name__}") from None
    with open(name, "rb") as f:
        return _read_archive(f, repr(os.fsdecode(name)), read)


def _read_archive(f, where, read):
    try:
        with zipfile.ZipFile(f) as zf:
            return read(_open_members(zf))
    except ModelFileError as exc:
        raise ModelFileError(f"{where}: {exc}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, ValueError,
            KeyError, NotImplementedError, OSError, UnicodeError, OverflowError) as exc:
        # zipfile / zlib / .npy header errors: a truncated or corrupted file
        raise ModelFileError(f"{where}: not a readable fastbp model file (truncated or "
                             f"corrupted?): {type(exc).__name__}: {exc}") from None
