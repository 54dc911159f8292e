"""--data-cache: a binary copy of a parsed LIBSVM file, never stale, checked on load,
skipped when unwritable, and never asked of a pipe."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from dnewton.io import cache, libsvm

TEXT = "".join(f"{i % 3} 1:{i / 7:.4f} {2 + i % 4}:{i * 0.5:g} 9:1\n" for i in range(30))


def test_a_cached_read_gives_the_parsed_data(tmp_path):
    path, folder = tmp_path / "d.svm", tmp_path / "cache"
    path.write_text(TEXT)
    X, y, n = libsvm.load(path, cache=folder)
    assert len(list(folder.glob("*.npz"))) == 1
    parsed = cache.load(folder, cache.Key(path))
    assert parsed is not None
    X2, y2, n2 = libsvm.load(path, 12, cache=folder)  # from the cache, padded
    assert n2 == n == 9 and X2.shape == (30, 12)
    np.testing.assert_array_equal(X2.toarray()[:, :9], X.toarray())
    np.testing.assert_array_equal(y2, y)
    for a, b in zip((parsed[0].data, parsed[0].indices, parsed[0].indptr, parsed[1]),
                    (X.data, X.indices, X.indptr, y)):
        assert a.dtype.kind == b.dtype.kind  # scipy may narrow the index arrays
        np.testing.assert_array_equal(a, b)
    # a width refusal from the cache still names the line
    with pytest.raises(Exception, match="line 1: feature index 9 beyond the model's 5"):
        libsvm.load(path, 5, cache=folder)


def test_a_modified_file_misses_the_cache(tmp_path):
    path, folder = tmp_path / "d.svm", tmp_path / "cache"
    path.write_text(TEXT)
    libsvm.load(path, cache=folder)
    path.write_text(TEXT.replace("9:1", "9:2"))  # the same size
    info = os.stat(path)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns + 1))  # whatever the clock
    assert cache.load(folder, cache.Key(path)) is None
    X, _, _ = libsvm.load(path, cache=folder)
    assert (X[:, 8].toarray() == 2).all()
    np.testing.assert_array_equal(cache.load(folder, cache.Key(path))[0].toarray(), X.toarray())


def test_an_unwritable_or_damaged_cache_is_skipped(tmp_path):
    path, folder = tmp_path / "d.svm", tmp_path / "ro"
    path.write_text(TEXT)
    folder.mkdir()
    folder.chmod(0o500)
    try:
        X, _, _ = libsvm.load(path, cache=folder)
        if not os.access(folder, os.W_OK):  # root writes anywhere
            assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)
    libsvm.load(path, cache=folder)
    for entry in folder.glob("*.npz"):
        entry.write_bytes(b"damaged")
    assert cache.load(folder, cache.Key(path)) is None
    np.testing.assert_array_equal(libsvm.load(path, cache=folder)[0].toarray(), X.toarray())
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))


def test_an_edit_with_the_size_and_mtime_put_back_misses_the_cache(tmp_path):
    """The edit `touch -r` hides from a cache keyed by size and mtime."""
    path, folder, old = tmp_path / "d.svm", tmp_path / "cache", tmp_path / "old"
    path.write_text(TEXT)
    shutil.copy2(path, old)
    libsvm.load(path, cache=folder)
    path.write_text(TEXT.replace("0 1:", "1 1:", 1))  # a label changed, same size
    shutil.copystat(old, path)  # the modification time put back
    assert os.stat(path).st_mtime_ns == os.stat(old).st_mtime_ns
    assert cache.load(folder, cache.Key(path)) is None
    _, y, _ = libsvm.load(path, cache=folder)
    assert y[0] == 1


def _entry_arrays(folder):
    (where,) = folder.glob("*.npz")
    with np.load(where) as a:
        return where, {name: a[name] for name in a.files}


BREAKS = {
    "column index beyond the shape": lambda a: a.update(shape=np.array([30, 5])),
    "negative column index": lambda a: a["indices"].__setitem__(0, -1),
    "indices not increasing in a row": lambda a: a.update(indices=a["indices"][::-1].copy()),
    "indptr not monotone": lambda a: a["indptr"].__setitem__(3, 10**6),
    "indptr of another length": lambda a: a.update(indptr=a["indptr"][:-1]),
    "a value not finite": lambda a: a["data"].__setitem__(2, np.nan),
    "a label not finite": lambda a: a["y"].__setitem__(0, np.inf),
    "labels of another length": lambda a: a.update(y=a["y"][:-1]),
    "no rows": lambda a: a.update(shape=np.array([0, 9]), indptr=np.array([0]),
                                  y=np.array([]), data=np.array([]),
                                  indices=np.array([], dtype=np.int32)),
    "text for numbers": lambda a: a.update(data=a["data"].astype(str)),
    "shape of three numbers": lambda a: a.update(shape=np.array([30, 9, 1])),
}


@pytest.mark.parametrize("how", list(BREAKS))
def test_an_entry_that_no_parse_could_give_is_not_served(tmp_path, how):
    path, folder = tmp_path / "d.svm", tmp_path / "cache"
    path.write_text(TEXT)
    X, y, _ = libsvm.load(path, cache=folder)
    where, arrays = _entry_arrays(folder)
    BREAKS[how](arrays)
    np.savez(where, **arrays)
    assert cache.load(folder, cache.Key(path)) is None
    X2, y2, _ = libsvm.load(path, cache=folder)  # parsed again, and the entry mended
    np.testing.assert_array_equal(X2.toarray(), X.toarray())
    np.testing.assert_array_equal(y2, y)
    assert cache.load(folder, cache.Key(path)) is not None


PIPE = """
import sys
from dnewton.io import libsvm
X, y, n = libsvm.load(sys.argv[1], cache=sys.argv[2] if len(sys.argv) > 2 else None)
print(X.shape[0], n)
"""


@pytest.mark.skipif(not os.path.isdir("/dev/fd"), reason="needs /dev/fd")
@pytest.mark.parametrize("with_cache", [False, True])
def test_a_pipe_is_read_and_never_cached(tmp_path, with_cache):
    """``dnewton train <(cat f.svm)``: the path is /dev/fd/N, a pipe."""
    folder = tmp_path / "cache"
    extra = f" {folder}" if with_cache else ""
    proc = subprocess.run(["bash", "-c", f"{sys.executable} -c \"$0\" <(printf '%s' \"$1\")"
                           f"{extra}", PIPE, TEXT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["30", "9"]
    assert not list(folder.glob("*")) if folder.exists() else True
