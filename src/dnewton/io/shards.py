"""Data sets that each rank reads only a share of (docs/design.md, "Reading by shares").

`open_dataset` opens a data file collectively and returns a `ShardedData`: every rank
knows the set's size, its feature count and all its labels (8 bytes an instance,
like the predictions), but no rank holds its features. `ShardedData.partition` then
gives each rank the rows of its copy of the layout (``--replicas``) in the columns
of its layer-1 blocks, and nothing more:

* binary inputs are read by slices: a NumPy ``.npz`` whose members are stored
  uncompressed (``np.savez``) and the ``.npy`` folder of `dnewton convert` through
  memory maps, so a rank touches only the pages of its rows and columns; a
  compressed ``.npz`` (``np.savez_compressed``) cannot be mapped and is streamed, a
  bounded buffer at a time; a ``--data-cache`` entry is a mapped CSR matrix;
* a LIBSVM text file is cut into one byte range per rank, each rank parsing the
  lines that start in its range (`sklearn.datasets.load_svmlight_file`'s offset and
  length); the parsed rows then go where they are needed in three ``Alltoallv``
  (row lengths, column indices, values), buffers rather than pickles.

The preprocessing statistics (means, standard deviations, the extremes that tell a
constant feature) are sums over the replica group, whose ranks hold the same
columns for all instances between them, so they equal the one-rank values up to
rounding. Errors that only some ranks can see (a bad line, a value that is not
finite) are agreed (`errors.agreed`) before the next collective.
"""

import json
import os
import struct
import zipfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from mpi4py import MPI

from .. import _sparse as sparse
from ..errors import InputError, agreed, alike_everywhere, everywhere
from ..parallel.layout import contiguous_share
from . import cache as data_cache
from . import libsvm
from .data import (
    DATASETS,
    SPARSE_MAX_DENSITY,
    PartitionedData,
    RawData,
    _int32,
    read_dataset,
    std_from_sums,
)

# `dnewton convert`'s output: a folder of .npy arrays and this description.
NPY_FORMAT = "dnewton-npy"
NPY_META = "meta.json"
# Rows per read of a streamed (compressed) member: bounds the reading buffer.
STREAM_ROWS = 4096
# The width a LIBSVM byte range is parsed with (load_svmlight_file needs one).
ANY_WIDTH = 2**31 - 1


# -- arrays read by slices ---------------------------------------------------------------


def _npz_member(path, name):
    """Member `name` (``X`` or ``y``) of the .npz `path`: a read-only memory map when
    the member is stored uncompressed, else a `_StreamedArray`."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return _StreamedArray(path, info.filename)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        shape, fortran, dtype = _npy_header(f)
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError("an array of Python objects")
    return np.memmap(path, dtype, "r", offset, shape, order="F" if fortran else "C")


def _npy_header(f):
    version = np.lib.format.read_magic(f)
    read = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if read is None:
        raise ValueError(f".npy format version {version}")
    return read(f)


class _StreamedArray:
    """A compressed .npz member, read front to back a bounded buffer at a time.

    Only what `take` needs: rows `start:stop` and columns `cols` of a 2-D array, or
    a whole 1-D one. Costs a decompression from the start of the member per call.
    """

    def __init__(self, path, member):
        self.path, self.member = path, member
        with zipfile.ZipFile(path) as archive, archive.open(member) as f:
            self.shape, self.fortran, self.dtype = _npy_header(f)
        self.ndim = len(self.shape)

    def take(self, rows, cols):
        l = self.shape[0]
        width = self.shape[1] if self.ndim == 2 else 1
        item = self.dtype.itemsize
        with zipfile.ZipFile(self.path) as archive, archive.open(self.member) as f:
            _npy_header(f)
            if self.ndim == 1:
                return np.frombuffer(f.read(l * item), self.dtype)[rows]
            out = np.empty((rows.stop - rows.start, cols.stop - cols.start), self.dtype)
            if self.fortran:  # column after column: skip to `cols`, keep `rows` of each
                _skip(f, cols.start * l * item)
                for j in range(cols.stop - cols.start):
                    column = np.frombuffer(_read(f, l * item), self.dtype)
                    out[:, j] = column[rows]
                return out
            _skip(f, rows.start * width * item)
            for lo in range(rows.start, rows.stop, STREAM_ROWS):
                hi = min(lo + STREAM_ROWS, rows.stop)
                chunk = np.frombuffer(_read(f, (hi - lo) * width * item), self.dtype)
                out[lo - rows.start:hi - rows.start] = chunk.reshape(hi - lo, width)[:, cols]
            return out


def _read(f, n):
    data = f.read(n)
    if len(data) != n:
        raise ValueError("the member ends early")
    return data


def _skip(f, n):
    while n > 0:
        n -= len(_read(f, min(n, 1 << 24)))


def _by_range(read, rows, *args):
    """`read(rows, *args)` for `rows` a slice or a sorted index array: an array is
    read as the range it spans, then its rows picked (a bounded transient)."""
    if isinstance(rows, slice):
        return read(rows, *args)
    lo = int(rows[0]) if len(rows) else 0
    hi = int(rows[-1]) + 1 if len(rows) else 0
    return read(slice(lo, hi), *args)[rows - lo]


def _take(array, rows, cols=None):
    """Rows `rows` (a slice) and, of a 2-D array, columns `cols` (a slice), as a new
    in-memory array: of a memory map, only those pages are read."""
    if isinstance(array, _StreamedArray):
        return array.take(rows, cols)
    if cols is None:
        return np.array(array[rows])
    return np.array(array[rows, cols])


@dataclass
class _MappedCSR:
    """A CSR matrix whose arrays are memory maps (or in memory): rows read by slices.
    ``shape`` may be wider than the largest index (trailing columns of zeros)."""

    data: object
    indices: object
    indptr: object
    shape: tuple

    def rows(self, rows):
        """Rows `rows` (a slice) as an in-memory CSR matrix."""
        lo, hi = int(self.indptr[rows.start]), int(self.indptr[rows.stop])
        indptr = np.array(self.indptr[rows.start:rows.stop + 1], dtype=np.int64) - lo
        return sparse.csr_matrix((np.array(self.data[lo:hi], dtype=np.float64),
                                  np.array(self.indices[lo:hi]), indptr),
                                 shape=(rows.stop - rows.start, self.shape[1]))


# -- the data set each rank holds a share of -----------------------------------------


@dataclass
class ShardedData:
    """A data set known by its size and labels on every rank; its features are read
    by `partition` (collective), each rank its share. Stands where `data.RawData`
    stands for `train` and `Predictor.outputs` (no ``X``).

    ``y`` (l,) are all labels; ``nnz`` the stored entries when the features are
    sparse (CSR on disk, or LIBSVM), None when dense. The features come from one of
    ``dense`` (an (l, n_read) array by slices), ``csr`` (a `_MappedCSR`, l rows) or
    ``parsed`` (this rank's parsed LIBSVM lines: a CSR of rows ``first ..``). A
    subset (`take`) of a binary file reads the file's rows ``rows``.
    """

    comm: object
    n_instances: int
    n_features: int
    y: np.ndarray
    source: str
    nnz: object = None
    cut_from: int = 0
    dense: object = None
    csr: object = None
    parsed: object = None
    first: int = 0
    once: bool = False  # drop the parsed rows after the first `partition`
    rows: object = None  # a subset's rows of the file (sorted), for `dense` and `csr`

    @property
    def sparse(self):
        return self.nnz is not None

    def density(self):
        """Stored entries over l n_0 (1 when dense)."""
        if self.nnz is None:
            return 1.0
        return self.nnz / max(1, self.n_instances * self.n_features)

    def partition(self, groups, layout, classes, prep, fit=False, dtype=np.float64,
                  share=None):
        """Collective over ``groups.job``: this rank's `PartitionedData`, as
        `data.partition` makes it from the whole set, but reading only the rows of
        `share` (a slice; None: all) in the columns of this rank's input groups.

        With `fit`, `prep` learns its means (and stds) from sums over
        ``groups.replicas``, the ranks holding the same columns in every copy (one
        copy per share of the instances: together all l of them).
        """
        rank = groups.rank
        share = slice(0, self.n_instances) if share is None else share
        input_groups = sorted({blk.row for blk in layout.blocks_of(rank) if blk.layer == 1})
        keep_sparse = (self.sparse and not prep.centers
                       and self.nnz <= SPARSE_MAX_DENSITY * self.n_instances * self.n_features)
        received = None
        if self.parsed is None and self.once:
            raise RuntimeError(f"{self.source} was read for one partition, and has been")
        if self.parsed is not None:
            received = exchange(groups.job, self.parsed, self.first, layout,
                                groups.n_replicas, self.n_instances)
            if self.once:  # the rows a rank parsed are not its share: no longer needed
                self.parsed = None
        blocks = {}
        with agreed(groups.job):
            for a in input_groups:
                cols = layout.group(0, a)
                if received is not None:  # all columns: no copy
                    whole = cols.start == 0 and cols.stop == self.n_features
                    block = received if whole else received[:, cols]
                elif self.csr is not None:
                    block = _by_range(self.csr.rows, self._file_rows(share))[:, cols]
                else:
                    block = _by_range(_take_rows, self._file_rows(share), self.dense, cols)
                    if block.dtype.kind not in "biuf":
                        raise InputError(f"{self.source}: X ({block.dtype}) must be numeric")
                if sparse.issparse(block):
                    values = block.data
                    block = sparse.csr_matrix(block, dtype=np.float64) if keep_sparse \
                        else block.toarray()
                else:
                    block = values = np.asarray(block, dtype=np.float64)
                if not np.isfinite(values).all():
                    raise InputError(f"{self.source}: X holds a value that is not finite")
                blocks[a] = block
        del received  # its columns are in the blocks now
        features = {}
        across = groups.replicas.comm
        for a, block in blocks.items():
            if keep_sparse:
                if prep.scale != 1.0:
                    block.data = block.data / prep.scale
                features[a] = _int32(block.astype(dtype, copy=False))
                continue
            if prep.scale != 1.0:
                block /= prep.scale
            if prep.centers:
                if fit:
                    prep.means[a] = _summed(across, block.sum(axis=0)) / self.n_instances
                block -= prep.means[a]
            if prep.standardize:
                if fit:
                    prep.stds[a] = _std(across, block, prep.means[a], self.n_instances)
                block /= prep.stds[a]
            features[a] = np.ascontiguousarray(block, dtype=dtype)
        owns_output = any(blk.layer == layout.n_layers for blk in layout.blocks_of(rank))
        labels = None
        if classes is not None:
            with alike_everywhere():  # every rank checks all of y: they fail alike
                labels = classes.encode(self.y, self.source)[share]
            labels = labels if owns_output else None
        return PartitionedData(share.stop - share.start, features, labels, keep_sparse,
                               first=share.start, n_total=self.n_instances)

    def whole(self):
        """Collective: the whole set on every rank as a `data.RawData` (what -C auto's
        held-out split needs)."""
        if self.parsed is not None:
            X = _allgather_csr(self.comm, self.parsed)
        elif self.csr is not None:
            X = _by_range(self.csr.rows, self._file_rows(slice(0, self.n_instances)))
            X = X[:, :self.n_features]
        else:
            X = _by_range(_take_rows, self._file_rows(slice(0, self.n_instances)),
                          self.dense, slice(0, self.n_features)).astype(np.float64)
        return RawData(X, self.y, self.source, self.cut_from)

    def _file_rows(self, share):
        """The file's rows of this set's instances `share` (a slice, or an index array
        for a subset)."""
        return share if self.rows is None else self.rows[share]

    def take(self, index, source):
        """The instances `index` (sorted) as a set of their own, named `source`, still
        read by shares: a held-out split (-C auto, early stopping) without gathering
        the set. Collective (one sum) for a LIBSVM file: its parsed rows are divided
        where they lie."""
        index = np.asarray(index, dtype=np.int64)
        subset = replace(self, n_instances=len(index), y=self.y[index], source=source,
                         once=False)
        if self.parsed is not None:
            lo, hi = np.searchsorted(index, [self.first, self.first + self.parsed.shape[0]])
            subset.parsed = self.parsed[index[lo:hi] - self.first]
            subset.first = int(lo)
        else:
            subset.rows = self._file_rows(index)
        if self.nnz is not None:  # the subset's own entries, for the sparse decision
            subset.nnz = _subset_nnz(self, subset)
        return subset


def _take_rows(rows, array, cols):
    return _take(array, rows, cols)


def _subset_nnz(whole, subset):
    """Stored entries of `subset` (a `ShardedData.take` of `whole`), summed over ranks
    for parsed rows, counted from the mapped offsets otherwise."""
    if subset.parsed is not None:
        return int(_summed(whole.comm, np.array([float(subset.parsed.nnz)]))[0])
    indptr = whole.csr.indptr
    return int(np.sum(np.asarray(indptr[subset.rows + 1]) - np.asarray(indptr[subset.rows])))


def _summed(comm, values):
    """`values` (float64) summed over `comm` (None: this rank alone)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    if comm is not None:
        comm.Allreduce(MPI.IN_PLACE, values)
    return values


def _std(comm, block, mean, n_total):
    """`data.feature_std` of the centred columns that the ranks of `comm` hold rows
    of, from sums of squares and extremes over `comm`."""
    squares = _summed(comm, np.einsum("ij,ij->j", block, block))
    high = np.ascontiguousarray(block.max(axis=0, initial=-np.inf))
    low = np.ascontiguousarray(block.min(axis=0, initial=np.inf))
    if comm is not None:
        comm.Allreduce(MPI.IN_PLACE, high, op=MPI.MAX)
        comm.Allreduce(MPI.IN_PLACE, low, op=MPI.MIN)
    return std_from_sums(squares, n_total, high, low, mean)


# -- LIBSVM: byte ranges, then the exchange ------------------------------------------


@contextmanager
def _readable(path):
    """A damaged .gz or .bz2 (zlib, EOF or format errors while reading) as our
    InputError naming the file, as `libsvm.load` reports it."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None


def text_size(path):
    """Bytes of `path`'s text: the file's size, or of a .gz/.bz2 its decompressed size
    (read through once)."""
    if path.suffix not in (".gz", ".bz2"):
        return path.stat().st_size
    size = 0
    with _readable(path), libsvm._open(path) as f:
        while chunk := f.read(1 << 24):
            size += len(chunk)
    return size


def line_start(path, position):
    """The first byte at or after `position` of `path`'s text that starts a line
    (0, or the byte after a newline), or the text's end."""
    if position <= 0:
        return 0
    with _readable(path), libsvm._open(path) as f:
        f.seek(position - 1)
        at = position - 1
        while chunk := f.read(1 << 16):
            newline = chunk.find(b"\n")
            if newline >= 0:
                return at + newline + 1
            at += len(chunk)
    return at


def parse_range(path, offset, length):
    """(X CSR float64, y) of the lines of `path` whose first byte lies in bytes
    ``offset .. offset + length - 1`` of its text. InputError naming the file (and
    the line) otherwise."""
    from sklearn.datasets import load_svmlight_file

    first, end = line_start(path, offset), line_start(path, offset + length)
    # scikit-learn's reader, given an offset, skips past the next newline, then
    # reads every line that starts at or before offset + length: from the newline
    # before `first` (or from 0) to end - 1 it reads exactly the lines in first .. end - 1.
    skip_from = max(first - 1, 0)
    if end - 1 - skip_from <= 0:  # no line, or one empty line (a length of 0 means all)
        return sparse.csr_matrix((0, 0)), np.empty(0)
    try:
        # A range needs a width; any index fits this one, and the true width (the
        # largest index) comes after.
        X, y = load_svmlight_file(str(path), n_features=ANY_WIDTH, dtype=np.float64,
                                  zero_based=False, offset=skip_from,
                                  length=end - 1 - skip_from)
    except Exception as exc:  # noqa: BLE001 -- any refusal becomes our own error
        raise InputError(f"{path}: {libsvm.diagnose(path) or exc}") from None
    if not (np.isfinite(X.data).all() and np.isfinite(y).all()):
        raise InputError(f"{path}: {libsvm.diagnose(path) or 'a value that is not finite'}")
    width = int(X.indices.max()) + 1 if X.nnz else 0
    X = sparse.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))
    return X, y


def read_text_shard(comm, path, n_features=None, cut=False, limit=None):
    """Collective: this rank's lines of the LIBSVM file `path` parsed, and the set.

    Returns (X, first, n_instances, n_read, y_all): X the CSR of this rank's lines
    (rows ``first ..``, columns up to the largest index of any rank, then cut or
    padded to `n_features`), n_read the largest index in the file, y_all every
    label. Raises (on every rank) as `libsvm.load` does.
    """
    path = Path(path)
    with agreed(comm):
        if path.is_dir():
            raise InputError(f"{path}: is a directory, not a data file")
        if not path.exists():
            raise InputError(f"{path}: no such file")
    size = np.zeros(1, dtype=np.int64)
    with agreed(comm):
        if comm.rank == 0:
            size[0] = text_size(path)
    comm.Bcast(size, root=0)
    start = int(size[0]) * comm.rank // comm.size
    stop = int(size[0]) * (comm.rank + 1) // comm.size
    with agreed(comm):
        X, y = parse_range(path, start, stop - start)
    counts = np.array([X.shape[0], X.shape[1]], dtype=np.int64)
    every = np.empty(2 * comm.size, dtype=np.int64)
    comm.Allgather(counts, every)
    rows, widths = every[0::2], every[1::2]
    n_instances, n_read = int(rows.sum()), int(widths.max())
    first = int(rows[:comm.rank].sum())
    if n_instances == 0:
        raise everywhere(InputError(f"{path}: the file holds no instances"))
    if n_features is not None and n_read > n_features and not cut:
        problem = libsvm.diagnose(path, n_features, limit) or (
            f"feature index {n_read} beyond {limit or libsvm.default_limit(n_features)}")
        raise everywhere(InputError.naming(f"{path}: {problem}"))
    width = n_read if n_features is None else n_features
    if X.shape[1] > width:
        X = X[:, :width].tocsr()
    X.resize((X.shape[0], width))
    y_all = np.empty(n_instances)
    comm.Allgatherv(np.ascontiguousarray(y, dtype=np.float64), [y_all, rows])
    return X, first, n_instances, n_read, y_all


