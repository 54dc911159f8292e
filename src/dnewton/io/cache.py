"""A binary cache of parsed LIBSVM files (``--data-cache DIR``).

Parsing text is the slow part of reading a large LIBSVM file; a CSR matrix in an
uncompressed ``.npz`` (``data``, ``indices``, ``indptr``, ``shape`` as
`scipy.sparse.save_npz` keeps them, plus ``y``) loads at disk speed. An entry is
named by a fingerprint of the file's *content* (BLAKE2b of every byte, read at
disk speed) and holds it too, so no edit short of restoring the very bytes can be
served a stale entry: not one that keeps the size, nor one whose modification
time is put back. Only regular files are cached (a pipe, such as ``<(cat f)``,
can be read once only); only files that passed every check are cached, before
any ``n_features`` padding or cutting.

An entry is checked on load as strictly as the text it stands for: index arrays
that describe a CSR matrix of its shape, column indices increasing within each
row (the format's rule), finite values, one finite label per row, at least one
row. An entry that fails any check, or cannot be read, is skipped: the file is
parsed (and the entry written afresh).

Entries are written atomically (a temporary file in DIR, then a rename): ranks
that miss at once each write a whole, identical entry, and a reader never sees
half of one. A DIR that cannot be written (read-only, full) only means no cache:
it is skipped silently, and no temporary file is left behind.
"""

import hashlib
import os
import stat
import tempfile
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20  # bytes hashed per read


def identity(path):
    """(device, inode, size, mtime ns, ctime ns) of the regular file at `path`, or
    None for anything else (a pipe, a device): what must not change while the file
    is fingerprinted and parsed. A write changes the ctime even when the mtime is
    put back."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def fingerprint(path):
    """The BLAKE2b digest (hex) of every byte of the file at `path`."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def entry(folder, name, digest):
    """Where the entry of a file called `name` with content `digest` lives in `folder`."""
    return Path(folder) / f"{Path(name).name}.{digest[:32]}.npz"


class Key:
    """What identifies a file's content for the cache, taken before it is parsed."""

    def __init__(self, path):
        self.path = Path(path)
        self.before = identity(path)
        self.digest = None
        if self.before is not None:
            try:
                self.digest = fingerprint(path)
            except OSError:
                self.before = None

    @property
    def usable(self):
        """A regular file, fingerprinted, that has not changed since."""
        return self.digest is not None and identity(self.path) == self.before


def valid(data, indices, indptr, shape, y):
    """Whether the arrays of an entry are a CSR matrix and labels that the LIBSVM
    reader could have produced (see the module doc); never raises."""
    try:
        if shape.shape != (2,) or shape.dtype.kind not in "iu":
            return False
        rows, columns = (int(v) for v in shape)
        if rows < 1 or columns < 0:
            return False
        if (data.ndim, indices.ndim, indptr.ndim, y.ndim) != (1, 1, 1, 1):
            return False
        if data.dtype != np.float64 or y.dtype != np.float64:
            return False
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            return False
        if len(indptr) != rows + 1 or len(y) != rows or len(indices) != len(data):
            return False
        if indptr[0] != 0 or indptr[-1] != len(data) or np.any(np.diff(indptr) < 0):
            return False
        if len(indices) and (indices.min() < 0 or indices.max() >= columns):
            return False
        # Strictly increasing within each row: a step that is not up must start a row.
        steps = np.flatnonzero(np.diff(indices.astype(np.int64)) <= 0) + 1
        if not np.isin(steps, indptr).all():
            return False
        return bool(np.isfinite(data).all() and np.isfinite(y).all())
    except (TypeError, ValueError, OverflowError):
        return False


def load(folder, key):
    """(X CSR, y) of the file of `key` (a `Key`) from the cache in `folder`, or None
    on a miss (no entry, a damaged or invalid one, a file that is not cacheable)."""
    if not key.usable:
        return None
    try:
        with np.load(entry(folder, key.path.name, key.digest), allow_pickle=False) as a:
            if str(a["digest"]) != key.digest:
                return None
            arrays = [a[name] for name in ("data", "indices", "indptr", "shape", "y")]
    except Exception:  # noqa: BLE001 -- no entry, or a damaged one (zip, zlib, format)
        return None  # parse the file
    if not valid(*arrays):
        return None
    data, indices, indptr, shape, y = arrays
    from scipy.sparse import csr_matrix  # on first use: dense runs never need it

    X = csr_matrix((data, indices, indptr), shape=tuple(int(v) for v in shape))
    return X, y


def store(folder, key, X, y):
    """Write the entry of the file of `key` (X CSR, y) into `folder`; quietly nothing
    on failure, and nothing if the file changed since `key` was taken (X may then be
    neither version)."""
    if not key.usable:
        return
    temporary = None
    try:
        where = entry(folder, key.path.name, key.digest)
        where.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=where.parent, prefix=f".{where.name}.",
                                         suffix=".tmp", delete=False) as f:
            temporary = f.name
            np.savez(f, data=X.data, indices=X.indices, indptr=X.indptr,
                     shape=np.array(X.shape), y=y, digest=np.array(key.digest))
        os.replace(temporary, where)
        temporary = None
    except OSError:
        pass
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass
