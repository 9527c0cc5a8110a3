"""Reading the ``fastbp`` command's data files: CSV (with or without a header) and ``.npz``.

Every problem is a :class:`DataError` whose message names the file and, where it applies, the
row (1-based line of the file) and the column, so that the command can print it as one line.
"""
import csv
import os
import zipfile

import numpy as np

# Classification when the target holds text, or integers with at most this many distinct
# values; anything else (fractions, or many distinct integers) is regression.
MAX_CLASSES = 100


class DataError(ValueError):
    """A data file that cannot be used, with the file, row and column named in the message."""


class Table:
    """Features ``X`` (N, k) float64, the raw target ``y`` ((N,) or (N, m), or None), the
    feature names (None without a header) and the target's name or column number."""

    def __init__(self, X, y, feature_names, target_name, path, lines=None, columns=None):
        self.X, self.y = X, y
        self.feature_names, self.target_name = feature_names, target_name
        self.path = path
        # the file's line number of each sample (CSV), for messages; rows 1..N otherwise
        self.lines = np.arange(1, X.shape[0] + 1) if lines is None else lines
        # the file's column (0-based) of each feature, for messages
        self.columns = list(range(X.shape[1])) if columns is None else columns

    def where(self, i):
        """Where sample ``i`` is, for a message: ``'FILE: row R'``."""
        return f"{self.path}: row {int(self.lines[i])}"

    def column(self, j):
        """Feature ``j`` for a message: ``'column C'`` or ``"column C ('name')"``."""
        name = f" ({self.feature_names[j]!r})" if self.feature_names else ""
        return f"column {self.columns[j] + 1}{name}"


def read_table(path, *, target="last", x_key="X", y_key="y", header=None, delimiter=",",
               dtype="float64", read_target=True):
    """Read a ``.npz`` archive (arrays ``x_key`` and, unless ``target`` is None, ``y_key``) or a
    CSV file (any other suffix). In a CSV file ``target`` names the target column by header name
    or by index (negative counts from the end; ``'last'`` is -1); ``None`` means the file holds
    features only. ``header``: True, False, or None to detect it (a first row with a text cell
    above a number; empty and ``NA``-like cells are missing values, not text). ``dtype``: the
    network's float type; a number beyond its range is an error (it would be infinity there).
    ``read_target`` False: the target column is only left out (``y`` is None), its cells
    neither parsed nor checked (predictions for data whose targets are unknown)."""
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file")
    if os.path.isdir(path):
        raise DataError(f"{path}: is a directory, not a data file")
    if str(path).lower().endswith(".npz"):
        return _read_npz(path, x_key, None if target is None or not read_target else y_key,
                         dtype)
    return _read_csv(path, target, header, delimiter, dtype, read_target)


def _read_npz(path, x_key, y_key, dtype):
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            for key in (x_key, y_key):
                if key is not None and key not in keys:
                    raise DataError(f"{path}: no array {key!r} in the archive (it holds "
                                    f"{', '.join(map(repr, keys)) or 'nothing'}); choose with "
                                    f"--x-key / --y-key")
            X = data[x_key]
            y = None if y_key is None else data[y_key]
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    if X.ndim != 2:
        raise DataError(f"{path}: array {x_key!r} must be 2-D (samples, features), got shape "
                        f"{X.shape}")
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: array {x_key!r} must be numeric, got dtype {X.dtype}")
    X = X.astype(np.float64)
    _check_finite(X, path, lambda j: f"column {j + 1}", dtype)
    if y is not None:
        if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
            raise DataError(f"{path}: array {y_key!r} must have shape ({X.shape[0]},) or "
                            f"({X.shape[0]}, m) to match {x_key!r}, got {y.shape}")
        if y.dtype.kind == "f":
            _check_finite(y.reshape(y.shape[0], -1), path, lambda j: f"{y_key!r} column {j + 1}",
                          dtype)
        elif y.dtype.kind not in "biuUS":
            raise DataError(f"{path}: array {y_key!r} has unsupported dtype {y.dtype}")
    return Table(X, y, None, y_key, path)


def _check_finite(X, path, column, dtype):
    bad = _unusable(X, dtype)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError(f"{path}: row {i + 1}, {column(j)}: "
                        f"{_why_unusable(X[i, j], f'value {X[i, j]}', dtype)}")


def _unusable(values, dtype):
    """Where ``values`` are NaN, infinite, or beyond ``dtype``'s range: the network, which
    computes in ``dtype``, would see infinity there."""
    return ~(np.abs(values) <= np.finfo(dtype).max)


def _why_unusable(value, shown, dtype):
    if not np.isfinite(value):
        return f"{shown} is not a finite number"
    return (f"{shown} is beyond the range of {np.dtype(dtype).name} (magnitude at most "
            f"{np.finfo(dtype).max:.4g}); train with --dtype float64")


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


# Cells that mean "missing" (R writes NA, others N/A or null): neither text nor a number when
# guessing the header, so a first data row with a missing value is not taken for a header.
MISSING = {"", "na", "n/a", "null", "none", "?"}


