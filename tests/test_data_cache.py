"""--data-cache: a binary copy of a parsed LIBSVM file, never stale, skipped when unwritable."""

import os

import numpy as np
import pytest

from dnewton.io import cache, libsvm

TEXT = "".join(f"{i % 3} 1:{i / 7:.4f} {2 + i % 4}:{i * 0.5:g} 9:1\n" for i in range(30))


def test_a_cached_read_gives_the_parsed_data(tmp_path):
    path, folder = tmp_path / "d.svm", tmp_path / "cache"
    path.write_text(TEXT)
    X, y, n = libsvm.load(path, cache=folder)
    assert len(list(folder.glob("*.npz"))) == 1
    parsed = cache.load(folder, path)
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
    assert cache.load(folder, path) is None
    X, _, _ = libsvm.load(path, cache=folder)
    assert (X[:, 8].toarray() == 2).all()
    np.testing.assert_array_equal(cache.load(folder, path)[0].toarray(), X.toarray())


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
    assert cache.load(folder, path) is None
    np.testing.assert_array_equal(libsvm.load(path, cache=folder)[0].toarray(), X.toarray())
    assert not list(folder.glob("*.tmp")) and not list(folder.glob(".*.tmp"))