def replica_shares(n_instances, n_replicas):
    """(start, stop) of every replica's contiguous share of `n_instances`
    (`parallel.layout.contiguous_share`)."""
    return [(share.start, share.stop) for share in
            (contiguous_share(n_instances, n_replicas, c) for c in range(n_replicas))]


def needed_columns(layout, rank):
    """Boolean mask (n_0,) of the features whose input groups `rank`'s layer-1 blocks
    use."""
    mask = np.zeros(layout.widths[0], dtype=bool)
    for blk in layout.blocks_of(rank):
        if blk.layer == 1:
            mask[layout.group(0, blk.row)] = True
    return mask


def exchange(comm, X, first, layout, n_replicas, n_instances):
    """Collective over `comm` (``n_replicas`` replicas of `layout`, rank c k + r being
    rank r of replica c): send the rows of CSR `X` (global rows ``first ..``) to every
    rank whose replica's share holds them, in the columns its layer-1 blocks use;
    return this rank's rows of its share (global order) as CSR (share rows, n_0).

    Moves three buffers with ``Alltoallv``, one after the other so that one send
    buffer exists at a time: the rows' lengths, the column indices (int32 below 2^31
    features) and the values (float64).
    """
    k = layout.n_ranks
    shares = replica_shares(n_instances, n_replicas)
    masks = {}  # one mask per distinct set of input groups, not per rank
    for r in range(k):
        wanted = tuple(sorted({blk.row for blk in layout.blocks_of(r) if blk.layer == 1}))
        if wanted not in masks:
            masks[wanted] = needed_columns(layout, r) if wanted else None
        masks[r] = masks[wanted]
    pieces = []  # per destination: its rows lo .. hi - 1, entries a .. b - 1, columns
    counts = np.zeros((2, comm.size), dtype=np.int64)
    for dest in range(comm.size):
        replica, r = divmod(dest, k)
        lo = min(max(shares[replica][0] - first, 0), X.shape[0])
        hi = max(lo, min(shares[replica][1] - first, X.shape[0]))
        if masks[r] is None:  # no layer-1 block: no rows either
            lo = hi
        a, b = int(X.indptr[lo]), int(X.indptr[hi])
        pieces.append((lo, hi, a, b, masks[r]))
        if hi > lo:
            counts[:, dest] = hi - lo, int(np.count_nonzero(masks[r][X.indices[a:b]]))
    received = np.empty_like(counts)
    for i in range(2):
        comm.Alltoall(np.ascontiguousarray(counts[i]), received[i])

    # Which entries a piece takes is recomputed in each pass rather than kept: with
    # many ranks per copy, one mask per destination would outweigh the data.
    def row_lengths(lo, hi, a, b, mask):
        if hi == lo:
            return np.empty(0, dtype=np.int64)
        row_of = np.repeat(np.arange(hi - lo), np.diff(X.indptr[lo:hi + 1]))
        return np.bincount(row_of[mask[X.indices[a:b]]], minlength=hi - lo)

    # int32 column indices where they fit: a third less to send and to keep
    narrow = X.shape[1] < 2**31
    index_type = (np.int32, MPI.INT32_T) if narrow else (np.int64, MPI.INT64_T)
    out = []
    def taken(array):
        return lambda lo, hi, a, b, mask: array[a:b][mask[X.indices[a:b]]] if hi > lo \
            else array[:0]

    for part, which, dtype, kind in ((row_lengths, 0, np.int64, MPI.INT64_T),
                                     (taken(X.indices), 1, *index_type),
                                     (taken(X.data), 1, np.float64, MPI.DOUBLE)):
        send = np.empty(int(counts[which].sum()), dtype=dtype)
        at = 0
        for piece in pieces:
            values = part(*piece)
            send[at:at + len(values)] = values
            at += len(values)
        recv = np.empty(int(received[which].sum()), dtype=dtype)
        comm.Alltoallv([send, (counts[which], _displacements(counts[which])), kind],
                       [recv, (received[which], _displacements(received[which])), kind])
        del send
        out.append(recv)
    lengths, indices, values = out
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return sparse.csr_matrix((values, indices, indptr), shape=(len(lengths), X.shape[1]))