def _read_csv(path, target, header, delimiter, dtype, read_target=True):
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f, delimiter=delimiter), 1)
                    if row and any(cell.strip() for cell in row)]
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text (UTF-8) CSV file ({exc.reason} at byte "
                        f"{exc.start})") from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    width = len(rows[0][1])
    for n, row in rows:
        if len(row) != width:
            raise DataError(f"{path}: row {n} has {len(row)} columns, expected {width} (as in "
                            f"row {rows[0][0]})")
    if header is None:
        first = [_is_number(c) for c in rows[0][1]]
        text = [not n and c.strip().lower() not in MISSING for n, c in zip(first, rows[0][1])]
        second = [_is_number(c) for c in rows[1][1]] if len(rows) > 1 else [False] * width
        header = any(a and b for a, b in zip(text, second))
    names = [c.strip() for c in rows[0][1]] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: no data rows after the header")
    t = None if target is None else _column_index(path, target, names, width)
    feature_cols = [j for j in range(width) if j != t]
    if not feature_cols:
        raise DataError(f"{path}: no feature columns left besides the target")
    X = np.empty((len(body), len(feature_cols)))
    for out, j in enumerate(feature_cols):
        cells = [row[j].strip() for _, row in body]
        try:
            X[:, out] = np.array(cells, dtype=np.float64)
        except ValueError:
            X[:, out] = [_cell_number(path, n, j, names, c) for (n, _), c in zip(body, cells)]
        bad = _unusable(X[:, out], dtype)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: row {body[i][0]}, {_column_name(j, names)}: "
                            f"{_why_unusable(X[i, out], repr(cells[i]), dtype)}")
    y = None
    if t is not None and read_target:
        cells = [row[t].strip() for _, row in body]
        for (n, _), c in zip(body, cells):
            if not c:
                raise DataError(f"{path}: row {n}, {_column_name(t, names)} (the target): "
                                "missing value")
        try:
            y = np.array(cells, dtype=np.float64)
        except ValueError:
            y = np.array(cells, dtype=str)  # class names
        else:
            bad = _unusable(y, dtype)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise DataError(f"{path}: row {body[i][0]}, {_column_name(t, names)} (the "
                                f"target): {_why_unusable(y[i], repr(cells[i]), dtype)}")
    target_name = None if t is None else (names[t] if names else t)
    return Table(X, y, None if names is None else [names[j] for j in feature_cols],
                 target_name, path, np.array([n for n, _ in body]), feature_cols)


def _column_name(j, names):
    return f"column {j + 1}" + (f" ({names[j]!r})" if names else "")


def _cell_number(path, n, j, names, cell):
    if not cell:
        raise DataError(f"{path}: row {n}, {_column_name(j, names)}: missing value")
    try:
        return float(cell)
    except ValueError:
        raise DataError(f"{path}: row {n}, {_column_name(j, names)}: {cell!r} is not a number "
                        "(feature columns must be numeric)") from None


def _column_index(path, target, names, width):
    """The 0-based column of ``target``: a header name, or an index (negative from the end)."""
    if target == "last":
        return width - 1
    if names is not None and str(target) in names:
        if names.count(str(target)) > 1:
            raise DataError(f"{path}: the header has the column name {target!r} more than once")
        return names.index(str(target))
    try:
        j = int(target)
    except (TypeError, ValueError):
        known = f"the header has {', '.join(map(repr, names))}" if names else "the file has no " \
            "header, so give a column number"
        raise DataError(f"{path}: no column named {target!r} ({known})") from None
    if not -width <= j < width:
        raise DataError(f"{path}: column {j} is out of range for {width} columns (0..{width - 1}"
                        f", or -1..-{width} from the end)")
    return j % width


def infer_task(y):
    """``'classification'`` for text targets or integers with at most :data:`MAX_CLASSES`
    distinct values, else ``'regression'`` (also for 2-D targets)."""
    if y.ndim == 2:
        return "regression"
    if y.dtype.kind in "US":
        return "classification"
    if y.dtype.kind in "biu":
        return "classification" if len(np.unique(y)) <= MAX_CLASSES else "regression"
    integral = np.all(y == np.round(y))
    return "classification" if integral and len(np.unique(y)) <= MAX_CLASSES else "regression"


def encode_labels(y, path):
    """Class labels ``y`` (N,) -> (codes 0..K-1 int64, the sorted classes as a list of plain
    Python values: ints for integral numbers, else floats or strings)."""
    if y.ndim != 1:
        raise DataError(f"{path}: classification needs one target column, got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{path}: the target has a single class ({plain_label(classes[0])!r}); "
                        "classification needs at least 2")
    return codes.astype(np.int64), [plain_label(c) for c in classes]


def plain_label(value):
    """A class label as JSON-able plain data: 3.0 -> 3, numpy scalars -> Python values."""
    if isinstance(value, (str, np.str_, bytes, np.bytes_)):
        return value.decode() if isinstance(value, (bytes, np.bytes_)) else str(value)
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def codes_for(table, classes):
    """Encode ``table.y`` with a model's ``classes``; a label the model never saw is an error
    naming it and its row."""
    if table.y.ndim != 1:
        raise DataError(f"{table.path}: the model is a classifier and needs one target column, "
                        f"got shape {table.y.shape}")
    index = {plain_label(c): i for i, c in enumerate(classes)}
    codes = np.empty(table.y.shape[0], dtype=np.int64)
    for i, value in enumerate(table.y):
        key = plain_label(value)
        if key not in index:
            raise DataError(f"{table.where(i)}: target value {key!r} is not one of the model's "
                            f"classes {classes}")
        codes[i] = index[key]
    return codes
