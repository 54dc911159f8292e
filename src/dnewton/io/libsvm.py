"""LIBSVM files: scikit-learn's fast reader, and a precise diagnosis when it fails.

The format is ``label index:value index:value ...`` with 1-based, strictly
increasing indices; ``#`` starts a comment; ``.gz`` and ``.bz2`` files are read
compressed. The fast path is `sklearn.datasets.load_svmlight_file`; only when it
refuses a file, or the file holds values dnewton refuses (non-finite numbers, an
index beyond the model's features), does `diagnose` scan the file line by line in
Python to name the first offending line.
"""

import bz2
import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import cache as data_cache


def _open(path):
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    return opener(path, "rb")


# Numbers as the format writes them: decimal, as C's strtod reads them. Python's
# float() and int() alone also take digit groups ("1_000"), which the fast reader
# lets through as well.
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_WHOLE = re.compile(r"\+?\d+")
_QID = re.compile(r"qid:[+-]?\d+")

# Byte sequences the fast reader accepts where the format does not (digit groups;
# a first token it takes for a qid and drops unread): a file holding any of them
# is scanned line by line as well (`_lenient`).
_SUSPECT = (b"_", b"qid")


def _number(text, what):
    try:
        value = float(text)
    except ValueError:
        return None, f"{what} {text!r} is not a number"
    if not np.isfinite(value):
        return None, f"{what} {text} is not finite"
    if not _DECIMAL.fullmatch(text):
        return None, f"{what} {text!r} is not a number"
    return value, None


def default_limit(n_features):
    """How a message names `n_features` when no `limit` is given."""
    return f"the model's {n_features} features"


def check_line(text, n_features=None, limit=None):
    """The first problem of one line (comment already removed), or None.

    `limit` names where `n_features` comes from in the message (default "the
    model's N features").
    """
    tokens = text.split()
    if not tokens:
        return None
    _, problem = _number(tokens[0], "label")
    if problem:
        return problem
    previous = 0
    features = tokens[1:]
    if features and features[0].startswith("qid"):  # a query id, right after the label
        if not _QID.fullmatch(features[0]):
            return f"{features[0]!r} is not qid:N"
        features = features[1:]
    for token in features:
        index, sep, value = token.partition(":")
        if not sep:
            return f"{token!r} is not index:value"
        if not _WHOLE.fullmatch(index):
            return f"feature index {index!r} is not a whole number"
        index = int(index)
        if index < 1:
            return f"feature index {index} (indices start at 1)"
        if index <= previous:
            return f"feature index {index} after {previous} (indices must increase)"
        if n_features is not None and index > n_features:
            return f"feature index {index} beyond {limit or default_limit(n_features)}"
        previous = index
        _, problem = _number(value, f"value of feature {index}")
        if problem:
            return problem
    return None


def diagnose(path, n_features=None, limit=None):
    """'line N: problem' for the first bad line of `path`, or None if none is found."""
    try:
        with _open(Path(path)) as f:
            for number, raw in enumerate(f, start=1):
                try:  # a comment may hold any bytes
                    line = raw.partition(b"#")[0].decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {number}: not text"
                problem = check_line(line, n_features, limit)
                if problem:
                    return f"line {number}: {problem}"
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # zlib: a damaged .gz
        return f"cannot be read ({exc})"
    return None


def _lenient(path):
    """Whether `path` holds a byte sequence of `_SUSPECT` (a pass at disk or
    decompression speed; a pipe, already read, holds nothing more)."""
    tail = b""
    try:
        with _open(Path(path)) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                if any(s in tail + chunk for s in _SUSPECT):
                    return True
                tail = chunk[-2:]
    except (OSError, EOFError, ValueError, zlib.error):
        return True  # read once, not twice: let the line scan say what it finds
    return False


def _parse(path, n_features, cut, limit):
    """(X, y) of a file that passes every check but the width; InputError otherwise."""
    from sklearn.datasets import load_svmlight_file

    try:
        # query_id: only then does the reader parse a qid's value (else a
        # "qid:3!3:4" would drop its feature silently).
        X, y, _ = load_svmlight_file(str(path), dtype=np.float64, zero_based=False,
                                     query_id=True)
    except Exception as exc:  # noqa: BLE001 -- any refusal becomes our own error
        raise InputError(f"{path}: {diagnose(path, n_features) or exc}") from None
    if X.shape[0] == 0:
        raise InputError(f"{path}: the file holds no instances")
    if _lenient(path):
        problem = diagnose(path, None if cut else n_features, limit)
        if problem:
            raise InputError.naming(f"{path}: {problem}")
    if not (np.isfinite(X.data).all() and np.isfinite(y).all()):
        problem = diagnose(path, None if cut else n_features, limit)
        raise InputError.naming(f"{path}: {problem or 'a value that is not finite'}")
    return X, y


def load(path, n_features=None, cut=False, limit=None, cache=None):
    """(X, y, n_read): X a CSR float64 matrix (l, n_features), y float64 labels (l,),
    n_read the largest feature index in the file.

    Raises InputError naming the file, and where possible the line, on any
    problem: a missing file, a malformed line, index 0 or out of order,
    non-finite values, an index beyond `n_features` (unless `cut`: then the
    columns beyond it are dropped), or no instances at all. `limit` names where
    `n_features` comes from (a message template; see `check_line`). With `cache`
    (a folder), a file read before (the same bytes) comes from its binary entry
    there (`io.cache`), and a file parsed here is stored there.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory, not a data file")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    # The file's identity only with a cache (a pipe has none), taken before parsing.
    key = data_cache.Key(path) if cache is not None else None
    cached = data_cache.load(cache, key) if cache is not None else None
    if cached is None:
        X, y = _parse(path, n_features, cut, limit)
        if cache is not None:
            data_cache.store(cache, key, X, y)
    else:
        X, y = cached
    n_read = X.shape[1]
    if n_features is not None and n_read > n_features and not cut:
        # The precise message (line and index) comes from the text.
        problem = diagnose(path, n_features, limit) or (
            f"feature index {n_read} beyond {limit or default_limit(n_features)}")
        raise InputError.naming(f"{path}: {problem}")
    if n_features is not None and n_read > n_features:
        X = X[:, :n_features].tocsr()
    elif n_features is not None and n_read < n_features:
        X.resize((X.shape[0], n_features))
    return X, y, n_read