def _displacements(counts):
    displs = np.zeros(len(counts), dtype=np.int64)
    np.cumsum(counts[:-1], out=displs[1:])
    return displs


def _allgather_csr(comm, X):
    """The rows of every rank's CSR `X`, in rank order, on every rank."""
    lengths = np.diff(X.indptr).astype(np.int64)
    parts = []
    for array, kind in ((lengths, np.int64), (X.indices, np.int64), (X.data, np.float64)):
        array = np.ascontiguousarray(array, dtype=kind)
        sizes = np.empty(comm.size, dtype=np.int64)
        comm.Allgather(np.array([len(array)], dtype=np.int64), sizes)
        whole = np.empty(int(sizes.sum()), dtype=kind)
        comm.Allgatherv(array, [whole, sizes])
        parts.append(whole)
    lengths, indices, values = parts
    indptr = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    return sparse.csr_matrix((values, indices, indptr), shape=(len(lengths), X.shape[1]))


# -- opening a data set ------------------------------------------------------------


def open_dataset(comm, source, n_features=None, cut=False, limit=None, cache=None,
                 once=False):
    """Collective: (train, test or None) of `source`, as `data.read_dataset` reads
    it, but each rank keeping only what `ShardedData.partition` gives it.

    An embedded set (``digits``, ``mnist-demo``) is small and read whole
    (`data.RawData`). A ``.npz``, a folder made by `dnewton convert` and a LIBSVM
    file (or, with `cache`, its cache entry) become a `ShardedData`. With `once`, a
    LIBSVM file's parsed rows are dropped after the first `ShardedData.partition`
    (the command line's runs read each set once), which halves a rank's memory.
    """
    if str(source) in DATASETS:
        return read_dataset(source, n_features, cut, limit)
    path = Path(source)
    with agreed(comm):
        if path.is_dir() and (path / NPY_META).exists():
            return _open_npy_folder(comm, path, n_features, cut, limit), None
        if str(source).endswith(".npz"):
            return _open_npz(comm, path, n_features, cut, limit), None
    # Every rank reads the entry, or none does: a cache on node-local disks may
    # hold it on some nodes only.
    entry = _cache_entry(comm, cache, path) if cache is not None else None
    if entry is not None:
        with agreed(comm):
            return _open_csr(comm, entry, path, n_features, cut, limit), None
    if cache is not None and comm.size == 1:  # one rank reads all anyway: fill the cache
        raw = read_dataset(source, n_features, cut, limit, cache)[0]
        X = raw.X.tocsr()
        csr = _MappedCSR(X.data, X.indices, X.indptr, X.shape)
        return ShardedData(comm, raw.n_instances, raw.n_features, raw.y, raw.source,
                           nnz=X.nnz, cut_from=raw.cut_from, csr=csr), None
    X, first, n_instances, n_read, y = read_text_shard(comm, path, n_features, cut, limit)
    nnz = _summed(comm, np.array([float(X.nnz)]))[0]
    return ShardedData(comm, n_instances, X.shape[1], y, str(path), nnz=int(nnz),
                       cut_from=n_read if n_read > X.shape[1] else 0, parsed=X,
                       first=first, once=once), None


