"""A binary cache of parsed LIBSVM files (``--data-cache DIR``).

Parsing text is the slow part of reading a large LIBSVM file; a CSR matrix in an
uncompressed ``.npz`` (``data``, ``indices``, ``indptr``, ``shape`` as
`scipy.sparse.save_npz` keeps them, plus ``y``) loads at disk speed. An entry is
named by a hash of the file's resolved path, size and modification time (ns), and
holds them too: a file that changed in any of them misses the cache and is parsed
(and cached) afresh, so a stale entry is never served. Only files that passed
every check are cached, before any ``n_features`` padding or cutting.

Entries are written atomically (a temporary file in DIR, then a rename): ranks
that miss at once each write a whole, identical entry, and a reader never sees
half of one. A DIR that cannot be written (read-only, full) only means no cache:
it is skipped silently, as is an entry that cannot be read.
"""

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix


def identity(path):
    """(resolved path, size, mtime in ns) of the data file: what an entry must match."""
    real = os.path.realpath(path)
    info = os.stat(real)
    return real, info.st_size, info.st_mtime_ns


def entry(folder, key):
    """Where the entry of a file of identity `key` lives in `folder`."""
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    return Path(folder) / f"{Path(key[0]).name}.{digest}.npz"


def load(folder, path):
    """(X CSR, y) of `path` from the cache in `folder`, or None on a miss."""
    try:
        key = identity(path)
        with np.load(entry(folder, key), allow_pickle=False) as a:
            if (str(a["path"]), int(a["size"]), int(a["mtime_ns"])) != key:
                return None
            X = csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
            return X, a["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # no entry, or a damaged one: parse the file


def store(folder, path, key, X, y):
    """Write the entry of `path` (X CSR, y) into `folder`; quietly nothing on failure.

    `key` is `identity(path)` taken before the file was parsed: if the file has
    changed since, X may be neither version, and nothing is stored.
    """
    temporary = None
    try:
        if identity(path) != key:
            return
        where = entry(folder, key)
        real, size, mtime_ns = key
        where.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where.parent, prefix=f".{where.name}.",
                                         suffix=".tmp", delete=False) as f:
            temporary = f.name
            np.savez(f, data=X.data, indices=X.indices, indptr=X.indptr,
                     shape=np.array(X.shape), y=y, path=np.array(real),
                     size=np.array(size), mtime_ns=np.array(mtime_ns))
        os.replace(temporary, where)
    except OSError:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