def _width(path, n_read, n_features, cut, limit, pad=False):
    """The feature count of a binary set of `n_read` columns for `n_features`
    (None: all), and the cut_from of `data.RawData`; InputError when it cannot be.
    With `pad` (a sparse set, as LIBSVM's), fewer columns are zeros added."""
    if n_features is None or n_read == n_features:
        return n_read, 0
    if n_read < n_features and pad:
        return n_features, 0
    if n_read < n_features:
        raise InputError(f"{path}: X has {n_read} features, the model {n_features}")
    if not cut:
        raise InputError.naming(f"{path}: {n_read} features, more than "
                                f"{limit or libsvm.default_limit(n_features)}")
    return n_features, n_read


def _labels(path, y, n_instances, n_features):
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n_instances:
        raise InputError(f"{path}: X is {(n_instances, n_features)} and y {y.shape}; "
                         "need (l, n) and (l,)")
    if y.dtype.kind not in "biuf":
        raise InputError(f"{path}: y ({y.dtype}) must be numeric")
    y = y.astype(np.float64)
    if not np.isfinite(y).all():
        raise InputError(f"{path}: y holds a value that is not finite")
    return y


def _open_npz(comm, path, n_features, cut, limit):
    """A .npz of X (l, n_0) and y (l,), X read by slices (`_npz_member`)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        if not {"X.npy", "y.npy"} <= names:
            raise InputError(f"{path}: a data .npz needs arrays X (instances x features) and y")
        X, y = _npz_member(path, "X"), _npz_member(path, "y")
        y = _take(y, slice(None))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a damaged archive: zip, zlib or format errors
        raise InputError(f"{path}: not a readable .npz file ({exc})") from None
    if X.ndim != 2:
        raise InputError(f"{path}: X is {X.shape} and y {y.shape}; need (l, n) and (l,)")
    if X.shape[0] == 0:
        raise InputError(f"{path}: the file holds no instances")
    y = _labels(path, y, X.shape[0], X.shape[1])
    width, cut_from = _width(path, X.shape[1], n_features, cut, limit)
    return ShardedData(comm, X.shape[0], width, y, str(path), cut_from=cut_from, dense=X)


def _open_npy_folder(comm, path, n_features, cut, limit):
    """A folder of `dnewton convert`: meta.json, y.npy, and the CSR of X as
    X.data.npy, X.indices.npy, X.indptr.npy, all mapped."""
    try:
        meta = json.loads((path / NPY_META).read_text(encoding="utf-8"))
        if meta.get("format") != NPY_FORMAT:
            raise InputError(f"{path}: {NPY_META} is not of a dnewton-npy folder")
        arrays = {name: np.load(path / f"X.{name}.npy", mmap_mode="r")
                  for name in ("data", "indices", "indptr")}
        y = np.load(path / "y.npy", mmap_mode="r")
        n_instances, n_read = int(meta["n_instances"]), int(meta["n_features"])
    except InputError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path}: not a readable dnewton-npy folder ({exc})") from None
    if len(arrays["indptr"]) != n_instances + 1 or n_instances == 0:
        raise InputError(f"{path}: X.indptr.npy does not hold {n_instances} + 1 offsets")
    y = _labels(path, np.array(y), n_instances, n_read)
    width, cut_from = _width(path, n_read, n_features, cut, limit, pad=True)
    csr = _MappedCSR(arrays["data"], arrays["indices"], arrays["indptr"],
                     (n_instances, max(width, n_read)))
    return ShardedData(comm, n_instances, width, y, str(meta.get("source", path)),
                       nnz=int(arrays["indptr"][-1]), cut_from=cut_from, csr=csr)


def _cache_entry(comm, folder, path):
    """Collective: the mapped arrays and shape of `path`'s entry in the cache `folder`
    when every rank can read it, else None (a miss). Rank 0 fingerprints the file
    (`io.cache.Key`); each rank checks (`io.cache.valid`) and maps its slice of the
    rows only, never the whole entry."""
    key = data_cache.Key(path) if comm.rank == 0 else None
    digest = comm.bcast(key.digest if key is not None and key.usable else None, root=0)
    found = None
    if digest is not None:
        found = _mapped_entry(data_cache.entry(folder, Path(path).name, digest), digest,
                              comm.rank, comm.size)
    return found if comm.allreduce(found is not None, op=MPI.LAND) else None


def _mapped_entry(where, digest, rank, n_ranks):
    """(arrays, shape) of the entry `where` if it holds `digest` and rank's slice of
    its rows is valid, else None; never raises."""
    try:
        with np.load(where, allow_pickle=False) as stored:
            if str(stored["digest"]) != digest:
                return None
            shape = np.array(stored["shape"])
        arrays = {name: _npz_member(where, name) for name in ("data", "indices", "indptr", "y")}
        if any(isinstance(a, _StreamedArray) for a in arrays.values()):
            return None
        rows, width = (int(v) for v in shape)
        data, indices, indptr, y = (arrays[n] for n in ("data", "indices", "indptr", "y"))
        if (len(indptr) != rows + 1 or len(y) != rows or int(indptr[0]) != 0
                or int(indptr[-1]) != len(data) or len(indices) != len(data)):
            return None
        lo, hi = rows * rank // n_ranks, rows * (rank + 1) // n_ranks
        a, b = int(indptr[lo]), int(indptr[hi])
        if hi > lo and not data_cache.valid(
                np.asarray(data[a:b]), np.asarray(indices[a:b]),
                np.asarray(indptr[lo:hi + 1]) - a, np.array([hi - lo, width]),
                np.asarray(y[lo:hi])):
            return None
        return arrays, (rows, width)
    except Exception:  # noqa: BLE001 -- no entry, or a damaged one: a miss
        return None


def _open_csr(comm, entry, path, n_features, cut, limit):
    arrays, (n_instances, n_read) = entry
    if n_features is not None and n_read > n_features and not cut:
        problem = libsvm.diagnose(path, n_features, limit) or (
            f"feature index {n_read} beyond {limit or libsvm.default_limit(n_features)}")
        raise InputError.naming(f"{path}: {problem}")
    width = n_read if n_features is None else n_features
    csr = _MappedCSR(arrays["data"], arrays["indices"], arrays["indptr"],
                     (n_instances, max(width, n_read)))
    return ShardedData(comm, n_instances, width, np.array(arrays["y"], dtype=np.float64),
                       str(path), nnz=int(arrays["indptr"][-1]),
                       cut_from=n_read if n_read > width else 0, csr=csr)


# -- dnewton convert -------------------------------------------------------------------


def convert(comm, source, target, n_features=None, cut=False):
    """Collective: write the LIBSVM file `source` as a dnewton-npy folder `target`
    (X as CSR in X.data.npy float64, X.indices.npy int32, X.indptr.npy int64; y.npy
    float64; meta.json), each rank parsing and writing its byte range of the text.
    Returns (n_instances, n_features, nnz)."""
    target = Path(target)
    X, first, n_instances, n_read, y = read_text_shard(comm, source, n_features, cut)
    sizes = np.empty(comm.size, dtype=np.int64)
    comm.Allgather(np.array([X.nnz], dtype=np.int64), sizes)
    start, nnz = int(sizes[:comm.rank].sum()), int(sizes.sum())
    with agreed(comm):
        if X.shape[1] >= 2**31:
            raise InputError(f"{source}: {X.shape[1]} features: int32 indices cannot hold them")
        if comm.rank == 0:
            try:
                target.mkdir(parents=True, exist_ok=True)
                for name, dtype, length in (("data", np.float64, nnz),
                                            ("indices", np.int32, nnz),
                                            ("indptr", np.int64, n_instances + 1)):
                    np.lib.format.open_memmap(target / f"X.{name}.npy", "w+", dtype,
                                              (length,)).flush()
                np.save(target / "y.npy", y)
            except OSError as exc:
                raise InputError(f"{target}: cannot be written ({exc})") from None
    comm.Barrier()
    with agreed(comm):
        try:
            for name, values, at in (("data", X.data, start), ("indices", X.indices, start),
                                     ("indptr", X.indptr[1:] + start, first + 1)):
                out = np.load(target / f"X.{name}.npy", mmap_mode="r+")
                out[at:at + len(values)] = values
                out.flush()
                del out
        except OSError as exc:
            raise InputError(f"{target}: cannot be written ({exc})") from None
    comm.Barrier()
    with agreed(comm):
        if comm.rank == 0:
            meta = {"format": NPY_FORMAT, "version": 1, "n_instances": n_instances,
                    "n_features": int(X.shape[1]), "nnz": nnz, "source": str(source)}
            temporary = target / f".{NPY_META}.tmp"
            temporary.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
            os.replace(temporary, target / NPY_META)  # written last: a folder is whole
    return n_instances, int(X.shape[1]), nnz


def stored_entries(data):
    """Non-zeros of a training set's sparse features, or None when they are dense
    (a `data.RawData` or a `ShardedData`)."""
    if isinstance(data, ShardedData):
        return data.nnz
    return data.X.nnz if sparse.issparse(data.X) else None


def share_of(data, groups, layout, classes, prep, fit=False, dtype=np.float64, share=None):
    """This rank's `PartitionedData` of `data`: a `ShardedData` reads its share
    (collective over ``groups.job``); a `data.RawData` on every rank is cut."""
    from .data import partition

    if isinstance(data, ShardedData):
        return data.partition(groups, layout, classes, prep, fit, dtype, share)
    with agreed(groups.job):  # labels are checked on output ranks only
        return partition(data, layout, groups.rank, classes, prep, fit, dtype, share)
